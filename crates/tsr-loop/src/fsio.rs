//! The run folder's file access: crash-safe writes (through `tsr_io`, the one implementation all
//! crates share: a temporary beside the target, fsynced and renamed over it, then the folder
//! fsynced, so a reader sees the old file or the complete new one; a failed write leaves the
//! target untouched) with [`LoopError`]s that name the path, and JSON / JSON-lines records.

use crate::error::{io, LoopError, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

pub use tsr_io::parent_dir;

/// Write `path` atomically with whatever `fill` writes (through [`tsr_io::write_with`]).
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    tsr_io::write_with(path, fill).map_err(io(path))
}

/// Write bytes atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// Write one value as pretty JSON (with a final newline) atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| LoopError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_bytes(path, &bytes)
}

/// Write records as JSON lines atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut bytes = Vec::new();
    for r in records {
        serde_json::to_writer(&mut bytes, r).map_err(|e| LoopError::Record {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
    }
    write_bytes(path, &bytes)
}

/// Read one JSON value.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| LoopError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Read JSON lines (blank lines are skipped).
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file = File::open(path).map_err(io(path))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| LoopError::Record {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", n + 1),
        })?);
    }
    Ok(out)
}

/// Create a folder (and parents) and fsync its parent so the entry survives a crash.
pub fn create_dir(path: &Path) -> Result<()> {
    tsr_io::create_dir(path).map_err(io(path))
}

/// Rename atomically and fsync the folder.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    tsr_io::rename(from, to).map_err(io(to))
}

/// Remove a file or a folder tree if it exists.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io(path)),
        Ok(_) => fs::remove_file(path).map_err(io(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LoopError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Remove the temporary files a crash may have left in `dir` (not recursive).
pub fn remove_stale_tmp(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(LoopError::Io {
                path: dir.to_path_buf(),
                source: e,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        if tsr_io::is_temporary(&entry.file_name().to_string_lossy()) {
            remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        let err = write_atomic(&target, |w| {
            w.write_all(b"{\"half\":")?;
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device",
            ))
        })
        .unwrap_err();
        assert!(err.to_string().contains("a.json"), "{err}");
        assert!(!target.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.txt");
        write_bytes(&target, b"old").unwrap();
        let _ = write_atomic(&target, |_| Err(std::io::Error::other("boom")));
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn full_device_is_an_error_not_a_file() {
        // /dev/full answers every write with ENOSPC; a folder we cannot rename into fails too.
        let p = Path::new("/dev/full");
        if p.exists() {
            let err = write_bytes(Path::new("/dev/full/x"), b"data").unwrap_err();
            assert!(err.to_string().contains("/dev/full"), "{err}");
        }
    }

    #[test]
    fn jsonl_round_trip_and_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        write_jsonl(&p, &[1u32, 2, 3]).unwrap();
        assert_eq!(read_jsonl::<u32>(&p).unwrap(), vec![1, 2, 3]);
        write_bytes(&p, b"1\n\nx\n").unwrap();
        let err = read_jsonl::<u32>(&p).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
    }
}
