//! How a test starts a program: directly, or through qemu when the tests themselves run
//! emulated. Included by `testing` here and, by path, by the edge-sample crate's
//! `tests/common`, so both crates' tests follow one rule.

/// The runner `.cargo/config.toml` gives aarch64 test binaries on an x86-64 host.
pub const QEMU_RUNNER: &str = "qemu-aarch64-static -L /usr/aarch64-linux-gnu";

/// A command starting the program `exe` from a test: through `EDGE_SAMPLE_RUNNER` when it is set
/// (empty: directly), else, for an aarch64 build tested under qemu (`EDGE_SAMPLE_EMULATED`),
/// through [`QEMU_RUNNER`] — a process inside qemu-user cannot start another aarch64 program
/// itself where the host has no binfmt_misc entry for it.
pub fn command(exe: &std::path::Path) -> std::process::Command {
    let runner = match std::env::var("EDGE_SAMPLE_RUNNER") {
        Ok(r) => r,
        Err(_)
            if cfg!(target_arch = "aarch64")
                && std::env::var_os("EDGE_SAMPLE_EMULATED").is_some() =>
        {
            QEMU_RUNNER.to_string()
        }
        Err(_) => String::new(),
    };
    let mut parts = runner.split_whitespace();
    match parts.next() {
        Some(program) => {
            let mut c = std::process::Command::new(program);
            c.args(parts).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    }
}
