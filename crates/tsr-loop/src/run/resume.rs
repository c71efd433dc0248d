//! What a resume checks and cleans: the backend's provenance against the one recorded at the
//! first execution, and the temporaries a crash left behind.

use super::*;

impl Run {
    /// Record the backend's provenance on the first execution; refuse a different one later.
    pub(super) fn check_provenance(&self, now: &Provenance) -> Result<()> {
        let path = self.dir.join("provenance.json");
        if !path.exists() {
            return fsio::write_json(&path, now);
        }
        let then: Provenance = fsio::read_json(&path)?;
        if &then != now {
            return Err(LoopError::RunDir {
                path: self.dir.clone(),
                message: format!(
                    "was produced with {} and judge `{}`{}; resuming it with {} and judge `{}`{} would mix two ways of scoring in one run (start a new run, or resume with the original settings)",
                    then.backend,
                    then.judge,
                    doubles(&then),
                    now.backend,
                    now.judge,
                    doubles(now),
                ),
            });
        }
        Ok(())
    }

    pub(super) fn provenance(&self) -> Result<Option<Provenance>> {
        let path = self.dir.join("provenance.json");
        if path.exists() {
            Ok(Some(fsio::read_json(&path)?))
        } else {
            Ok(None)
        }
    }

    /// Remove what a crash may have left half-written (the caller holds the lock, so no live
    /// process is writing them): the loop's temporary files (`*.tsr-tmp`), partial model
    /// folders (`*.partial`), a backend's staging folders beside them (`.NAME.tsr-tmp-PID`,
    /// `.NAME.tsr-old-PID`, as tsr-model's save writes), and trainer work folders
    /// (`NAME.dpo-work`) whose model `NAME` is complete. A work folder of an unfinished model is
    /// kept: the trainer resumes from its checkpoint. Then regenerate the derived files from the
    /// markers.
    pub(super) fn recover(&self) -> Result<()> {
        fn walk(dir: &Path, removed: &mut usize) -> Result<()> {
            fsio::remove_stale_tmp(dir)?;
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(_) => return Ok(()),
            };
            for e in entries {
                let e = e.map_err(io(dir))?;
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if is_stale_temporary(dir, &name) {
                    tracing::info!(path = %p.display(), "removing a stale temporary");
                    fsio::remove_if_exists(&p)?;
                    *removed += 1;
                } else if p.is_dir() {
                    walk(&p, removed)?;
                }
            }
            Ok(())
        }
        let mut removed = 0;
        walk(&self.dir, &mut removed)?;
        if removed > 0 {
            tracing::info!(removed, "removed temporaries a crash left behind");
        }
        self.write_derived()?;
        Ok(())
    }
}

/// Whether the entry `name` of folder `dir` is a temporary a crashed stage left (see
/// [`Run::recover`]).
fn is_stale_temporary(dir: &Path, name: &str) -> bool {
    if name.ends_with(".partial") {
        return dir.join(name).is_dir();
    }
    if let Some(model) = name.strip_suffix(".dpo-work") {
        return dir.join(model).join(TRAIN_REPORT).exists();
    }
    // `.NAME.tsr-tmp-PID` / `.NAME.tsr-old-PID`: a model save's staging folders.
    tsr_io::is_temporary(name)
}

/// ` (test doubles: ...)` when a provenance lists any.
fn doubles(p: &Provenance) -> String {
    if p.test_doubles.is_empty() {
        String::new()
    } else {
        format!(" (test doubles: {})", p.test_doubles.join(", "))
    }
}
