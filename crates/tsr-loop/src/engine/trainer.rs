//! DPO by an external trainer command (`[backend] train = "command"`): the pairs and settings
//! it reads, its run, the check of the model it writes, and its metrics file.

use std::path::Path;
use std::process::Stdio;

use serde_json::json;

use super::shell::{log_tail, shell};
use super::{err, EngineBackend};
use crate::backend::{Backend, ModelRef, TrainPair, TrainReport};
use crate::error::BackendError;

impl<B: Backend> EngineBackend<B> {
    /// One DPO stage by `[backend.trainer].command` (see [`crate::TrainerSection`]).
    pub(super) fn train_command(
        &mut self,
        init: &ModelRef,
        pairs: &[TrainPair],
        out_dir: &Path,
        seed: u64,
    ) -> Result<TrainReport, BackendError> {
        let template = self
            .section
            .trainer
            .as_ref()
            .map(|t| t.command.clone())
            .unwrap_or_default();
        let io = |p: &Path, e: std::io::Error| err(format!("{}: {e}", p.display()));
        let abs = |p: &Path| std::path::absolute(p).map_err(|e| io(p, e));
        // A fresh work folder and an empty output folder: a killed earlier attempt left at most
        // files that are never read.
        let work = abs(&out_dir.with_extension("trainer-work"))?;
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(|e| io(&work, e))?;
        }
        std::fs::create_dir_all(&work).map_err(|e| io(&work, e))?;
        if out_dir.exists() {
            std::fs::remove_dir_all(out_dir).map_err(|e| io(out_dir, e))?;
        }
        std::fs::create_dir_all(out_dir).map_err(|e| io(out_dir, e))?;
        let out = abs(out_dir)?;
        let init_dir = if Path::new(&init.location).join("config.json").is_file() {
            abs(Path::new(&init.location))?
        } else {
            let d = work.join("init");
            self.files.write_hf(init, &d)?;
            d
        };
        let data = work.join("pairs.jsonl");
        let settings = work.join("dpo.json");
        let metrics = work.join("metrics.json");
        crate::fsio::write_atomic(&data, |w| {
            for p in pairs {
                let row = json!({
                    "prompt": [{"role": "user", "content": p.prompt}],
                    "chosen": [{"role": "assistant", "content": p.chosen}],
                    "rejected": [{"role": "assistant", "content": p.rejected}],
                });
                writeln!(w, "{row}")?;
            }
            Ok(())
        })
        .map_err(|e| err(e.to_string()))?;
        let mut dpo = self.dpo.clone();
        if let Some(o) = dpo.as_object_mut() {
            o.insert("seed".into(), json!(seed));
        }
        crate::fsio::write_atomic(&settings, |w| writeln!(w, "{dpo}"))
            .map_err(|e| err(e.to_string()))?;
        let command = template
            .replace("{init}", &init_dir.display().to_string())
            .replace("{data}", &data.display().to_string())
            .replace("{settings}", &settings.display().to_string())
            .replace("{out}", &out.display().to_string())
            .replace("{metrics}", &metrics.display().to_string())
            .replace("{seed}", &seed.to_string());
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let log_path = self.dir.join("trainer.log");
        tracing::info!(init = %init.name, pairs = pairs.len(), %command, "training with the trainer command");
        let status = shell(&command, &log_path)?
            .stdin(Stdio::null())
            .status()
            .map_err(|e| err(format!("cannot run the trainer command `{command}`: {e}")))?;
        if !status.success() {
            return Err(err(format!(
                "the trainer command `{command}` failed ({status}); {} ends:\n{}",
                log_path.display(),
                log_tail(&log_path)
            )));
        }
        self.files.check_model(&out).map_err(|e| {
            err(format!(
                "the trainer command `{command}` succeeded but {} is not a model: {e}",
                out.display()
            ))
        })?;
        let report = read_trainer_metrics(&metrics, pairs.len(), &self.dpo)?;
        std::fs::remove_dir_all(&work).map_err(|e| io(&work, e))?;
        Ok(report)
    }
}

/// The [`TrainReport`] of an external trainer's metrics file (TRL's `log_history`).
fn read_trainer_metrics(
    path: &Path,
    pairs: usize,
    dpo: &serde_json::Value,
) -> Result<TrainReport, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "the trainer wrote no metrics file {}: {e}",
            path.display()
        ))
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| err(format!("{}: not JSON: {e}", path.display())))?;
    // The per-step entries (the closing summary has `train_runtime` and no `step` loss).
    let steps_log: Vec<serde_json::Value> = v["log_history"]
        .as_array()
        .ok_or_else(|| err(format!("{}: no log_history list", path.display())))?
        .iter()
        .filter(|e| e.get("loss").is_some() && e.get("step").is_some())
        .cloned()
        .collect();
    let last = steps_log.last();
    Ok(TrainReport {
        pairs,
        epochs: dpo["epochs"].as_u64().unwrap_or(1) as usize,
        steps: last.and_then(|l| l["step"].as_u64()).unwrap_or(0) as usize,
        tokens: v["tokens"].as_u64().unwrap_or(0),
        reward_margin: TrainReport::last_epoch_mean(&steps_log, "rewards/margins"),
        reward_accuracy: TrainReport::last_epoch_mean(&steps_log, "rewards/accuracies"),
        final_loss: last.and_then(|l| l["loss"].as_f64()),
        sampled_ids: false,
        truncated_completions: None,
        steps_log,
    })
}
