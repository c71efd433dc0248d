//! The preference trainer: AdamW, schedule, accumulation, clipping, metrics, checkpoints.
//!
//! One optimizer step:
//! 1. for each of its `gradient_accumulation_steps` micro-batches: one forward of the
//!    concatenated `[chosen; rejected]` batch (`2B` rows) in train mode (dropout on), chunked
//!    completion log-probs without a graph, the loss on those values (graph of `2B` scalars),
//!    then [`ChunkedLogProbs::backward`](crate::ChunkedLogProbs::backward) which replays the LM head chunk by chunk and
//!    back-propagates through the model — so the `B × T × V` logits never exist;
//! 2. global gradient L2 norm (non-finite → [`DpoError::NonFinite`]), clipping to
//!    `max_grad_norm`;
//! 3. AdamW (decoupled weight decay, bias-corrected moments, PyTorch's formula), with the
//!    learning rate of [`TrainConfig::learning_rate_at`];
//! 4. one [`StepMetrics`] record.
//!
//! The optimizer is implemented here (not `tch::nn::Optimizer`) so that its moments can be saved:
//! a checkpoint ([`Trainer::save_checkpoint`]) holds the weights, both moments, the step, the
//! position in the data and the data order, and dropout is seeded per micro-batch from
//! `(seed, micro-batch index)`, so a resumed run equals an uninterrupted one bit for bit on CPU.
//! Dropout draws from libtorch's global generator (`tch::manual_seed`): that guarantee holds as
//! long as no other thread of the process draws random numbers from libtorch while a step runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use tsr_model::Model;

use crate::config::{DpoConfig, TrainConfig};
use crate::data::{epoch_batches, TokenizedPair};
use crate::error::{DpoError, Result};
use crate::layout::Collated;
use crate::loss::{dpo_loss, PairLogps};
pub use crate::metrics::{JsonlSink, MetricsSink, StepMetrics, VecSink};
use crate::optim::AdamW;
use crate::reference::{data_fingerprint, ReferenceLogps};
use crate::train_loop::{
    drive, load_weights, read_state, seed_dropout, write_checkpoint, EpochCache, StepPlan, Stepper,
};

/// What a finished [`Trainer::run`] reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Optimizer steps taken in total (including those before a resume).
    pub steps: u64,
    /// Pairs trained on.
    pub pairs: usize,
    /// Metrics of the last step.
    pub last: Option<StepMetrics>,
    /// Mean tokens/s over the steps of this run.
    pub mean_tokens_per_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TrainerState {
    /// Optimizer steps done.
    step: u64,
    /// Micro-batches consumed (global, across epochs).
    micro_done: u64,
    /// The configuration the run started with.
    config: DpoConfig,
    /// Fingerprint of the tokenized data.
    data: String,
    /// Batches of the epoch the next micro-batch comes from (the data order).
    epoch_order: Vec<Vec<usize>>,
    /// Epoch of `epoch_order`.
    epoch: u64,
}

/// DPO trainer over a [`Model`]. See the [module docs](self).
pub struct Trainer<'m> {
    model: &'m mut Model,
    cfg: TrainConfig,
    pairs: Vec<TokenizedPair>,
    reference: ReferenceLogps,
    pad_id: u32,
    opt: AdamW,
    plan: StepPlan,
    step: u64,
    micro_done: u64,
    epoch_cache: EpochCache,
    data_key: String,
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("pairs", &self.pairs.len())
            .field("params", &self.opt.len())
            .field("step", &self.step)
            .field("total_steps", &self.plan.total_steps)
            .finish()
    }
}

/// Refuses a batch size that cannot fit (see [`tsr_model::memory`]): a step holds `batch_size`
/// pairs (two sequences each) of at most the longest pair's length. Host memory, so the CPU only.
pub fn check_memory(model: &Model, cfg: &TrainConfig, pairs: &[TokenizedPair]) -> Result<()> {
    if model.device() != tch::Device::Cpu {
        return Ok(());
    }
    let c = cfg.get();
    let longest = pairs.iter().map(TokenizedPair::max_len).max().unwrap_or(0);
    let rows = 2 * c.batch_size.min(pairs.len());
    let checkpointed = c.gradient_checkpointing.recompute_for(model);
    crate::train_loop::step_memory(
        model,
        c.lora.as_ref(),
        rows,
        longest,
        c.logprob_chunk_tokens,
        checkpointed,
    )
    .check("lower batch_size (raise gradient_accumulation_steps to keep the effective batch) or max_length")?;
    Ok(())
}

