//! Comparing run folders: the same seed and settings must give the same files whether a run went
//! straight through or was killed and resumed. Wall-clock fields (`*wall_s`) are the only values
//! allowed to differ; the run-folder lock file (the pid of the last process) is left out.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde_json::Value;

fn strip_wall(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.ends_with("wall_s"));
            m.values_mut().for_each(strip_wall);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_wall),
        _ => {}
    }
}

fn normalise(ext: &str, bytes: Vec<u8>) -> Vec<u8> {
    let json = |b: &[u8]| -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(b).ok()?;
        strip_wall(&mut v);
        serde_json::to_vec(&v).ok()
    };
    match ext {
        "json" => json(&bytes).unwrap_or(bytes),
        "jsonl" => {
            let mut out = Vec::with_capacity(bytes.len());
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                // A line that is not JSON is kept verbatim, so it still shows as a difference.
                out.extend(json(line).unwrap_or_else(|| line.to_vec()));
                out.push(b'\n');
            }
            out
        }
        _ => bytes,
    }
}

/// Every file under `dir` (relative path → content) but the lock file; JSON and JSON-lines
/// content with wall-clock fields removed, other bytes verbatim.
pub fn snapshot(dir: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) -> io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.file_name().is_some_and(|n| n == crate::lock::LOCK_FILE) {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out)?;
                continue;
            }
            let rel = p
                .strip_prefix(root)
                .map_err(io::Error::other)?
                .display()
                .to_string();
            let ext = p
                .extension()
                .map(|x| x.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.insert(rel, normalise(&ext, std::fs::read(&p)?));
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// The relative paths whose content differs between two run folders, or that only one holds
/// (see [`snapshot`]); empty when the runs are the same.
pub fn differences(a: &Path, b: &Path) -> io::Result<Vec<String>> {
    let (sa, sb) = (snapshot(a)?, snapshot(b)?);
    let mut keys: Vec<&String> = sa.keys().chain(sb.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| sa.get(*k) != sb.get(*k))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_and_the_lock_file_are_ignored_everything_else_counts() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for (d, wall, pid) in [(&a, 1.5, "11"), (&b, 9.0, "22")] {
            std::fs::create_dir_all(d.join("iter-001")).unwrap();
            std::fs::write(
                d.join("iter-001/x.json"),
                format!(r#"{{"pairs": 3, "wall_s": {wall}, "sub": {{"gen_wall_s": {wall}}}}}"#),
            )
            .unwrap();
            std::fs::write(d.join("m.jsonl"), format!("{{\"wall_s\": {wall}}}\n")).unwrap();
            std::fs::write(d.join(crate::lock::LOCK_FILE), pid).unwrap();
            std::fs::write(d.join("w.bin"), [1u8, 2]).unwrap();
        }
        assert!(differences(&a, &b).unwrap().is_empty());
        std::fs::write(b.join("w.bin"), [1u8, 3]).unwrap();
        std::fs::write(b.join("extra.txt"), "x").unwrap();
        assert_eq!(differences(&a, &b).unwrap(), vec!["extra.txt", "w.bin"]);
    }
}
