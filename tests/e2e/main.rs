//! End-to-end tests of the `tsr` binary (workspace-level, built as a test of tsr-cli).

mod doctor;
mod eft;
mod engine;
mod eval;
mod faults;
mod generate;
mod hardening;
mod iterate;
mod judge;
mod logprobs;
mod sft;
mod trainer;
mod training;

use std::process::Command;

/// The `tsr` binary under test.
pub fn tsr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tsr"))
}

/// Fails the test with the command's stderr when it did not succeed.
#[track_caller]
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
