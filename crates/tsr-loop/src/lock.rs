//! The exclusive lock on a run folder (`RUN/.lock`).
//!
//! Whatever changes a run folder ([`crate::Run::create`], [`crate::Run::execute`],
//! [`crate::Run::set_iterations`]) holds an OS file lock on `RUN/.lock` while it works, so two
//! processes never resume one run at once (they would delete each other's half-written model
//! folders). The lock is `flock(2)`-style (std's [`File::try_lock`]): the operating system
//! releases it when the process ends, however it ends (`kill -9` included), so a crash never
//! leaves a run locked. The holder writes its process id into the file; a second process is
//! refused at once with [`LoopError::Locked`] naming that pid.
//!
//! The file itself stays in the folder (removing it would let two processes lock two different
//! files of the same name); its content is only informative.

use crate::error::{io, LoopError, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// A held lock on a run folder; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Lock the run folder `dir` (which must exist), or fail with [`LoopError::Locked`] at once
    /// when another process holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match try_lock(&mut file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LoopError::Locked {
                    path: dir.to_path_buf(),
                    pid: holder_pid(&mut file),
                });
            }
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(
                    path = %path.display(),
                    "this filesystem does not support file locks: nothing stops a second process \
                     from working on this run folder at the same time"
                );
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        let pid = std::process::id();
        (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{pid}")?;
            file.sync_all()
        })()
        .map_err(io(&path))?;
        tracing::debug!(path = %path.display(), pid, "locked run folder");
        Ok(RunLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock. A lock whose file is empty has just been released (or just taken): a child
/// process that another thread is starting holds a copy of every open file until it has
/// started its program, and with it the lock its parent has already let go. Such a lock is
/// tried again for up to a second before it counts as held.
fn try_lock(file: &mut File) -> std::result::Result<(), TryLockError> {
    for _ in 0..20 {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if file_is_empty(file) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
    file.try_lock()
}

fn file_is_empty(file: &File) -> bool {
    file.metadata().is_ok_and(|m| m.len() == 0)
}

/// The pid the holder wrote into the lock file. A holder that has just taken the lock may not
/// have written it yet, so an empty file is read again for up to half a second; `None` when it
/// stays unknown (the holder is slow, or has just released the lock).
fn holder_pid(file: &mut File) -> Option<u32> {
    for _ in 0..50 {
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Forget the pid (a later reader must not name a finished process); closing the file
        // releases the lock.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holders_pid_and_freed_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(t.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(held.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        // A second open file description conflicts even inside one process.
        match RunLock::acquire(t.path()) {
            Err(LoopError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected the lock error, got {other:?}"),
        }
        drop(held);
        assert_eq!(
            std::fs::read_to_string(t.path().join(LOCK_FILE)).unwrap(),
            ""
        );
        let again = RunLock::acquire(t.path()).unwrap();
        drop(again);
    }

    #[test]
    fn a_holder_that_writes_its_pid_late_is_still_named() {
        // The holder has the lock but has not written its pid yet (CI hit this window once).
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join(LOCK_FILE);
        let holder = File::create(&path).unwrap();
        holder.try_lock().unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                std::fs::write(path, "4242\n").unwrap();
            })
        };
        match RunLock::acquire(t.path()) {
            Err(LoopError::Locked { pid, .. }) => assert_eq!(pid, Some(4242)),
            other => panic!("expected the lock error, got {other:?}"),
        }
        writer.join().unwrap();
        drop(holder);
    }
}
