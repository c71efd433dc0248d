//! One module per subcommand: `Args` (clap) and `run(Args) -> anyhow::Result<()>`.

pub mod data;
pub mod doctor;
pub mod eft;
pub mod eval;
pub mod export_gguf;
pub mod generate;
pub mod iterate;
pub mod judge;
pub mod judge_eval;
pub mod logprobs;
pub mod report;
pub mod seed_model;
pub mod sft;
pub mod train_dpo;

use std::path::Path;

use anyhow::{Context, Result};

/// Where `tsr generate` and `tsr judge` run the model: an OpenAI-compatible server (a llama.cpp
/// server, vLLM, SGLang) instead of the local libtorch engine.
#[derive(clap::Args, Debug, Default)]
pub struct EngineArgs {
    /// Base URL of an OpenAI-compatible server to sample (and judge) on instead of loading a
    /// model here, e.g. http://127.0.0.1:8080; repeat for replicas of one model. Sampling
    /// follows the server's own implementation, so samples differ from the local engine's.
    #[arg(long = "engine-url", value_name = "URL")]
    pub engine_urls: Vec<String>,
    /// The `model` name sent to the server [default: the first one it lists in /v1/models].
    #[arg(long = "engine-model", value_name = "NAME", requires = "engine_urls")]
    pub engine_model: Option<String>,
    /// Name of the environment variable that holds the server's API key (the key itself is
    /// never logged or written).
    #[arg(
        long = "engine-api-key-env",
        value_name = "VAR",
        requires = "engine_urls"
    )]
    pub engine_api_key_env: Option<String>,
    /// Requests in flight per server URL.
    #[arg(
        long = "engine-max-in-flight",
        default_value_t = 4,
        requires = "engine_urls"
    )]
    pub engine_max_in_flight: usize,
}

impl EngineArgs {
    /// The remote engine, when a URL was given.
    pub fn engine(&self) -> Result<Option<tsr_judge::OpenAiEngine>> {
        if self.engine_urls.is_empty() {
            return Ok(None);
        }
        let config = tsr_judge::RemoteConfig {
            urls: self.engine_urls.clone(),
            model: self.engine_model.clone(),
            api_key_env: self.engine_api_key_env.clone(),
            max_in_flight: self.engine_max_in_flight,
            ..tsr_judge::RemoteConfig::default()
        };
        Ok(Some(tsr_judge::OpenAiEngine::new(&config)?))
    }
}

/// Where a command's JSON lines go: stdout, or a temporary file beside `--out` that is synced and
/// renamed over it when finished (an interrupted command leaves the old file or none, never half
/// a file).
pub struct Sink {
    pub writer: std::io::BufWriter<Box<dyn std::io::Write>>,
    /// (temporary path, destination, a handle to sync) when writing a file.
    file: Option<(std::path::PathBuf, std::path::PathBuf, std::fs::File)>,
}

impl Sink {
    pub fn open(dest: Option<&Path>) -> Result<Sink> {
        let Some(dest) = dest else {
            return Ok(Sink {
                writer: std::io::BufWriter::new(Box::new(std::io::stdout())),
                file: None,
            });
        };
        let name = dest
            .file_name()
            .with_context(|| format!("{} has no file name", dest.display()))?;
        let tmp = dest.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let handle = f
            .try_clone()
            .with_context(|| format!("opening {}", tmp.display()))?;
        Ok(Sink {
            writer: std::io::BufWriter::new(Box::new(f)),
            file: Some((tmp, dest.to_path_buf(), handle)),
        })
    }

    /// The destination's name, for messages.
    pub fn name(&self) -> String {
        self.file
            .as_ref()
            .map_or_else(|| "stdout".to_string(), |(_, d, _)| d.display().to_string())
    }

    /// Writes one line.
    pub fn line(&mut self, s: &str) -> Result<()> {
        use std::io::Write;
        writeln!(self.writer, "{s}").with_context(|| format!("writing {}", self.name()))
    }

    /// Flushes; for a file, syncs it and renames it over the destination.
    pub fn finish(mut self) -> Result<()> {
        use std::io::Write;
        self.writer
            .flush()
            .with_context(|| format!("writing {}", self.name()))?;
        if let Some((tmp, dest, handle)) = self.file.take() {
            drop(self.writer);
            handle
                .sync_all()
                .with_context(|| format!("syncing {}", tmp.display()))?;
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
        }
        Ok(())
    }
}

/// Reads a training configuration from a TOML file: the `[section]` table when there is one,
/// else the whole file. No file: the defaults.
pub fn read_config_section<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
    section: &str,
) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let table = match value.get(section) {
        Some(t) => t.clone(),
        None => value,
    };
    table
        .try_into()
        .with_context(|| format!("{}: invalid {section} configuration", path.display()))
}

