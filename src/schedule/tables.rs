//! The seed's schedule tables (linear β 1e-4 → 0.02, T = 1000), generated at build time by
//! build.rs from `math.rs` and stored in static memory. Indexed by training timestep t.
include!(concat!(env!("OUT_DIR"), "/seed_tables.rs"));
