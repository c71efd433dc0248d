//! What the DPO and SFT trainers share: the optimisation settings and their checks, the step
//! plan (micro-batches → optimizer steps, epochs), the per-epoch data order cache, the clipped
//! AdamW update, the run loop and the checkpoint directory.
//!
//! Both trainers consume their data the same way: micro-batch `k` (global, counted across
//! epochs) is batch `k mod batches_per_epoch` of epoch `k div batches_per_epoch`, and optimizer
//! step `s` covers micro-batches `s·accum .. (s+1)·accum`.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tsr_model::Model;

use crate::error::{DpoError, Result};
use crate::metrics::MetricsSink;
use crate::optim::AdamW;

/// Shape of the learning-rate decay after warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Straight line from `learning_rate` to `final_learning_rate`.
    #[default]
    Linear,
    /// Half cosine from `learning_rate` to `final_learning_rate`.
    Cosine,
    /// `learning_rate` throughout (after warm-up).
    Constant,
}

/// The optimisation fields both configurations carry (see [`crate::DpoConfig`] and
/// [`crate::SftConfig`] for their meaning and defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct OptimSettings {
    pub learning_rate: f64,
    pub final_learning_rate: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub max_grad_norm: f64,
    pub dropout: f64,
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub epochs: u64,
    pub max_steps: Option<u64>,
    pub max_length: usize,
}

/// A rejected field and why; each configuration turns it into its own error.
pub(crate) type FieldError = (&'static str, String);

fn positive(field: &'static str, v: f64) -> std::result::Result<(), FieldError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err((field, format!("must be finite and > 0, got {v}")))
    }
}

impl OptimSettings {
    /// Checks the shared fields.
    pub fn check(&self) -> std::result::Result<(), FieldError> {
        positive("learning_rate", self.learning_rate)?;
        if !(self.final_learning_rate.is_finite()
            && self.final_learning_rate >= 0.0
            && self.final_learning_rate <= self.learning_rate)
        {
            return Err((
                "final_learning_rate",
                format!(
                    "must lie in [0, learning_rate], got {}",
                    self.final_learning_rate
                ),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(("weight_decay", "must be >= 0".into()));
        }
        for (f, v) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err((f, format!("must lie in [0, 1), got {v}")));
            }
        }
        positive("adam_epsilon", self.adam_epsilon)?;
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return Err(("max_grad_norm", "must be >= 0 (0 disables clipping)".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err((
                "dropout",
                format!("must lie in [0, 1), got {}", self.dropout),
            ));
        }
        for (f, v) in [
            ("batch_size", self.batch_size),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps,
            ),
        ] {
            if v == 0 {
                return Err((f, "must be > 0".into()));
            }
        }
        if self.max_length < 2 {
            return Err(("max_length", "must be >= 2".into()));
        }
        if self.max_steps.is_none() && self.epochs == 0 {
            return Err(("epochs", "must be > 0 when max_steps is not set".into()));
        }
        if self.max_steps == Some(0) {
            return Err(("max_steps", "must be > 0".into()));
        }
        Ok(())
    }

