//! The SFT trainer: cross-entropy on learned tokens, with the DPO trainer's optimizer,
//! schedule, accumulation, clipping, checkpoints and metrics conventions.
//!
//! One optimizer step:
//! 1. count `N`, the learned tokens of all the step's micro-batches;
//! 2. per micro-batch: forward in train mode, then the LM head only at the positions that
//!    predict a learned token, in chunks ([`ChunkedLogProbs`]: the `B × T × V` logits never
//!    exist); the micro-batch's loss is `−Σ log p / N` and its gradient is replayed chunk by
//!    chunk. Summed over the micro-batches this is the mean cross-entropy over every learned
//!    token of the step, which is what transformers' `Trainer` computes under gradient
//!    accumulation (it divides each micro-batch's summed loss by `num_items_in_batch`, the
//!    step's label count), so the loss does not depend on how the step is split;
//! 3. global gradient norm (non-finite → [`DpoError::NonFinite`], before any update), clipping,
//!    AdamW at [`SftTrainConfig::learning_rate_at`];
//! 4. one [`SftMetrics`] record.
//!
//! A checkpoint holds the trainable weights, the AdamW moments, the step, the data position and
//! order and the token count; dropout is seeded per micro-batch, so resuming on CPU gives the
//! weights an uninterrupted run gives, bit for bit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use tsr_model::Model;

use crate::checkpointing::Hidden;
use crate::data::epoch_batches_by_length;
use crate::error::{DpoError, Result};
use crate::logprobs::{ChunkedLogProbs, ScoredPositions};
use crate::optim::AdamW;
use crate::sft::batch::{collate_rows, rows_fingerprint, SftRow};
use crate::sft::config::{SftConfig, SftTrainConfig};
use crate::train_loop::{
    drive, load_weights, read_state, seed_dropout, write_checkpoint, EpochCache, StepPlan, Stepper,
};
use crate::trainer::MetricsSink;

/// One optimizer step's numbers, with TRL's `SFTTrainer` metric names (one JSON line each).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SftMetrics {
    /// Optimizer step, 1-based.
    pub step: u64,
    /// Fractional epoch reached after this step.
    pub epoch: f64,
    /// Mean cross-entropy over the learned tokens of the step.
    pub loss: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used for this step.
    pub learning_rate: f64,
    /// Tokens (non-padding, learned or not) trained on since the start of the run.
    pub num_tokens: u64,
    /// Share of learned tokens whose arg-max prediction is right (over the step's tokens).
    pub mean_token_accuracy: f64,
    /// Learned tokens in this step.
    pub learned_tokens: usize,
    /// Rows (examples, or packed rows) in this step.
    pub rows: usize,
    /// Non-padding tokens processed per second.
    #[serde(rename = "tokens/s")]
    pub tokens_per_s: f64,
    /// Wall-clock seconds of this step.
    pub step_seconds: f64,
}

/// What a finished [`SftTrainer::run`] reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SftSummary {
    /// Optimizer steps taken in total (including those before a resume).
    pub steps: u64,
    /// Training rows.
    pub rows: usize,
    /// Examples in those rows.
    pub examples: usize,
    /// Metrics of the last step.
    pub last: Option<SftMetrics>,
    /// Mean tokens/s over the steps of this run.
    pub mean_tokens_per_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SftState {
    step: u64,
    micro_done: u64,
    num_tokens: u64,
    config: SftConfig,
    data: String,
    epoch: u64,
    epoch_order: Vec<Vec<usize>>,
}

/// Parameters left out of training by `train_last_layers`: the embedding and the decoder layers
/// before the last `n`.
fn frozen_names(model: &Model, n: usize) -> impl Fn(&str) -> bool {
    let first_trained = model.config().num_hidden_layers.saturating_sub(n);
    move |name: &str| {
        if name == "model.embed_tokens.weight" {
            return true;
        }
        name.strip_prefix("model.layers.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|l| l.parse::<usize>().ok())
            .is_some_and(|l| l < first_trained)
    }
}

/// SFT trainer over a [`Model`]. See the [module docs](self).
pub struct SftTrainer<'m> {
    model: &'m mut Model,
    cfg: SftTrainConfig,
    rows: Vec<SftRow>,
    pad_id: u32,
    opt: AdamW,
    plan: StepPlan,
    step: u64,
    micro_done: u64,
    num_tokens: u64,
    epoch_cache: EpochCache,
    data_key: String,
    frozen: Vec<Tensor>,
}

