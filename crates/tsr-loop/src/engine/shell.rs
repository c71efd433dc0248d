//! Running the serve and trainer commands through `sh` with their output appended to a log, and
//! the end of that log for error messages.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use super::err;
use crate::error::BackendError;

/// `sh -c "exec COMMAND"` with stdout and stderr appended to `log` (after a line naming the
/// command).
pub(super) fn shell(command: &str, log: &Path) -> Result<Command, BackendError> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| err(format!("{}: {e}", log.display())))
    };
    writeln!(open()?, "--- tsr: {command}").map_err(|e| err(format!("{}: {e}", log.display())))?;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("exec {command}"))
        .stdout(open()?)
        .stderr(open()?);
    Ok(c)
}

pub(super) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
