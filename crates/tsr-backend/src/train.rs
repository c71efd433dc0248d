//! The training commands (`tsr sft`, `tsr train-dpo`) as library calls: a configuration file
//! (a TOML `[sft]` / `[dpo]` table or a whole file) with overrides, the data, the model, then
//! training into an output folder in TRL's `output_dir` layout.
//!
//! The output folder gets the trained model itself as a Hugging Face folder (loadable from it),
//! `metrics.jsonl` (one line per optimizer step, TRL's metric names), the resolved configuration
//! (`sft_config.json` / `dpo_config.json`), DPO's `ref_cache/` and, with `checkpoint_every > 0`,
//! `checkpoint/`; a run started again with the same settings resumes from that checkpoint. A
//! folder that already holds a trained model is refused unless `overwrite` is set (see
//! [`prepare_training_output`]); bad input is reported before the folder changes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tsr_dpo::{DpoConfig, SftConfig, SftMetrics, SftReport, StepMetrics, TrainReport};
use tsr_model::{Device, Kind, LoadOptions, Loaded};

/// A training job: the model, its data, the output folder and the settings.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Built-in model name, Hugging Face directory or .gguf file.
    pub model: String,
    /// The data: chat examples (SFT) or preference pairs (DPO), JSON lines.
    pub data: PathBuf,
    /// The output folder.
    pub out: PathBuf,
    /// TOML file with the settings (see [`read_config_section`]); none: the defaults.
    pub config: Option<PathBuf>,
    pub device: Device,
    /// Overrides `max_steps` of the configuration.
    pub max_steps: Option<u64>,
    /// Overrides `seed` of the configuration.
    pub seed: Option<u64>,
    /// Train again into a folder that already holds a trained model (or an unfinished run of
    /// other settings), replacing it.
    pub overwrite: bool,
}

/// Progress of [`sft`] and [`dpo`], in the order it happens; `M` is the step metrics type.
#[derive(Debug)]
#[non_exhaustive]
pub enum TrainEvent<'a, M> {
    /// The data is read, the model loaded and the output folder prepared: `items` examples or
    /// pairs are trained on.
    Started { items: usize },
    /// An optimizer step of `total`.
    Step { metrics: &'a M, total: u64 },
    /// Training is done (the model is saved next): `dropped` examples or pairs did not fit
    /// `max_length`; `resumed_from` is the checkpoint's step when the run was resumed.
    Trained {
        dropped: usize,
        resumed_from: Option<u64>,
    },
}

/// Loads the model to train in f32 and prepares the output folder, writing the resolved settings
/// `cfg` to `config_name` there.
fn load_and_prepare(
    options: &TrainOptions,
    config_name: &str,
    cfg: &impl Serialize,
) -> Result<Loaded> {
    let opts = LoadOptions {
        device: options.device,
        kind: Kind::Float,
    };
    let loaded = tsr_model::load(&options.model, &opts)
        .with_context(|| format!("loading model {}", options.model))?;
    prepare_training_output(
        &options.out,
        config_name,
        &serde_json::to_string_pretty(cfg)?,
        options.overwrite,
    )?;
    Ok(loaded)
}

/// Saves the trained model into the output folder, beside the run's files.
fn save(options: &TrainOptions, loaded: &Loaded) -> Result<()> {
    tsr_dpo::save_model_in(
        &loaded.model,
        &loaded.tokenizer,
        &loaded.generation,
        &options.out,
    )
    .with_context(|| format!("saving the model to {}", options.out.display()))
}

/// Supervised fine-tuning (`tsr_dpo::train_sft`) with the `[sft]` settings of
/// `options.config`; the model is saved into `options.out`.
pub fn sft(
    options: &TrainOptions,
    mut on_event: impl FnMut(TrainEvent<'_, SftMetrics>),
) -> Result<SftReport> {
    let mut cfg: SftConfig = read_config_section(options.config.as_deref(), "sft")?;
    if let Some(s) = options.max_steps {
        cfg.max_steps = Some(s);
    }
    if let Some(s) = options.seed {
        cfg.seed = s;
    }
    let checked = cfg.validate()?;
    // Everything that can fail on bad input comes before the output folder changes.
    let examples = tsr_dpo::read_examples(&options.data)?;
    let mut loaded = load_and_prepare(options, "sft_config.json", &cfg)?;

    on_event(TrainEvent::Started {
        items: examples.len(),
    });
    let report = tsr_dpo::train_sft(
        &mut loaded.model,
        &loaded.tokenizer,
        &examples,
        &checked,
        &options.out,
        |metrics, total| on_event(TrainEvent::Step { metrics, total }),
    )?;
    on_event(TrainEvent::Trained {
        dropped: report.dropped.len(),
        resumed_from: report.resumed_from,
    });
    save(options, &loaded)?;
    Ok(report)
}

/// DPO training (`tsr_dpo::train_dpo`) with the `[dpo]` settings of `options.config`; the model
/// is saved into `options.out`.
pub fn dpo(
    options: &TrainOptions,
    mut on_event: impl FnMut(TrainEvent<'_, StepMetrics>),
) -> Result<TrainReport> {
    let mut cfg: DpoConfig = read_config_section(options.config.as_deref(), "dpo")?;
    if let Some(s) = options.max_steps {
        cfg.max_steps = Some(s);
    }
    if let Some(s) = options.seed {
        cfg.seed = s;
    }
    let checked = cfg.validate()?;
    // Everything that can fail on bad input comes before the output folder changes.
    let pairs = tsr_dpo::read_pairs(&options.data)?;
    let mut loaded = load_and_prepare(options, "dpo_config.json", &cfg)?;

    on_event(TrainEvent::Started { items: pairs.len() });
    let report = tsr_dpo::train_dpo(
        &mut loaded.model,
        &loaded.tokenizer,
        &pairs,
        &checked,
        &options.out,
        |metrics, total| on_event(TrainEvent::Step { metrics, total }),
    )?;
    on_event(TrainEvent::Trained {
        dropped: report.dropped.len(),
        resumed_from: report.resumed_from,
    });
    save(options, &loaded)?;
    Ok(report)
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

/// The output folder of a training job ([`sft`], [`dpo`]), checked before anything in it
/// changes. The job validates its configuration, reads its data and loads its model first, then
/// calls this, so a bad input never touches an existing folder.
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
    crate::write_atomic(&config_path, config_json)?;
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