impl std::fmt::Debug for SftTrainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftTrainer")
            .field("rows", &self.rows.len())
            .field("params", &self.opt.len())
            .field("frozen", &self.frozen.len())
            .field("step", &self.step)
            .field("total_steps", &self.plan.total_steps)
            .finish()
    }
}

impl Drop for SftTrainer<'_> {
    /// Parameters frozen by `train_last_layers` become trainable again.
    fn drop(&mut self) {
        for t in &self.frozen {
            let _ = t.set_requires_grad(true);
        }
    }
}

impl<'m> SftTrainer<'m> {
    /// A trainer for `model` on `rows` (see [`crate::sft::make_rows`]); `pad_id` fills padding.
    /// With `train_last_layers`, the frozen parameters stop requiring gradients until the
    /// trainer is dropped.
    pub fn new(
        model: &'m mut Model,
        cfg: SftTrainConfig,
        rows: Vec<SftRow>,
        pad_id: u32,
    ) -> Result<Self> {
        if rows.is_empty() {
            return Err(DpoError::Data {
                path: PathBuf::from("<examples>"),
                line: 0,
                reason: "no sft examples with a learned token to train on".into(),
            });
        }
        if let Some((i, _)) = rows.iter().enumerate().find(|(_, r)| {
            r.learned() == 0
                || r.labels.len() != r.ids.len()
                || r.segments.iter().sum::<usize>() != r.ids.len()
        }) {
            return Err(DpoError::Shape(format!(
                "sft row {i}: needs a learned token, one label per id and segments covering the row"
            )));
        }
        let c = cfg.get();
        if model.device() == tch::Device::Cpu {
            let longest = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
            crate::train_loop::step_memory(
                model,
                c.lora.as_ref(),
                c.batch_size.min(rows.len()),
                longest,
                c.logprob_chunk_tokens,
                c.gradient_checkpointing.recompute_for(model),
            )
            .check("lower batch_size (raise gradient_accumulation_steps to keep the effective batch) or max_length")?;
        }
        let mut frozen = Vec::new();
        if let Some(n) = c.train_last_layers {
            let is_frozen = frozen_names(model, n);
            for (name, t) in model.var_store().variables() {
                if is_frozen(&name) && t.requires_grad() {
                    frozen.push(t.set_requires_grad(false));
                }
            }
        }
        let optim = c.optim();
        let plan = optim.plan(rows.len());
        let opt = optim.adamw(model)?;
        model.set_dropout(optim.dropout);
        let data_key = rows_fingerprint(&rows);
        Ok(SftTrainer {
            model,
            cfg,
            rows,
            pad_id,
            opt,
            plan,
            step: 0,
            micro_done: 0,
            num_tokens: 0,
            epoch_cache: EpochCache::default(),
            data_key,
            frozen,
        })
    }

    /// Optimizer steps the run will take in total.
    pub fn total_steps(&self) -> u64 {
        self.plan.total_steps
    }

    /// Optimizer steps done so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// True when all steps are done.
    pub fn is_finished(&self) -> bool {
        self.step >= self.plan.total_steps
    }

    /// Number of parameter tensors being trained.
    pub fn trained_tensors(&self) -> usize {
        self.opt.len()
    }

    /// The model being trained.
    pub fn model(&self) -> &Model {
        self.model
    }

    fn epoch_order(rows: &[SftRow], c: &SftConfig, epoch: u64) -> Vec<Vec<usize>> {
        let lengths: Vec<usize> = rows.iter().map(|r| r.ids.len()).collect();
        epoch_batches_by_length(&lengths, c.batch_size, c.bucket_window, c.seed, epoch)
    }

    fn micro_batch(&mut self, micro: u64) -> (usize, Vec<usize>) {
        let (epoch, idx) = self.plan.locate(micro);
        let (rows, c) = (&self.rows, self.cfg.get());
        let sel = self
            .epoch_cache
            .get(epoch, |e| Self::epoch_order(rows, c, e))[idx]
            .clone();
        (idx, sel)
    }

