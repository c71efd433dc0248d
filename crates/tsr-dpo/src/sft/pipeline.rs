//! The whole SFT job in one call: JSONL examples → tokenized, masked, packed → training with
//! `metrics.jsonl` and resumable checkpoints.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tsr_model::{ChatTokenizer, Model};

use crate::error::{DpoError, Result};
use crate::sft::batch::make_rows;
use crate::sft::config::SftTrainConfig;
use crate::sft::data::{read_examples, tokenize_examples, SftExample};
use crate::sft::trainer::{SftMetrics, SftSummary, SftTrainer};
use crate::trainer::JsonlSink;

/// What [`train_sft`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftReport {
    /// Steps, rows, last metrics.
    pub summary: SftSummary,
    /// Indices (in the input) of examples dropped: no learned token within `max_length`.
    pub dropped: Vec<usize>,
    /// Step resumed from, if a checkpoint was found.
    pub resumed_from: Option<u64>,
    /// `metrics.jsonl` under the output directory: one line per step (on resume, the lines after
    /// the checkpoint's step are dropped and the redone steps appended; a fresh run replaces the
    /// file).
    pub metrics: PathBuf,
    /// `checkpoint/` under the output directory (when `checkpoint_every > 0`).
    pub checkpoint: PathBuf,
    /// The PEFT adapter folder, when training used LoRA (the model is returned merged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
}

/// Fine-tunes `model` in place on `examples` (see [`crate::sft`]), writing `metrics.jsonl`
/// and `checkpoint/` into `out_dir`; resumes from `out_dir/checkpoint` when one is there.
/// `progress` sees every step's metrics and the total step count. With `lora`, adapters are
/// trained and then merged (see [`crate::lora`]). Saving the trained model is left to the caller
/// ([`crate::save_model`]).
pub fn train_sft(
    model: &mut Model,
    tokenizer: &ChatTokenizer,
    examples: &[SftExample],
    cfg: &SftTrainConfig,
    out_dir: &Path,
    progress: impl FnMut(&SftMetrics, u64),
) -> Result<SftReport> {
    let c = cfg.get();
    std::fs::create_dir_all(out_dir).map_err(|e| DpoError::io(out_dir, e))?;
    let metrics = out_dir.join("metrics.jsonl");
    let checkpoint = out_dir.join("checkpoint");
    let (tokenized, dropped) = tokenize_examples(tokenizer, examples, c.max_length)?;
    let rows = make_rows(&tokenized, c.packing.then_some(c.max_length));
    tracing::info!(
        examples = tokenized.len(),
        rows = rows.len(),
        dropped = dropped.len(),
        "sft data ready"
    );
    crate::lora::attach(model, c.lora.as_ref(), c.seed)?;
    let mut trainer = SftTrainer::new(model, cfg.clone(), rows, tokenizer.pad_id())?;
    let resumed_from = if checkpoint.join("trainer_state.json").exists() {
        trainer.load_checkpoint(&checkpoint)?;
        Some(trainer.steps_done())
    } else {
        None
    };
    let mut sink = JsonlSink::resume(&metrics, resumed_from.unwrap_or(0))?;
    let summary = trainer.run(&mut sink, Some(&checkpoint), progress)?;
    drop(trainer);
    let adapter = crate::lora::finish(model, out_dir)?;
    Ok(SftReport {
        summary,
        dropped,
        resumed_from,
        metrics,
        checkpoint,
        adapter,
    })
}

/// [`train_sft`] on a JSONL file.
pub fn train_sft_jsonl(
    model: &mut Model,
    tokenizer: &ChatTokenizer,
    data: &Path,
    cfg: &SftTrainConfig,
    out_dir: &Path,
    progress: impl FnMut(&SftMetrics, u64),
) -> Result<SftReport> {
    let examples = read_examples(data)?;
    train_sft(model, tokenizer, &examples, cfg, out_dir, progress)
}
