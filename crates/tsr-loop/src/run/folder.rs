//! Creating a run folder (the resolved configuration and the prompts, `run.json` last) and
//! opening an existing one to resume it.

use super::*;

/// Written at creation, last: marks a complete run folder.
#[derive(Debug, Serialize, Deserialize)]
struct RunMarker {
    format: u32,
    tsr_version: String,
}

/// Where a run keeps its copy of the `[eval]` prompts.
const EVAL_PROMPTS: &str = "eval-prompts.jsonl";

const FORMAT: u32 = 1;

/// Whether a run folder entry is one that [`Run::create`] writes before `run.json` (or the lock,
/// or a temporary of an interrupted write): a folder holding only these has no run yet.
fn creation_leftover(name: &str) -> bool {
    [LOCK_FILE, "prompts.jsonl", EVAL_PROMPTS, "config.toml"].contains(&name)
        || tsr_io::is_temporary(name)
}

impl Run {
    /// Create a new run folder (it must not exist, or be empty, or hold only what a creation
    /// killed before writing `run.json` left, which is removed) holding the resolved config and
    /// the prompts.
    pub fn create(dir: &Path, mut config: Config, prompts: Vec<PromptRecord>) -> Result<Run> {
        config.validate()?;
        if prompts.is_empty() {
            return Err(LoopError::Config("no prompts".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &prompts {
            if !seen.insert(p.id.as_str()) {
                return Err(LoopError::Config(format!("duplicate prompt id `{}`", p.id)));
            }
            if p.prompt.trim().is_empty() {
                return Err(LoopError::Config(format!("prompt `{}` is empty", p.id)));
            }
        }
        let per_iteration = config.chunk_size(prompts.len())?;
        let eval_prompts = match &config.eval {
            Some(e) => crate::defaults::eval_prompts_for(e, &prompts)?,
            None => Vec::new(),
        };
        if let Some(e) = config.eval.as_mut() {
            e.prompts = Some(PathBuf::from(EVAL_PROMPTS));
        }
        config.loop_.prompts_per_iteration = per_iteration;
        config.run.prompts = PathBuf::from("prompts.jsonl");
        config.resolved = Some(Resolved {
            tsr_version: env!("CARGO_PKG_VERSION").to_string(),
            prompt_count: prompts.len(),
        });
        let rd = |m: &str| LoopError::RunDir {
            path: dir.to_path_buf(),
            message: m.to_string(),
        };
        if dir.join("run.json").exists() {
            return Err(rd("already holds a run; continue it with --resume"));
        }
        // Anything besides what `create` itself writes before `run.json` belongs to someone
        // else; those files alone are a creation that a crash interrupted (no run yet).
        let foreign = |dir: &Path| {
            std::fs::read_dir(dir).is_ok_and(|mut entries| {
                entries
                    .any(|e| e.is_ok_and(|e| !creation_leftover(&e.file_name().to_string_lossy())))
            })
        };
        if foreign(dir) {
            return Err(rd("exists and is not empty"));
        }
        fsio::create_dir(dir)?;
        // A second `create` racing this one fails at the lock, or at the checks below once this
        // one has written the run.
        let _lock = RunLock::acquire(dir)?;
        if foreign(dir) || dir.join("run.json").exists() {
            return Err(rd("exists and is not empty"));
        }
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            if entry.file_name() != LOCK_FILE {
                tracing::warn!(file = %entry.path().display(), "removing what an interrupted run creation left");
                std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            }
        }
        fsio::write_jsonl(&dir.join("prompts.jsonl"), &prompts)?;
        if config.eval.is_some() {
            fsio::write_jsonl(&dir.join(EVAL_PROMPTS), &eval_prompts)?;
        }
        fsio::write_bytes(
            &dir.join("config.toml"),
            config.to_toml_string()?.as_bytes(),
        )?;
        fsio::write_json(
            &dir.join("run.json"),
            &RunMarker {
                format: FORMAT,
                tsr_version: env!("CARGO_PKG_VERSION").into(),
            },
        )?;
        tracing::info!(dir = %dir.display(), prompts = prompts.len(), per_iteration, "created run");
        Ok(Run {
            dir: dir.to_path_buf(),
            config,
            prompts,
            eval_prompts,
            per_iteration,
        })
    }

    /// Open an existing run folder to resume it.
    pub fn open(dir: &Path) -> Result<Run> {
        let marker = dir.join("run.json");
        if !marker.exists() {
            return Err(LoopError::RunDir {
                path: dir.to_path_buf(),
                message: "is not a run folder (no run.json); start a new run instead".into(),
            });
        }
        let m: RunMarker = fsio::read_json(&marker)?;
        if m.format != FORMAT {
            return Err(LoopError::RunDir {
                path: dir.to_path_buf(),
                message: format!(
                    "run format {} is not supported (this tsr writes {FORMAT})",
                    m.format
                ),
            });
        }
        let cpath = dir.join("config.toml");
        let text = std::fs::read_to_string(&cpath).map_err(io(&cpath))?;
        let config = Config::from_toml_str(&text, &cpath)?;
        config.validate()?;
        if let Some(r) = &config.resolved {
            if r.tsr_version != env!("CARGO_PKG_VERSION") {
                tracing::warn!(written_by = %r.tsr_version, "resuming a run written by another tsr version");
            }
        }
        let ppath = dir.join("prompts.jsonl");
        let ptext = std::fs::read_to_string(&ppath).map_err(io(&ppath))?;
        let prompts = parse_prompts(&ptext, &ppath)?;
        let per_iteration = config.chunk_size(prompts.len())?;
        let eval_prompts = if config.eval.is_some() {
            let epath = dir.join(EVAL_PROMPTS);
            let etext = std::fs::read_to_string(&epath).map_err(io(&epath))?;
            parse_prompts(&etext, &epath)?
        } else {
            Vec::new()
        };
        Ok(Run {
            dir: dir.to_path_buf(),
            config,
            prompts,
            eval_prompts,
            per_iteration,
        })
    }

    /// Change the number of iterations of an opened run (to extend it); rewrites `config.toml`.
    pub fn set_iterations(&mut self, n: u32) -> Result<()> {
        if n == self.config.run.iterations {
            return Ok(());
        }
        let mut c = self.config.clone();
        c.run.iterations = n;
        c.validate()?;
        c.chunk_size(self.prompts.len())?;
        let _lock = RunLock::acquire(&self.dir)?;
        fsio::write_bytes(
            &self.dir.join("config.toml"),
            c.to_toml_string()?.as_bytes(),
        )?;
        self.config = c;
        Ok(())
    }
}