/// The output folder of a training command (`tsr train-dpo`, `tsr sft`), checked before anything
/// in it changes. The command validates its configuration, reads its data and loads its model
/// first, then calls this, so a bad input never touches an existing folder.
///
/// - A folder with a finished model (the model files at its top, TRL's `output_dir` layout, or
///   the `model/` subfolder of tsr before 2026-12) is refused unless `overwrite` is set: it is a
///   result, and training again would replace it.
/// - A folder with an unfinished run of other settings (`config_file` differs, a checkpoint or
///   metrics exist) is refused too: resuming it would mix two runs.
/// - With `overwrite`, the previous run's weights (`model.safetensors` and shards, the legacy
///   `model/`), `checkpoint/`, `ref_cache/`, `metrics.jsonl` and `config_file` are removed
///   first; the other model files are replaced when the new model is saved.
///
/// Then `config_file` is written with `config_json`.
pub fn prepare_training_output(
    out: &Path,
    config_file: &str,
    config_json: &str,
    overwrite: bool,
) -> Result<()> {
    let config_path = out.join(config_file);
    if !overwrite {
        anyhow::ensure!(
            !tsr_model::hf::holds_model(out) && !out.join("model").exists(),
            "{} already holds a trained model; choose another --out, or add --overwrite to \
             train again and replace it",
            out.display()
        );
        let previous = std::fs::read_to_string(&config_path).ok();
        let started = out.join("checkpoint").exists() || out.join("metrics.jsonl").exists();
        anyhow::ensure!(
            !started || previous.as_deref().is_none_or(|p| p == config_json),
            "{} holds an unfinished run with other settings ({} differs); rerun with the same \
             settings to resume it, or add --overwrite to start again",
            out.display(),
            config_path.display()
        );
    } else {
        let weights: Vec<String> = std::fs::read_dir(out)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".safetensors") || n == "model.safetensors.index.json")
            .collect();
        let previous = [
            "model",
            "checkpoint",
            "ref_cache",
            "metrics.jsonl",
            config_file,
        ];
        for name in weights.iter().map(String::as_str).chain(previous) {
            let p = out.join(name);
            let removed = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(&config_path, config_json)
        .with_context(|| format!("writing {}", config_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prepare_training_output;

    #[test]
    fn finished_outputs_are_kept_unless_overwrite_and_resumes_need_the_same_settings() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        // A fresh folder: created, settings written.
        prepare_training_output(&out, "c.json", "A", false).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("c.json")).unwrap(), "A");
        // An unfinished run: same settings resume, other settings are refused untouched.
        std::fs::write(out.join("metrics.jsonl"), "{}\n").unwrap();
        prepare_training_output(&out, "c.json", "A", false).unwrap();
        let e = prepare_training_output(&out, "c.json", "B", false).unwrap_err();
        assert!(e.to_string().contains("other settings"), "{e}");
        assert_eq!(std::fs::read_to_string(out.join("c.json")).unwrap(), "A");
        // A finished run (model files at the top) is refused, even with the same settings, and
        // nothing changes.
        std::fs::write(out.join("config.json"), "{}").unwrap();
        std::fs::write(out.join("model.safetensors"), "w").unwrap();
        let e = prepare_training_output(&out, "c.json", "A", false).unwrap_err();
        assert!(e.to_string().contains("--overwrite"), "{e}");
        assert!(out.join("model.safetensors").exists());
        assert!(out.join("metrics.jsonl").exists());
        // A config without weights is an interrupted save, not a finished model.
        std::fs::remove_file(out.join("model.safetensors")).unwrap();
        prepare_training_output(&out, "c.json", "A", false).unwrap();
        // The legacy layout (`model/`) counts as finished too.
        std::fs::create_dir_all(out.join("model")).unwrap();
        let e = prepare_training_output(&out, "c.json", "A", false).unwrap_err();
        assert!(e.to_string().contains("--overwrite"), "{e}");
        // --overwrite clears the previous run's files, keeps others, writes the new settings.
        std::fs::write(out.join("model.safetensors"), "w").unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        prepare_training_output(&out, "c.json", "B", true).unwrap();
        assert!(
            !out.join("model").exists()
                && !out.join("metrics.jsonl").exists()
                && !out.join("model.safetensors").exists()
        );
        assert_eq!(std::fs::read_to_string(out.join("c.json")).unwrap(), "B");
        assert!(out.join("notes.txt").exists());
    }
}
