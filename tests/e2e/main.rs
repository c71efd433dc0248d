//! End-to-end tests of the `tsr` binary (workspace-level, built as a test of tsr-cli).

mod doctor;
mod generate;
mod iterate;
mod judge;
mod logprobs;

use std::process::Command;

/// The `tsr` binary under test.
pub fn tsr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tsr"))
}
