//! The GGUF files a server loads: kept in `engine/` under a name that includes a fingerprint of
//! the model folder, each with a `.sha256` file written after it and checked before reuse.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{err, EngineBackend};
use crate::backend::{Backend, ModelRef};
use crate::error::BackendError;

impl<B: Backend> EngineBackend<B> {
    /// The model's GGUF file and its SHA-256, written when missing or not matching its digest.
    pub(super) fn gguf_for(
        &mut self,
        m: &ModelRef,
        ty: &str,
    ) -> Result<(PathBuf, String), BackendError> {
        let safe: String = m
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let name = format!("{safe}-{:016x}.{ty}.gguf", fingerprint(&m.location));
        // Absolute, so that a serve command that changes directory still finds it.
        let path = std::path::absolute(self.dir.join(name))
            .map_err(|e| err(format!("{}: {e}", self.dir.display())))?;
        let sum_path = path.with_extension("gguf.sha256");
        if path.is_file() {
            let recorded = std::fs::read_to_string(&sum_path).unwrap_or_default();
            let actual = sha256_file(&path)?;
            if recorded.trim() == actual {
                return Ok((path, actual));
            }
            tracing::warn!(path = %path.display(), "GGUF file does not match its recorded digest; writing it again");
        }
        tracing::info!(model = %m.name, path = %path.display(), "writing GGUF for the server");
        self.files.write_gguf(m, ty, &path)?;
        let sum = sha256_file(&path)?;
        crate::fsio::write_atomic(&sum_path, |w| writeln!(w, "{sum}"))
            .map_err(|e| err(e.to_string()))?;
        Ok((path, sum))
    }
}

/// A fingerprint of a model folder (its `config.json`, and the names, sizes and modification
/// times of its other files), or of the spec string when it is not a folder.
fn fingerprint(location: &str) -> u64 {
    let mut h = DefaultHasher::new();
    location.hash(&mut h);
    let dir = Path::new(location);
    if dir.is_dir() {
        std::fs::read(dir.join("config.json")).ok().hash(&mut h);
        let mut entries: Vec<(String, u64, Option<Duration>)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let md = e.metadata().ok()?;
                let mtime = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    md.len(),
                    mtime,
                ))
            })
            .collect();
        entries.sort();
        entries.hash(&mut h);
    }
    h.finish()
}

fn sha256_file(path: &Path) -> Result<String, BackendError> {
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_follow_the_folder_contents() {
        let d = tempfile::tempdir().unwrap();
        let loc = d.path().to_str().unwrap().to_string();
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        let a = fingerprint(&loc);
        assert_eq!(a, fingerprint(&loc));
        std::fs::write(d.path().join("model.safetensors"), "weights").unwrap();
        assert_ne!(a, fingerprint(&loc));
        assert_ne!(fingerprint("smollm2"), fingerprint("qwen"));
    }
}