    fn examples_of(&self, sel: &[usize]) -> Vec<usize> {
        sel.iter()
            .flat_map(|&i| self.rows[i].examples.iter().copied())
            .collect()
    }

    /// Runs one optimizer step and returns its metrics, or `None` when training is finished.
    pub fn step(&mut self) -> Result<Option<SftMetrics>> {
        if self.is_finished() {
            return Ok(None);
        }
        let started = Instant::now();
        let c = self.cfg.get().clone();
        let logprobs: ChunkedLogProbs = *self.cfg.logprobs();
        let checkpointed = c.gradient_checkpointing.recompute_for(self.model);
        let micros = self.plan.micro_range(self.step);
        let step_no = self.step + 1;
        let device = self.model.device();
        let batches: Vec<(u64, usize, Vec<usize>)> = micros
            .clone()
            .map(|m| {
                let (idx, sel) = self.micro_batch(m);
                (m, idx, sel)
            })
            .collect();
        let learned: usize = batches
            .iter()
            .flat_map(|(_, _, sel)| sel.iter().map(|&i| self.rows[i].learned()))
            .sum();
        let norm = learned as f64;

        let (mut loss, mut hits, mut tokens, mut rows) = (0.0f64, 0i64, 0usize, 0usize);
        for (micro, batch_idx, sel) in &batches {
            let batch = collate_rows(&self.rows, sel, self.pad_id, device)?;
            seed_dropout(c.seed, *micro);
            let forward = if c.packing {
                Hidden::segmented(
                    self.model,
                    &batch.input_ids,
                    &batch.positions,
                    &batch.segment_ids,
                    false,
                    checkpointed,
                )?
            } else {
                Hidden::padded(
                    self.model,
                    &batch.input_ids,
                    &batch.attention_mask,
                    checkpointed,
                )?
            };
            let hidden = &forward.hidden;
            let weight = self.model.lm_head_weight();
            let pos = ScoredPositions::new(&batch.input_ids, &batch.label_mask)?;
            let (sums, batch_hits) = logprobs.forward_with_hits(hidden, &weight, &pos)?;
            let sum_logp = sums.f_sum(Kind::Double)?.f_double_value(&[])?;
            if !sum_logp.is_finite() {
                return Err(DpoError::NonFinite {
                    what: "loss",
                    step: step_no,
                    batch: *batch_idx,
                    pairs: self.examples_of(sel),
                });
            }
            let grad = Tensor::f_full([sel.len() as i64], -1.0 / norm, (sums.kind(), device))?;
            logprobs.backward(hidden, &weight, &pos, &grad)?;
            forward.finish_backward(self.model)?;
            loss -= sum_logp / norm;
            hits += batch_hits;
            tokens += batch.real_tokens;
            rows += sel.len();
            if batches.len() > 1 {
                if let Some(bad) = self.opt.first_non_finite_grad()? {
                    tracing::error!(param = %bad, step = step_no, "non-finite gradient");
                    return Err(DpoError::NonFinite {
                        what: "gradient",
                        step: step_no,
                        batch: *batch_idx,
                        pairs: self.examples_of(sel),
                    });
                }
            }
        }
        let grad_norm = self.opt.grad_norm()?;
        if !grad_norm.is_finite() {
            let (_, batch_idx, sel) = batches.last().expect("a step has micro-batches");
            return Err(DpoError::NonFinite {
                what: "gradient",
                step: step_no,
                batch: *batch_idx,
                pairs: self.examples_of(sel),
            });
        }
        let lr = self.cfg.learning_rate_at(self.step, self.plan.total_steps);
        c.optim().update(&mut self.opt, lr, grad_norm)?;
        self.step += 1;
        self.micro_done = micros.end;
        self.num_tokens += tokens as u64;

        let secs = started.elapsed().as_secs_f64();
        let m = SftMetrics {
            step: self.step,
            epoch: self.micro_done as f64 / self.plan.batches_per_epoch as f64,
            loss,
            grad_norm,
            learning_rate: lr,
            num_tokens: self.num_tokens,
            mean_token_accuracy: hits as f64 / norm,
            learned_tokens: learned,
            rows,
            tokens_per_s: tokens as f64 / secs.max(1e-9),
            step_seconds: secs,
        };
        tracing::debug!(step = m.step, loss = m.loss, grad_norm, lr, "sft step");
        Ok(Some(m))
    }

