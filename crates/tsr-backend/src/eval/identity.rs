//! What an evaluation records about its inputs: a model's identity (where it was loaded from
//! and a hash of its content), the hash of a file, the hash of a prompt set.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Sha-256 of a file, streamed.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A model's identity: where it was loaded from and a hash of its content (a file's sha-256;
/// for a folder, the sha-256 of the sorted `name sha256` lines of its top-level files).
pub fn model_identity(spec: &str, source: &Path) -> Result<Value> {
    let hash = if source.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(source)
            .with_context(|| format!("listing {}", source.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        let mut lines = String::new();
        for f in &files {
            let name = f
                .file_name()
                .expect("listed files have names")
                .to_string_lossy();
            lines += &format!("{name} {}\n", file_sha256(f)?);
        }
        hex(&Sha256::digest(lines.as_bytes()))
    } else {
        file_sha256(source)?
    };
    Ok(json!({"spec": spec, "path": source, "sha256": hash}))
}

/// Sha-256 of rows as JSON lines (a prompt set: ids and texts, in order).
pub fn jsonl_sha256<T: Serialize>(rows: &[T]) -> String {
    let mut h = Sha256::new();
    for r in rows {
        h.update(serde_json::to_vec(r).expect("rows serialize"));
        h.update(b"\n");
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsr_loop::PromptRecord;

    #[test]
    fn folder_identity_hashes_names_and_contents() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.bin"), b"weights").unwrap();
        std::fs::write(t.path().join("config.json"), b"{}").unwrap();
        let one = model_identity("m", t.path()).unwrap();
        std::fs::write(t.path().join(".lock"), b"ignored").unwrap();
        assert_eq!(
            model_identity("m", t.path()).unwrap()["sha256"],
            one["sha256"]
        );
        std::fs::write(t.path().join("a.bin"), b"weightz").unwrap();
        assert_ne!(
            model_identity("m", t.path()).unwrap()["sha256"],
            one["sha256"]
        );
    }

    #[test]
    fn prompt_hash_depends_on_ids_and_texts() {
        let p = |id: &str, t: &str| PromptRecord {
            id: id.into(),
            prompt: t.into(),
        };
        let a = jsonl_sha256(&[p("1", "x"), p("2", "y")]);
        assert_ne!(a, jsonl_sha256(&[p("2", "y"), p("1", "x")]));
        assert_ne!(a, jsonl_sha256(&[p("1", "x"), p("2", "z")]));
        assert_eq!(a, jsonl_sha256(&[p("1", "x"), p("2", "y")]));
        // The bytes hashed are `{"id":..,"prompt":..}` lines, as `tsr eval` has recorded them.
        let mut h = Sha256::new();
        h.update(b"{\"id\":\"1\",\"prompt\":\"x\"}\n");
        assert_eq!(jsonl_sha256(&[p("1", "x")]), hex(&h.finalize()));
    }
}
