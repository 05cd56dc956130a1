//! What several operators share: f32 views of f32 or f16 data, and work split between the
//! threads of the current team.
use tract_onnx::prelude::*;

use edge_sample_kernels::{split_units as split_team_units, team};

/// Runs `f` on `x` as f32 and returns the result in `x`'s type: f32 data in place when this
/// node holds the only reference to it, f16 data through an f32 copy.
pub fn in_f32(x: TValue, f: impl FnOnce(&mut [f32])) -> TractResult<TVec<TValue>> {
    let dt = x.datum_type();
    let mut y = match dt {
        DatumType::F32 => x.into_tensor(),
        DatumType::F16 => x.cast_to::<f32>()?.into_owned(),
        dt => anyhow::bail!("normalisation of {dt:?} data"),
    };
    f(y.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
    if dt == DatumType::F16 {
        y = y.cast_to::<f16>()?.into_owned();
    }
    Ok(tvec![y.into_tvalue()])
}

/// Row-wise work on tensors of at least this many floats is split between the current
/// team's threads (smaller ones cost more to hand over than they take).
pub const SPLIT_ROWS_MIN: usize = 1 << 15;

/// `f(rows, first row)` over `data`'s rows of `inner` floats: all at once, or an even share of
/// whole rows per thread of the current team. Same results either way (rows are independent).
pub fn split_rows(data: &mut [f32], inner: usize, f: &(dyn Fn(&mut [f32], usize) + Sync)) {
    split_units(data, inner, SPLIT_ROWS_MIN, f)
}

/// `f(part, first unit)` over `data`, split between the current team's threads when it holds
/// at least `min` floats (see [`edge_sample_kernels::split_units`]).
pub fn split_units(
    data: &mut [f32],
    unit: usize,
    min: usize,
    f: &(dyn Fn(&mut [f32], usize) + Sync),
) {
    split_team_units(team::current().as_deref(), data, unit, min, f)
}
