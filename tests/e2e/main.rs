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

/// A Python that can `import module`: the one `var` names, else `default`. `None` (with a note on
/// stderr) when `skip_var=1`; otherwise a missing or unfit Python fails the test, saying `fix`.
#[allow(clippy::print_stderr)]
pub fn python_with(
    module: &str,
    var: &str,
    default: Option<std::path::PathBuf>,
    skip_var: &str,
    fix: &str,
) -> Option<std::path::PathBuf> {
    if std::env::var(skip_var).as_deref() == Ok("1") {
        eprintln!("skipping a test that needs Python's {module}: {skip_var}=1");
        return None;
    }
    let python = std::env::var_os(var)
        .map(std::path::PathBuf::from)
        .or(default)
        .unwrap_or_else(|| panic!("{var} is not set: {fix}, or set {skip_var}=1"));
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} ({var}) cannot import {module}: {fix}, or set {skip_var}=1",
        python.display()
    );
    Some(python)
}
