//! The preference trainer: AdamW, schedule, accumulation, clipping, metrics, checkpoints.
//!
//! One optimizer step:
//! 1. for each of its `gradient_accumulation_steps` micro-batches: one forward of the
//!    concatenated `[chosen; rejected]` batch (`2B` rows) in train mode (dropout on), chunked
//!    completion log-probs without a graph, the loss on those values (graph of `2B` scalars),
//!    then [`ChunkedLogProbs::backward`] which replays the LM head chunk by chunk and
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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use tsr_model::Model;

use crate::config::{DpoConfig, TrainConfig};
use crate::data::{collate, epoch_batches, TokenizedPair};
use crate::error::{DpoError, Result};
use crate::logprobs::ScoredPositions;
use crate::loss::{dpo_loss, PairLogps};
use crate::optim::AdamW;
use crate::reference::{data_fingerprint, ReferenceLogps};

/// One optimizer step's numbers, serialised with TRL's metric names (one JSON line each).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer step, 1-based.
    pub step: u64,
    /// Fractional epoch reached after this step.
    pub epoch: f64,
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    /// Mean chosen reward `β(πc - rc)`.
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    /// Mean rejected reward.
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    /// Mean reward margin.
    #[serde(rename = "rewards/margins")]
    pub rewards_margins: f64,
    /// Fraction of pairs with chosen reward > rejected reward.
    #[serde(rename = "rewards/accuracies")]
    pub rewards_accuracies: f64,
    /// Mean summed log-prob of the chosen completions under the policy.
    #[serde(rename = "logps/chosen")]
    pub logps_chosen: f64,
    /// Mean summed log-prob of the rejected completions under the policy.
    #[serde(rename = "logps/rejected")]
    pub logps_rejected: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used for this step.
    pub learning_rate: f64,
    /// Non-padding tokens (prompt and completion, chosen and rejected) processed per second.
    #[serde(rename = "tokens/s")]
    pub tokens_per_s: f64,
    /// Pairs in this step.
    pub pairs: usize,
    /// Wall-clock seconds of this step.
    pub step_seconds: f64,
}

/// Where step metrics go.
pub trait MetricsSink {
    /// Records one step.
    fn record(&mut self, m: &StepMetrics) -> Result<()>;
}

/// Keeps every record in memory.
#[derive(Debug, Default)]
pub struct VecSink(pub Vec<StepMetrics>);

impl MetricsSink for VecSink {
    fn record(&mut self, m: &StepMetrics) -> Result<()> {
        self.0.push(m.clone());
        Ok(())
    }
}

/// Appends one JSON object per step to a file (`metrics.jsonl`), flushed after each line.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: std::fs::File,
}

impl JsonlSink {
    /// Opens `path` for appending (creating it).
    pub fn append(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DpoError::io(path, e))?;
        Ok(JsonlSink {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl MetricsSink for JsonlSink {
    fn record(&mut self, m: &StepMetrics) -> Result<()> {
        let line = serde_json::to_string(m).map_err(|e| DpoError::json(&self.path, e))?;
        writeln!(self.file, "{line}").map_err(|e| DpoError::io(&self.path, e))?;
        self.file.flush().map_err(|e| DpoError::io(&self.path, e))
    }
}

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
    batches_per_epoch: u64,
    total_micro: u64,
    total_steps: u64,
    step: u64,
    micro_done: u64,
    epoch_cache: Option<(u64, Vec<Vec<usize>>)>,
    data_key: String,
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("pairs", &self.pairs.len())
            .field("params", &self.opt.len())
            .field("step", &self.step)
            .field("total_steps", &self.total_steps)
            .finish()
    }
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
        let c = cfg.get();
        let batches_per_epoch = pairs.len().div_ceil(c.batch_size) as u64;
        let accum = c.gradient_accumulation_steps as u64;
        let (total_micro, total_steps) = match c.max_steps {
            Some(s) => (s * accum, s),
            None => {
                let m = batches_per_epoch * c.epochs;
                (m, m.div_ceil(accum))
            }
        };
        let vars: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let opt = AdamW::new(
            vars,
            c.adam_beta1,
            c.adam_beta2,
            c.adam_epsilon,
            c.weight_decay,
        )?;
        let data_key = data_fingerprint(&pairs);
        model.set_dropout(c.dropout);
        Ok(Trainer {
            model,
            cfg,
            pairs,
            reference,
            pad_id,
            opt,
            batches_per_epoch,
            total_micro,
            total_steps,
            step: 0,
            micro_done: 0,
            epoch_cache: None,
            data_key,
        })
    }

    /// Optimizer steps the run will take in total.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// Optimizer steps done so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// True when all steps are done.
    pub fn is_finished(&self) -> bool {
        self.step >= self.total_steps
    }

    /// The model being trained.
    pub fn model(&self) -> &Model {
        self.model
    }

    fn epoch_order(&mut self, epoch: u64) -> &Vec<Vec<usize>> {
        let fresh = !matches!(&self.epoch_cache, Some((e, _)) if *e == epoch);
        if fresh {
            let c = self.cfg.get();
            let order = epoch_batches(&self.pairs, c.batch_size, c.bucket_window, c.seed, epoch);
            self.epoch_cache = Some((epoch, order));
        }
        &self.epoch_cache.as_ref().expect("just set").1
    }

    fn micro_batch(&mut self, micro: u64) -> (u64, usize, Vec<usize>) {
        let epoch = micro / self.batches_per_epoch;
        let idx = (micro % self.batches_per_epoch) as usize;
        let sel = self.epoch_order(epoch)[idx].clone();
        (epoch, idx, sel)
    }

