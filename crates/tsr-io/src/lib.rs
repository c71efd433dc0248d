//! `tsr-io`: the one implementation of crash-safe writes that every tsr crate uses.
//!
//! A file is written to a temporary beside its destination, flushed, fsynced and renamed over the
//! destination, and then the folder is fsynced ([`AtomicFile`], [`write`], [`write_with`]). A
//! folder (a model, a checkpoint) is written into a staging folder beside it and renamed into
//! place ([`replace_dir`]). A reader therefore sees either the old version or the complete new
//! one; a failed or abandoned write removes its temporary and leaves the destination untouched.
//!
//! Temporaries are named `.NAME.tsr-tmp-PID` (and `.NAME.tsr-old-PID` for a folder being
//! replaced), so two processes writing the same destination do not share one, and
//! [`is_temporary`] recognises what a crash left behind.
//!
//! Errors are plain [`std::io::Error`]s; callers attach the path in their own error type.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

const TMP_TAG: &str = ".tsr-tmp-";
const OLD_TAG: &str = ".tsr-old-";
/// The suffix of the loop's temporaries before they carried a process id.
const LEGACY_TMP_SUFFIX: &str = ".tsr-tmp";

/// The folder holding `path`: its parent, or `.` for a bare relative name such as `run` (whose
/// parent is the empty path, which cannot be opened).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.NAME{tag}PID` beside `path`.
fn sibling(path: &Path, tag: &str) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!("{tag}{}", std::process::id()));
    Ok(parent_dir(path).join(tmp))
}

/// The temporary a write of `path` by this process uses (`.NAME.tsr-tmp-PID`).
pub fn temporary_for(path: &Path) -> io::Result<PathBuf> {
    sibling(path, TMP_TAG)
}

/// Whether a folder entry named `name` is a temporary of this crate (a write that a crash
/// interrupted): `.NAME.tsr-tmp-PID`, `.NAME.tsr-old-PID`, or the older `NAME.tsr-tmp`.
pub fn is_temporary(name: &str) -> bool {
    if name.ends_with(LEGACY_TMP_SUFFIX) {
        return true;
    }
    name.starts_with('.')
        && [TMP_TAG, OLD_TAG].iter().any(|tag| {
            name.rsplit_once(tag)
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Fsyncs a folder, which persists the renames and creations inside it (POSIX). Filesystems
/// that refuse to fsync folders are tolerated: the rename itself is still atomic.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all().or_else(|e| {
        if e.kind() == io::ErrorKind::InvalidInput {
            Ok(())
        } else {
            Err(e)
        }
    })
}

/// Creates a folder (and its parents) and fsyncs its parent so the entry survives a crash.
pub fn create_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)?;
    sync_dir(parent_dir(path))
}

/// Renames `from` to `to` (atomic within one filesystem) and fsyncs `to`'s folder.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent_dir(to))
}