    /// Runs the remaining steps, recording each to `sink`, checkpointing every
    /// `checkpoint_every` steps into `checkpoint_dir` (when given), and calling `progress`
    /// after each step with the metrics and the total step count.
    pub fn run(
        &mut self,
        sink: &mut dyn MetricsSink<SftMetrics>,
        checkpoint_dir: Option<&Path>,
        progress: impl FnMut(&SftMetrics, u64),
    ) -> Result<SftSummary> {
        let (last, mean_tokens_per_s) =
            drive(self, sink, checkpoint_dir, progress, |m| m.tokens_per_s)?;
        Ok(SftSummary {
            steps: self.step,
            rows: self.rows.len(),
            examples: self.rows.iter().map(|r| r.examples.len()).sum(),
            last,
            mean_tokens_per_s,
        })
    }

    /// Writes a checkpoint into `dir` (replacing one there): `model.safetensors` (trained
    /// parameters), `optimizer.safetensors` (AdamW moments), `trainer_state.json` (step, data
    /// position and order, token count, configuration, data fingerprint). Refuses non-finite
    /// weights.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let c = self.cfg.get();
        let epoch = self.micro_done / self.plan.batches_per_epoch;
        let state = SftState {
            step: self.step,
            micro_done: self.micro_done,
            num_tokens: self.num_tokens,
            config: c.clone(),
            data: self.data_key.clone(),
            epoch,
            epoch_order: Self::epoch_order(&self.rows, c, epoch),
        };
        let sp = dir.join("trainer_state.json");
        let text = serde_json::to_string_pretty(&state).map_err(|e| DpoError::json(&sp, e))?;
        write_checkpoint(dir, &self.opt, &[("trainer_state.json", text)])?;
        tracing::info!(step = self.step, dir = %dir.display(), "checkpoint written");
        Ok(())
    }

    /// Restores a checkpoint written by [`save_checkpoint`](Self::save_checkpoint) for the same
    /// model architecture, data and configuration (`checkpoint_every`, `max_steps` and `epochs`
    /// may differ).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let bad = |reason: &str| DpoError::Checkpoint {
            path: dir.to_path_buf(),
            reason: reason.into(),
        };
        let state: SftState = read_state(dir)?;
        if state.data != self.data_key {
            return Err(bad("the checkpoint was trained on other data"));
        }
        let mut mine = self.cfg.get().clone();
        let mut theirs = state.config.clone();
        for c in [&mut mine, &mut theirs] {
            c.checkpoint_every = 0;
            c.max_steps = None;
            c.epochs = 1;
        }
        if mine != theirs {
            return Err(bad("the checkpoint was trained with another configuration"));
        }
        if Self::epoch_order(&self.rows, &mine, state.epoch) != state.epoch_order {
            return Err(bad("the saved data order differs from this run's"));
        }
        if self.cfg.get().max_steps.is_none() && state.micro_done > self.plan.total_micro {
            return Err(bad("the checkpoint is past the end of this run"));
        }
        load_weights(&mut self.opt, dir, state.step)?;
        self.step = state.step;
        self.micro_done = state.micro_done;
        self.num_tokens = state.num_tokens;
        tracing::info!(step = self.step, dir = %dir.display(), "resumed from checkpoint");
        Ok(())
    }
}

impl Stepper for SftTrainer<'_> {
    type Metrics = SftMetrics;
    fn next_step(&mut self) -> Result<Option<SftMetrics>> {
        self.step()
    }
    fn done(&self) -> u64 {
        self.step
    }
    fn total(&self) -> u64 {
        self.plan.total_steps
    }
    fn checkpoint_every(&self) -> u64 {
        self.cfg.get().checkpoint_every
    }
    fn checkpoint(&self, dir: &Path) -> Result<()> {
        self.save_checkpoint(dir)
    }
}
