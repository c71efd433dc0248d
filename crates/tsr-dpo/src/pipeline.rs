//! The whole job in one call: JSONL pairs → tokenized → reference log-probs (cached) →
//! training with `metrics.jsonl` and resumable checkpoints.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tsr_model::{ChatTokenizer, Model};

use crate::config::TrainConfig;
use crate::data::{read_pairs, tokenize_pairs, PreferencePair};
use crate::error::{DpoError, Result};
use crate::reference::cached_reference_logps;
use crate::trainer::{JsonlSink, StepMetrics, TrainSummary, Trainer};

/// Files [`train_dpo`] writes under its output directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFiles {
    /// `metrics.jsonl`: one line per optimizer step (on resume, the lines after the checkpoint's
    /// step are dropped and the redone steps appended; a fresh run replaces the file).
    pub metrics: PathBuf,
    /// `checkpoint/`: the latest checkpoint (when `checkpoint_every > 0`).
    pub checkpoint: PathBuf,
    /// `ref_cache/`: cached reference log-probs.
    pub ref_cache: PathBuf,
}

impl RunFiles {
    /// The layout under `out_dir`.
    pub fn under(out_dir: &Path) -> Self {
        RunFiles {
            metrics: out_dir.join("metrics.jsonl"),
            checkpoint: out_dir.join("checkpoint"),
            ref_cache: out_dir.join("ref_cache"),
        }
    }
}

/// What [`train_dpo`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Steps, pairs, last metrics.
    pub summary: TrainSummary,
    /// Indices (in the input) of pairs dropped by truncation.
    pub dropped: Vec<usize>,
    /// Step resumed from, if a checkpoint was found.
    pub resumed_from: Option<u64>,
    /// Where the files are.
    pub files: RunFiles,
    /// The PEFT adapter folder, when training used LoRA (the model is returned merged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
}

/// Trains `model` in place on `pairs` (see the crate docs for the steps), writing into
/// `out_dir`; resumes from `out_dir/checkpoint` when one is there. The reference is `model`
/// as it is on entry. `progress` sees every step's metrics and the total step count. With
/// `lora`, adapters are trained and then merged (see [`crate::lora`]). Saving the trained model
/// is left to the caller ([`save_model`]).
pub fn train_dpo(
    model: &mut Model,
    tokenizer: &ChatTokenizer,
    pairs: &[PreferencePair],
    cfg: &TrainConfig,
    out_dir: &Path,
    progress: impl FnMut(&StepMetrics, u64),
) -> Result<TrainReport> {
    let c = cfg.get();
    let (tokenized, dropped) = tokenize_pairs(tokenizer, pairs, c.max_length, c.truncation)?;
    train_dpo_tokenized(
        model,
        tokenizer.pad_id(),
        tokenized,
        dropped,
        cfg,
        out_dir,
        progress,
    )
}

/// [`train_dpo`] on pairs that are already tokenized (by [`tokenize_pairs`], by
/// [`crate::data::tokenize_sampled_pairs`] for sampled token ids, or by the caller);
/// `dropped` is passed through to the report.
pub fn train_dpo_tokenized(
    model: &mut Model,
    pad_id: u32,
    tokenized: Vec<crate::data::TokenizedPair>,
    dropped: Vec<usize>,
    cfg: &TrainConfig,
    out_dir: &Path,
    progress: impl FnMut(&StepMetrics, u64),
) -> Result<TrainReport> {
    let c = cfg.get();
    crate::trainer::check_memory(model, cfg, &tokenized)?;
    std::fs::create_dir_all(out_dir).map_err(|e| DpoError::io(out_dir, e))?;
    let files = RunFiles::under(out_dir);
    crate::lora::attach(model, c.lora.as_ref(), c.seed)?;
    let resume = files.checkpoint.join("trainer_state.json").exists();
    let reference = if resume {
        // The reference is the model the run started from, which a resumed model no longer is:
        // take the values saved with the checkpoint.
        let p = files.checkpoint.join("reference_logps.json");
        let text = std::fs::read_to_string(&p).map_err(|e| DpoError::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| DpoError::json(&p, e))?
    } else {
        cached_reference_logps(
            model,
            &tokenized,
            pad_id,
            c.ref_batch_size,
            cfg.logprobs(),
            &files.ref_cache,
        )?
        .0
    };
    let mut trainer = Trainer::new(model, cfg.clone(), tokenized, reference, pad_id)?;
    let resumed_from = if resume {
        trainer.load_checkpoint(&files.checkpoint)?;
        Some(trainer.steps_done())
    } else {
        None
    };
    let mut sink = JsonlSink::resume(&files.metrics, resumed_from.unwrap_or(0))?;
    let summary = trainer.run(&mut sink, Some(&files.checkpoint), progress)?;
    drop(trainer);
    let adapter = crate::lora::finish(model, out_dir)?;
    Ok(TrainReport {
        summary,
        dropped,
        resumed_from,
        files,
        adapter,
    })
}

/// [`train_dpo`] on a JSONL file.
pub fn train_dpo_jsonl(
    model: &mut Model,
    tokenizer: &ChatTokenizer,
    pairs_path: &Path,
    cfg: &TrainConfig,
    out_dir: &Path,
    progress: impl FnMut(&StepMetrics, u64),
) -> Result<TrainReport> {
    let pairs = read_pairs(pairs_path)?;
    train_dpo(model, tokenizer, &pairs, cfg, out_dir, progress)
}

/// Saves a trained model as a Hugging Face directory `dir` (`config.json`, safetensors weights,
/// tokenizer files, `generation_config.json`) that transformers loads. The directory is written
/// aside and swapped in when complete, **replacing** `dir` if it exists: do not point it at a
/// directory holding other files (use [`save_model_in`] for that).
pub fn save_model(
    model: &Model,
    tokenizer: &ChatTokenizer,
    generation: &tsr_model::GenerationConfig,
    dir: &Path,
) -> Result<()> {
    tsr_model::hf::save_model_dir(
        model,
        dir,
        &tsr_model::hf::SaveOptions::default(),
        tokenizer_files(tokenizer, generation),
    )?;
    Ok(())
}

/// Like [`save_model`], but writes the model files **into** `dir` beside the files already there
/// (TRL's `output_dir` layout, used by `tsr train-dpo` and `tsr sft`: the model at the top of the
/// output folder, `metrics.jsonl` and the checkpoint next to it), weights last (see
/// [`tsr_model::hf::save_model_into`]).
pub fn save_model_in(
    model: &Model,
    tokenizer: &ChatTokenizer,
    generation: &tsr_model::GenerationConfig,
    dir: &Path,
) -> Result<()> {
    tsr_model::hf::save_model_into(
        model,
        dir,
        &tsr_model::hf::SaveOptions::default(),
        tokenizer_files(tokenizer, generation),
    )?;
    Ok(())
}

/// The files a saved model carries beside its weights: the tokenizer and the generation config.
fn tokenizer_files<'a>(
    tokenizer: &'a ChatTokenizer,
    generation: &'a tsr_model::GenerationConfig,
) -> impl FnOnce(&Path) -> std::result::Result<(), tsr_model::ModelError> + 'a {
    move |tmp| {
        tokenizer.save(tmp)?;
        generation.save(tmp)
    }
}