    /// Runs one optimizer step and returns its metrics, or `None` when training is finished.
    pub fn step(&mut self) -> Result<Option<StepMetrics>> {
        if self.is_finished() {
            return Ok(None);
        }
        let started = Instant::now();
        let c = self.cfg.get().clone();
        let accum = c.gradient_accumulation_steps as u64;
        let first = self.step * accum;
        let last = (first + accum).min(self.total_micro);
        let n_micro = (last - first) as f64;
        let step_no = self.step + 1;
        let device = self.model.device();
        let logprobs = *self.cfg.logprobs();
        let loss_params = *self.cfg.loss();

        let mut acc = StepMetrics::default();
        let mut pairs_seen = 0usize;
        let mut tokens = 0usize;
        for micro in first..last {
            let (_epoch, batch_idx, sel) = self.micro_batch(micro);
            let batch = collate(&self.pairs, &sel, self.pad_id, device)?;
            tch::manual_seed((c.seed.wrapping_mul(1_000_003) ^ micro) as i64);
            let t_fwd = Instant::now();
            let hidden = self
                .model
                .hidden_states(&batch.input_ids, &batch.attention_mask, true)?;
            let fwd_s = t_fwd.elapsed().as_secs_f64();
            let weight = self.model.lm_head_weight();
            let pos = ScoredPositions::new(&batch.input_ids, &batch.completion_mask)?;
            let logps = logprobs.forward(&hidden, &weight, &pos)?;
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
            logprobs.backward(&hidden, &weight, &pos, &grad)?;
            tracing::debug!(
                micro,
                rows = 2 * b,
                seq = batch.input_ids.size()[1],
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
        let lr = self.cfg.learning_rate_at(self.step, self.total_steps);
        let t_opt = Instant::now();
        let max_norm = self.cfg.get().max_grad_norm;
        let clip = if max_norm > 0.0 {
            (max_norm / (grad_norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        self.opt.step(lr, clip)?;
        tracing::debug!(optimizer_s = t_opt.elapsed().as_secs_f64(), "adamw");
        self.step += 1;
        self.micro_done = last;

        let secs = started.elapsed().as_secs_f64();
        let p = pairs_seen.max(1) as f64;
        let m = StepMetrics {
            step: self.step,
            epoch: self.micro_done as f64 / self.batches_per_epoch as f64,
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
        mut progress: impl FnMut(&StepMetrics, u64),
    ) -> Result<TrainSummary> {
        let mut last = None;
        let mut tps = Vec::new();
        let every = self.cfg.get().checkpoint_every;
        while let Some(m) = self.step()? {
            sink.record(&m)?;
            progress(&m, self.total_steps);
            tps.push(m.tokens_per_s);
            if let Some(dir) = checkpoint_dir {
                if every > 0 && self.step.is_multiple_of(every) && !self.is_finished() {
                    self.save_checkpoint(dir)?;
                }
            }
            last = Some(m);
        }
        Ok(TrainSummary {
            steps: self.step,
            pairs: self.pairs.len(),
            last,
            mean_tokens_per_s: if tps.is_empty() {
                0.0
            } else {
                tps.iter().sum::<f64>() / tps.len() as f64
            },
        })
    }

    /// Writes a checkpoint into `dir` (replacing one there): `model.safetensors` (trainable
    /// parameters), `optimizer.safetensors` (AdamW moments), `trainer_state.json` (step, data
    /// position and order, configuration, data fingerprint). Refuses to write non-finite
    /// weights.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        if let Some(name) = self.opt.first_non_finite_param()? {
            return Err(DpoError::Checkpoint {
                path: dir.to_path_buf(),
                reason: format!("parameter {name} is not finite: not saved"),
            });
        }
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| DpoError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| DpoError::io(&tmp, e))?;
        self.opt.save(
            &tmp.join("model.safetensors"),
            &tmp.join("optimizer.safetensors"),
        )?;
        let epoch = self.micro_done / self.batches_per_epoch;
        let epoch_order = epoch_batches(
            &self.pairs,
            self.cfg.get().batch_size,
            self.cfg.get().bucket_window,
            self.cfg.get().seed,
            epoch,
        );
        let state = TrainerState {
            step: self.step,
            micro_done: self.micro_done,
            config: self.cfg.get().clone(),
            data: self.data_key.clone(),
            epoch_order,
            epoch,
        };
        let sp = tmp.join("trainer_state.json");
        std::fs::write(
            &sp,
            serde_json::to_string_pretty(&state).map_err(|e| DpoError::json(&sp, e))?,
        )
        .map_err(|e| DpoError::io(&sp, e))?;
        std::fs::write(
            tmp.join("reference_logps.json"),
            serde_json::to_string(&self.reference).map_err(|e| DpoError::json(dir, e))?,
        )
        .map_err(|e| DpoError::io(dir, e))?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| DpoError::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| DpoError::io(dir, e))?;
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
        let sp = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&sp).map_err(|e| DpoError::io(&sp, e))?;
        let state: TrainerState =
            serde_json::from_str(&text).map_err(|e| DpoError::json(&sp, e))?;
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
        self.opt.load(
            &dir.join("model.safetensors"),
            &dir.join("optimizer.safetensors"),
            state.step,
        )?;
        self.step = state.step;
        self.micro_done = state.micro_done;
        if self.cfg.get().max_steps.is_none() && self.micro_done > self.total_micro {
            return Err(bad("the checkpoint is past the end of this run".into()));
        }
        tracing::info!(step = self.step, dir = %dir.display(), "resumed from checkpoint");
        Ok(())
    }
}