impl<'m> Trainer<'m> {
    /// A trainer for `model` on `pairs`, whose reference log-probs are `reference` (same order,
    /// see [`crate::reference::cached_reference_logps`]). `pad_id` fills padding positions.
    pub fn new(
        model: &'m mut Model,
        cfg: TrainConfig,
        pairs: Vec<TokenizedPair>,
        reference: ReferenceLogps,
        pad_id: u32,
    ) -> Result<Self> {
        if pairs.is_empty() {
            return Err(DpoError::Data {
                path: PathBuf::from("<pairs>"),
                line: 0,
                reason: "no preference pairs to train on".into(),
            });
        }
        if reference.len() != pairs.len() {
            return Err(DpoError::Shape(format!(
                "{} reference log-probs for {} pairs",
                reference.len(),
                pairs.len()
            )));
        }
        check_memory(model, &cfg, &pairs)?;
        let optim = cfg.get().optim();
        let plan = optim.plan(pairs.len());
        let opt = optim.adamw(model)?;
        let data_key = data_fingerprint(&pairs);
        model.set_dropout(optim.dropout);
        Ok(Trainer {
            model,
            cfg,
            pairs,
            reference,
            pad_id,
            opt,
            plan,
            step: 0,
            micro_done: 0,
            epoch_cache: EpochCache::default(),
            data_key,
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

    /// The model being trained.
    pub fn model(&self) -> &Model {
        self.model
    }

    /// The whole run's micro-batches in training order, each as the `index` fields of its pairs
    /// (so another trainer can replay exactly these batches, as the DPO benchmark does with TRL).
    pub fn batch_plan(&mut self) -> Vec<Vec<usize>> {
        (0..self.plan.total_micro)
            .map(|m| {
                let (_, _, sel) = self.micro_batch(m);
                sel.iter().map(|&i| self.pairs[i].index).collect()
            })
            .collect()
    }

    fn micro_batch(&mut self, micro: u64) -> (u64, usize, Vec<usize>) {
        let (epoch, idx) = self.plan.locate(micro);
        let c = self.cfg.get();
        let pairs = &self.pairs;
        let sel = self.epoch_cache.get(epoch, |e| {
            epoch_batches(pairs, c.batch_size, c.bucket_window, c.seed, e)
        })[idx]
            .clone();
        (epoch, idx, sel)
    }

    /// Runs one optimizer step and returns its metrics, or `None` when training is finished.
    pub fn step(&mut self) -> Result<Option<StepMetrics>> {
        if self.is_finished() {
            return Ok(None);
        }
        let started = Instant::now();
        let c = self.cfg.get().clone();
        let micros = self.plan.micro_range(self.step);
        let (first, last) = (micros.start, micros.end);
        let n_micro = (last - first) as f64;
        let step_no = self.step + 1;
        let device = self.model.device();
        let logprobs = *self.cfg.logprobs();
        let loss_params = *self.cfg.loss();
        let checkpointed = c.gradient_checkpointing.recompute_for(self.model);
        let share = c
            .share_prompt
            .enabled_for(self.model, c.dropout, c.max_length);

        let mut acc = StepMetrics::default();
        let mut pairs_seen = 0usize;
        let mut tokens = 0usize;
        for micro in first..last {
            let (_epoch, batch_idx, sel) = self.micro_batch(micro);
            let batch = Collated::new(&self.pairs, &sel, self.pad_id, device, share)?;
            seed_dropout(c.seed, micro);
            let t_fwd = Instant::now();
            let forward = batch.forward(self.model, checkpointed)?;
            let hidden = &forward.hidden;
            let fwd_s = t_fwd.elapsed().as_secs_f64();
            let weight = self.model.lm_head_weight();
            let pos = &batch.scored;
            let logps = logprobs.forward(hidden, &weight, pos)?;
            let leaf = logps.f_detach()?.set_requires_grad(true);
            let b = sel.len() as i64;
            let pc = leaf.f_narrow(0, 0, b)?;
            let pr = leaf.f_narrow(0, b, b)?;
            let kind = leaf.kind();
            let rc = Tensor::from_slice(
                &sel.iter()
                    .map(|&i| self.reference.chosen[i])
                    .collect::<Vec<_>>(),
            )
            .f_to_kind(kind)?
            .f_to_device(device)?;
            let rr = Tensor::from_slice(
                &sel.iter()
                    .map(|&i| self.reference.rejected[i])
                    .collect::<Vec<_>>(),
            )
            .f_to_kind(kind)?
            .f_to_device(device)?;
            let nc = batch.completion_tokens.f_narrow(0, 0, b)?;
            let nr = batch.completion_tokens.f_narrow(0, b, b)?;
            let out = dpo_loss(
                &PairLogps {
                    policy_chosen: &pc,
                    policy_rejected: &pr,
                    ref_chosen: &rc,
                    ref_rejected: &rr,
                    chosen_tokens: &nc,
                    rejected_tokens: &nr,
                },
                &loss_params,
            )?;
            let stats = out.stats()?;
            let pair_ids = || sel.iter().map(|&i| self.pairs[i].index).collect::<Vec<_>>();
            if !stats.loss.is_finite() {
                return Err(DpoError::NonFinite {
                    what: "loss",
                    step: step_no,
                    batch: batch_idx,
                    pairs: pair_ids(),
                });
            }
            out.loss.f_div_scalar(n_micro)?.f_backward()?;
            let grad = leaf.grad();
            let t_bwd = Instant::now();
            logprobs.backward(hidden, &weight, pos, &grad)?;
            forward.finish_backward(self.model)?;
            tracing::debug!(
                micro,
                rows = batch.shape()[0],
                seq = batch.shape()[1],
                forward_s = fwd_s,
                logps_and_loss_s = t_bwd.duration_since(t_fwd).as_secs_f64() - fwd_s,
                backward_s = t_bwd.elapsed().as_secs_f64(),
                "micro-batch"
            );

            let w = sel.len() as f64;
            acc.loss += stats.loss / n_micro;
            acc.rewards_chosen += stats.rewards_chosen * w;
            acc.rewards_rejected += stats.rewards_rejected * w;
            acc.rewards_margins += stats.rewards_margins * w;
            acc.rewards_accuracies += stats.rewards_accuracies * w;
            acc.logps_chosen += pc.f_sum(Kind::Double)?.f_double_value(&[])?;
            acc.logps_rejected += pr.f_sum(Kind::Double)?.f_double_value(&[])?;
            pairs_seen += sel.len();
            tokens += batch.real_tokens;
            let check_now = n_micro > 1.0;
            if let Some(bad) = if check_now {
                self.opt.first_non_finite_grad()?.map(str::to_string)
            } else {
                None
            } {
                tracing::error!(param = %bad, step = step_no, "non-finite gradient");
                return Err(DpoError::NonFinite {
                    what: "gradient",
                    step: step_no,
                    batch: batch_idx,
                    pairs: pair_ids(),
                });
            }
        }
        let grad_norm = self.opt.grad_norm()?;
        if !grad_norm.is_finite() {
            let (_, batch_idx, sel) = self.micro_batch(last - 1);
            let pairs = sel.iter().map(|&i| self.pairs[i].index).collect();
            return Err(DpoError::NonFinite {
                what: "gradient",
                step: step_no,
                batch: batch_idx,
                pairs,
            });
        }
        let lr = self.cfg.learning_rate_at(self.step, self.plan.total_steps);
        let t_opt = Instant::now();
        c.optim().update(&mut self.opt, lr, grad_norm)?;
        tracing::debug!(optimizer_s = t_opt.elapsed().as_secs_f64(), "adamw");
        self.step += 1;
        self.micro_done = last;

        let secs = started.elapsed().as_secs_f64();
        let p = pairs_seen.max(1) as f64;
        let m = StepMetrics {
            step: self.step,
            epoch: self.micro_done as f64 / self.plan.batches_per_epoch as f64,
            loss: acc.loss,
            rewards_chosen: acc.rewards_chosen / p,
            rewards_rejected: acc.rewards_rejected / p,
            rewards_margins: acc.rewards_margins / p,
            rewards_accuracies: acc.rewards_accuracies / p,
            logps_chosen: acc.logps_chosen / p,
            logps_rejected: acc.logps_rejected / p,
            grad_norm,
            learning_rate: lr,
            tokens_per_s: tokens as f64 / secs.max(1e-9),
            pairs: pairs_seen,
            step_seconds: secs,
        };
        tracing::debug!(step = m.step, loss = m.loss, grad_norm, lr, "dpo step");
        Ok(Some(m))
    }

    /// Runs the remaining steps, recording each to `sink`, checkpointing every
    /// `checkpoint_every` steps into `checkpoint_dir` (when given), and calling `progress`
    /// after each step.
    pub fn run(
        &mut self,
        sink: &mut dyn MetricsSink,
        checkpoint_dir: Option<&Path>,
        progress: impl FnMut(&StepMetrics, u64),
    ) -> Result<TrainSummary> {
        let (last, mean_tokens_per_s) =
            drive(self, sink, checkpoint_dir, progress, |m| m.tokens_per_s)?;
        Ok(TrainSummary {
            steps: self.step,
            pairs: self.pairs.len(),
            last,
            mean_tokens_per_s,
        })
    }

    /// Writes a checkpoint into `dir` (replacing one there): `model.safetensors` (trainable
    /// parameters), `optimizer.safetensors` (AdamW moments), `trainer_state.json` (step, data
    /// position and order, configuration, data fingerprint). Refuses to write non-finite
    /// weights.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let c = self.cfg.get();
        let epoch = self.micro_done / self.plan.batches_per_epoch;
        let epoch_order = epoch_batches(&self.pairs, c.batch_size, c.bucket_window, c.seed, epoch);
        let state = TrainerState {
            step: self.step,
            micro_done: self.micro_done,
            config: c.clone(),
            data: self.data_key.clone(),
            epoch_order,
            epoch,
        };
        let sp = dir.join("trainer_state.json");
        let state = serde_json::to_string_pretty(&state).map_err(|e| DpoError::json(&sp, e))?;
        let reference =
            serde_json::to_string(&self.reference).map_err(|e| DpoError::json(dir, e))?;
        write_checkpoint(
            dir,
            &self.opt,
            &[
                ("trainer_state.json", state),
                ("reference_logps.json", reference),
            ],
        )?;
        tracing::info!(step = self.step, dir = %dir.display(), "checkpoint written");
        Ok(())
    }

    /// Restores a checkpoint written by [`save_checkpoint`](Self::save_checkpoint) for the same
    /// model architecture, data and configuration (`checkpoint_every`, `max_steps` and `epochs`
    /// may differ).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let bad = |reason: String| DpoError::Checkpoint {
            path: dir.to_path_buf(),
            reason,
        };
        let state: TrainerState = read_state(dir)?;
        if state.data != self.data_key {
            return Err(bad("the checkpoint was trained on other data".into()));
        }
        let mut mine = self.cfg.get().clone();
        let mut theirs = state.config.clone();
        for c in [&mut mine, &mut theirs] {
            c.checkpoint_every = 0;
            c.max_steps = None;
            c.epochs = 1;
        }
        if mine != theirs {
            return Err(bad(
                "the checkpoint was trained with another configuration".into()
            ));
        }
        let expected = epoch_batches(
            &self.pairs,
            mine.batch_size,
            mine.bucket_window,
            mine.seed,
            state.epoch,
        );
        if expected != state.epoch_order {
            return Err(bad("the saved data order differs from this run's".into()));
        }
        load_weights(&mut self.opt, dir, state.step)?;
        self.step = state.step;
        self.micro_done = state.micro_done;
        if self.cfg.get().max_steps.is_none() && self.micro_done > self.plan.total_micro {
            return Err(bad("the checkpoint is past the end of this run".into()));
        }
        tracing::info!(step = self.step, dir = %dir.display(), "resumed from checkpoint");
        Ok(())
    }
}

impl Stepper for Trainer<'_> {
    type Metrics = StepMetrics;
    fn next_step(&mut self) -> Result<Option<StepMetrics>> {
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
