//! Sizes and sha256 of fetched files, and the verified write of a stream into place.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::ModelError;

/// The expected size and sha256 (lowercase hex) of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    pub sha256: &'static str,
    pub size: u64,
}

/// Streams `reader` into a temporary file beside `dest`, hashing as it goes; when `pinned` is
/// given and size or sha256 differ, the temporary file is removed and a
/// [`ModelError::Checksum`] returned, else the file is synced and renamed over `dest`
/// (`tsr_io::AtomicFile`). Returns the size and sha256 written.
pub fn persist_verified(
    reader: &mut dyn Read,
    dest: &Path,
    pinned: Option<Pinned>,
) -> Result<(u64, String), ModelError> {
    let dir = tsr_io::parent_dir(dest);
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    // Dropped without a commit (a read error, a checksum mismatch), it removes its temporary.
    let mut file = tsr_io::AtomicFile::create(dest).map_err(|e| ModelError::io(dest, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| ModelError::io(dest, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| ModelError::io(dest, e))?;
        size += n as u64;
    }
    let found = hex(&hasher.finalize());
    if let Some(p) = pinned {
        if size != p.size || found != p.sha256 {
            return Err(ModelError::Checksum {
                path: dest.to_path_buf(),
                expected: format!("{} ({} bytes)", p.sha256, p.size),
                found: format!("{found} ({size} bytes)"),
            });
        }
    }
    file.commit().map_err(|e| ModelError::io(dest, e))?;
    Ok((size, found))
}

/// Checks a file's size and sha256 against `pinned` ([`ModelError::Checksum`] when they differ).
pub fn check_file(path: &Path, pinned: Pinned) -> Result<(), ModelError> {
    let size = std::fs::metadata(path)
        .map_err(|e| ModelError::io(path, e))?
        .len();
    let found = if size == pinned.size {
        sha256_file(path)?
    } else {
        String::from("(not hashed)")
    };
    if size != pinned.size || found != pinned.sha256 {
        return Err(ModelError::Checksum {
            path: path.to_path_buf(),
            expected: format!("{} ({} bytes)", pinned.sha256, pinned.size),
            found: format!("{found} ({size} bytes)"),
        });
    }
    Ok(())
}

/// Sha256 of bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn persist_and_check_against_pins() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub").join("data.json");
        let data = b"some data";
        let pinned = Pinned {
            sha256: leak(sha(data)),
            size: data.len() as u64,
        };
        let (size, found) = persist_verified(&mut &data[..], &dest, Some(pinned)).unwrap();
        assert_eq!((size, found.as_str()), (9, pinned.sha256));
        check_file(&dest, pinned).unwrap();
        // Same size, other bytes: the hash catches it.
        std::fs::write(&dest, b"some date").unwrap();
        assert!(matches!(
            check_file(&dest, pinned),
            Err(ModelError::Checksum { .. })
        ));
        // A mismatch leaves neither the destination nor a partial file behind.
        let other = dir.path().join("sub").join("other.json");
        let e = persist_verified(&mut &b"different"[..], &other, Some(pinned)).unwrap_err();
        assert!(matches!(e, ModelError::Checksum { .. }), "{e}");
        assert!(!other.exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
        // Without a pin the file is written and its hash reported.
        let (_, h) = persist_verified(&mut &b"different"[..], &other, None).unwrap();
        assert_eq!(h, sha(b"different"));
    }
}