    /// Learning rate of optimizer step `step` (0-based) out of `total`: linear warm-up from 0
    /// over `warmup_steps`, then the schedule from `learning_rate` to `final_learning_rate`,
    /// reached at the last step.
    pub fn learning_rate_at(&self, step: u64, total: u64) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * step as f64 / self.warmup_steps as f64;
        }
        let span = total
            .saturating_sub(self.warmup_steps)
            .saturating_sub(1)
            .max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).clamp(0.0, 1.0);
        let (hi, lo) = (self.learning_rate, self.final_learning_rate);
        match self.lr_schedule {
            LrSchedule::Constant => hi,
            LrSchedule::Linear => lo + (hi - lo) * (1.0 - progress),
            LrSchedule::Cosine => {
                lo + (hi - lo) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// AdamW over the parameters of `model` that require a gradient.
    pub fn adamw(&self, model: &Model) -> Result<AdamW> {
        let vars: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        AdamW::new(
            vars,
            self.adam_beta1,
            self.adam_beta2,
            self.adam_epsilon,
            self.weight_decay,
        )
    }

    /// How `items` training rows turn into micro-batches and optimizer steps.
    pub fn plan(&self, items: usize) -> StepPlan {
        let batches_per_epoch = items.div_ceil(self.batch_size) as u64;
        let accum = self.gradient_accumulation_steps as u64;
        let (total_micro, total_steps) = match self.max_steps {
            Some(s) => (s * accum, s),
            None => {
                let m = batches_per_epoch * self.epochs;
                (m, m.div_ceil(accum))
            }
        };
        StepPlan {
            batches_per_epoch,
            total_micro,
            total_steps,
            accum,
        }
    }

    /// Clips the gradients to `max_grad_norm` (given their norm) and takes one AdamW step at
    /// learning rate `lr`; releases the gradients.
    pub fn update(&self, opt: &mut AdamW, lr: f64, grad_norm: f64) -> Result<()> {
        let clip = if self.max_grad_norm > 0.0 {
            (self.max_grad_norm / (grad_norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        opt.step(lr, clip)
    }
}

/// Micro-batches and optimizer steps of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StepPlan {
    pub batches_per_epoch: u64,
    pub total_micro: u64,
    pub total_steps: u64,
    pub accum: u64,
}

impl StepPlan {
    /// `(epoch, batch index within the epoch)` of global micro-batch `micro`.
    pub fn locate(&self, micro: u64) -> (u64, usize) {
        (
            micro / self.batches_per_epoch,
            (micro % self.batches_per_epoch) as usize,
        )
    }

    /// The micro-batches of optimizer step `step` (0-based).
    pub fn micro_range(&self, step: u64) -> std::ops::Range<u64> {
        let first = step * self.accum;
        first..(first + self.accum).min(self.total_micro)
    }
}

/// The batches of the current epoch, recomputed when the epoch changes.
#[derive(Debug, Default)]
pub(crate) struct EpochCache(Option<(u64, Vec<Vec<usize>>)>);

impl EpochCache {
    /// The batches of `epoch`, made by `make` unless cached.
    pub fn get(&mut self, epoch: u64, make: impl FnOnce(u64) -> Vec<Vec<usize>>) -> &[Vec<usize>] {
        if !matches!(&self.0, Some((e, _)) if *e == epoch) {
            self.0 = Some((epoch, make(epoch)));
        }
        &self.0.as_ref().expect("just set").1
    }
}

/// Seeds libtorch's global generator (dropout) for global micro-batch `micro`, so a resumed run
/// draws what an uninterrupted one draws.
pub(crate) fn seed_dropout(seed: u64, micro: u64) {
    tch::manual_seed((seed.wrapping_mul(1_000_003) ^ micro) as i64);
}

/// A trainer the run loop can drive.
pub(crate) trait Stepper {
    /// Per-step record.
    type Metrics;
    /// One optimizer step, `None` when finished.
    fn next_step(&mut self) -> Result<Option<Self::Metrics>>;
    /// Steps done.
    fn done(&self) -> u64;
    /// Steps in the run.
    fn total(&self) -> u64;
    /// Checkpoint period (0 = never).
    fn checkpoint_every(&self) -> u64;
    /// Writes a checkpoint into `dir`.
    fn checkpoint(&self, dir: &Path) -> Result<()>;
}

/// Runs the remaining steps of `s`: records each, reports progress, checkpoints every
/// `checkpoint_every` steps (not after the last one). Returns the last step's metrics and the
/// mean of `rate` over the steps run.
pub(crate) fn drive<S: Stepper>(
    s: &mut S,
    sink: &mut dyn MetricsSink<S::Metrics>,
    checkpoint_dir: Option<&Path>,
    mut progress: impl FnMut(&S::Metrics, u64),
    rate: impl Fn(&S::Metrics) -> f64,
) -> Result<(Option<S::Metrics>, f64)> {
    let mut last = None;
    let mut rates = Vec::new();
    let every = s.checkpoint_every();
    while let Some(m) = s.next_step()? {
        sink.record(&m)?;
        progress(&m, s.total());
        rates.push(rate(&m));
        if let Some(dir) = checkpoint_dir {
            if every > 0 && s.done().is_multiple_of(every) && s.done() < s.total() {
                s.checkpoint(dir)?;
            }
        }
        last = Some(m);
    }
    let mean = if rates.is_empty() {
        0.0
    } else {
        rates.iter().sum::<f64>() / rates.len() as f64
    };
    Ok((last, mean))
}

/// Writes a checkpoint directory atomically (`tsr_io::replace_dir`: written aside, then renamed
/// over `dir`):
/// `model.safetensors` and `optimizer.safetensors` from `opt`, plus `files` (name, contents).
/// Refuses non-finite weights.
pub(crate) fn write_checkpoint(dir: &Path, opt: &AdamW, files: &[(&str, String)]) -> Result<()> {
    if let Some(name) = opt.first_non_finite_param()? {
        return Err(DpoError::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("parameter {name} is not finite: not saved"),
        });
    }
    tsr_io::replace_dir(dir, |tmp| {
        opt.save(
            &tmp.join("model.safetensors"),
            &tmp.join("optimizer.safetensors"),
        )?;
        for (name, text) in files {
            let p = tmp.join(name);
            std::fs::write(&p, text).map_err(|e| DpoError::io(&p, e))?;
        }
        Ok(())
    })
    .map_err(|e| e.into_error(|e| DpoError::io(dir, e)))?;
    Ok(())
}

/// Reads `dir/trainer_state.json`.
pub(crate) fn read_state<S: DeserializeOwned>(dir: &Path) -> Result<S> {
    let sp = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&sp).map_err(|e| DpoError::io(&sp, e))?;
    serde_json::from_str(&text).map_err(|e| DpoError::json(&sp, e))
}

/// Restores weights and moments of a checkpoint directory into `opt`.
pub(crate) fn load_weights(opt: &mut AdamW, dir: &Path, step: u64) -> Result<()> {
    opt.load(
        &dir.join("model.safetensors"),
        &dir.join("optimizer.safetensors"),
        step,
    )
}

/// The host memory of one training step on `rows` sequences of up to `tokens` tokens: full
/// fine-tuning, or LoRA when `lora` is set (frozen weights without optimizer state).
pub(crate) fn step_memory(
    model: &Model,
    lora: Option<&tsr_model::LoraConfig>,
    rows: usize,
    tokens: usize,
    logit_tokens: usize,
    checkpointing: Option<tsr_model::Recompute>,
) -> tsr_model::memory::Estimate {
    match lora {
        None => {
            tsr_model::memory::training(model.config(), rows, tokens, logit_tokens, checkpointing)
        }
        Some(l) => tsr_model::memory::lora_training(
            model.config(),
            l,
            rows,
            tokens,
            logit_tokens,
            checkpointing,
            model.kind().elt_size_in_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_and_locate() {
        let s = OptimSettings {
            learning_rate: 1.0,
            final_learning_rate: 0.0,
            lr_schedule: LrSchedule::Linear,
            warmup_steps: 0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            dropout: 0.0,
            batch_size: 2,
            gradient_accumulation_steps: 2,
            epochs: 2,
            max_steps: None,
            max_length: 8,
        };
        let p = s.plan(5);
        assert_eq!(
            (p.batches_per_epoch, p.total_micro, p.total_steps),
            (3, 6, 3)
        );
        assert_eq!(p.locate(4), (1, 1));
        assert_eq!(p.micro_range(2), 4..6);
        let p = OptimSettings {
            max_steps: Some(4),
            ..s
        }
        .plan(5);
        assert_eq!((p.total_micro, p.total_steps), (8, 4));
        assert_eq!(
            OptimSettings { batch_size: 0, ..s }.check().unwrap_err().0,
            "batch_size"
        );
    }
}
