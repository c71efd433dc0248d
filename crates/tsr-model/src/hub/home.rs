//! tsr's cache and state directory.

use std::path::PathBuf;

/// tsr's cache and state directory: `TSR_HOME`, else `~/.cache/tsr`.
pub fn tsr_home() -> PathBuf {
    if let Some(h) = std::env::var_os("TSR_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("tsr")
}