/// A file being written atomically: write to it (it is buffered), then [`AtomicFile::commit`].
/// Dropped without a commit (an error, a failed check, a panic), it removes its temporary and
/// the destination keeps its old contents.
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `dest` (whose folder must exist).
    pub fn create(dest: &Path) -> io::Result<Self> {
        let tmp = temporary_for(dest)?;
        let file = File::create(&tmp)?;
        Ok(Self {
            dest: dest.to_path_buf(),
            tmp,
            writer: Some(BufWriter::new(file)),
        })
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flushes and fsyncs the temporary, renames it over the destination and fsyncs the folder.
    pub fn commit(mut self) -> io::Result<()> {
        let writer = self
            .writer
            .take()
            .expect("an uncommitted file has a writer");
        let result = (|| {
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            rename(&self.tmp, &self.dest)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer
            .as_mut()
            .expect("an uncommitted file has a writer")
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer
            .as_mut()
            .expect("an uncommitted file has a writer")
            .flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `dest` atomically with whatever `fill` writes; `fill`'s error aborts the write.
pub fn write_with<F>(dest: &Path, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let mut file = AtomicFile::create(dest)?;
    fill(&mut file)?;
    file.commit()
}

/// Writes `bytes` to `dest` atomically.
pub fn write(dest: &Path, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    write_with(dest, |w| w.write_all(bytes.as_ref()))
}

/// Why [`replace_dir`] failed: the caller's `fill` failed, or the file system did.
#[derive(Debug)]
pub enum ReplaceError<E> {
    /// `fill`'s own error (the staging folder was removed).
    Fill(E),
    /// Creating, syncing or renaming the folders failed.
    Io(io::Error),
}

impl<E> ReplaceError<E> {
    /// `fill`'s error as it was, or the I/O error turned into the caller's error type by `io`.
    pub fn into_error(self, io: impl FnOnce(io::Error) -> E) -> E {
        match self {
            ReplaceError::Fill(e) => e,
            ReplaceError::Io(e) => io(e),
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for ReplaceError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplaceError::Fill(e) => e.fmt(f),
            ReplaceError::Io(e) => e.fmt(f),
        }
    }
}

/// Writes the folder `dir` atomically: `fill` writes its files into a fresh staging folder
/// beside it (`.NAME.tsr-tmp-PID`), which then replaces `dir` (an existing `dir` is moved aside
/// first and put back if the rename fails). On an error from `fill` the staging folder is
/// removed and `dir` is untouched. `dir`'s parent is created if needed.
pub fn replace_dir<T, E>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, ReplaceError<E>> {
    let parent = parent_dir(dir);
    let tmp = sibling(dir, TMP_TAG).map_err(ReplaceError::Io)?;
    (|| {
        fs::create_dir_all(parent)?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir(&tmp)
    })()
    .map_err(ReplaceError::Io)?;
    let value = match fill(&tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(ReplaceError::Fill(e));
        }
    };
    let swapped = (|| -> io::Result<()> {
        sync_files(&tmp)?;
        if dir.exists() {
            let old = sibling(dir, OLD_TAG)?;
            fs::rename(dir, &old)?;
            if let Err(e) = fs::rename(&tmp, dir) {
                let _ = fs::rename(&old, dir);
                return Err(e);
            }
            fs::remove_dir_all(&old)?;
        } else {
            fs::rename(&tmp, dir)?;
        }
        sync_dir(parent)
    })();
    if let Err(e) = swapped {
        let _ = fs::remove_dir_all(&tmp);
        return Err(ReplaceError::Io(e));
    }
    Ok(value)
}

/// Fsyncs the plain files directly inside `dir` and the folder itself.
fn sync_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_folder_of_a_bare_name_is_the_current_one() {
        assert_eq!(parent_dir(Path::new("run")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/run")), Path::new("a"));
        assert_eq!(parent_dir(Path::new("/")), Path::new("."));
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write(&p, b"old").unwrap();
        write(&p, "new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write(&p, b"old").unwrap();
        let err = write_with(&p, |w| {
            w.write_all(b"{\"half\":")?;
            Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn an_abandoned_file_removes_its_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        let mut f = AtomicFile::create(&p).unwrap();
        f.write_all(&[7u8; 100_000]).unwrap();
        assert_eq!(
            names(dir.path()).len(),
            1,
            "the temporary exists while writing"
        );
        assert!(is_temporary(&names(dir.path())[0]));
        drop(f);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_folder_is_replaced_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        replace_dir(&model, |tmp| -> io::Result<()> {
            fs::write(tmp.join("a"), "1")?;
            fs::write(tmp.join("b"), "1")
        })
        .unwrap();
        let err = replace_dir(&model, |tmp| -> io::Result<()> {
            fs::write(tmp.join("a"), "2")?;
            Err(io::Error::other("failed half way"))
        })
        .unwrap_err();
        assert!(matches!(err, ReplaceError::Fill(_)));
        assert_eq!(err.to_string(), "failed half way");
        assert_eq!(fs::read_to_string(model.join("a")).unwrap(), "1");
        assert_eq!(names(dir.path()), ["model"]);
        let n = replace_dir(&model, |tmp| -> io::Result<usize> {
            fs::write(tmp.join("c"), "3")?;
            Ok(1)
        })
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(names(&model), ["c"]);
        assert_eq!(names(dir.path()), ["model"]);
    }

    #[test]
    fn temporaries_are_recognised() {
        let t = temporary_for(Path::new("/x/state.json")).unwrap();
        let name = t.file_name().unwrap().to_str().unwrap();
        assert!(is_temporary(name), "{name}");
        assert!(is_temporary(".model.tsr-old-12"));
        assert!(is_temporary("state.json.tsr-tmp"));
        for keep in [
            "state.json",
            ".model.tsr-tmp-",
            ".model.tsr-tmp-x1",
            "model.tsr-old-3",
        ] {
            assert!(!is_temporary(keep), "{keep}");
        }
    }
}
