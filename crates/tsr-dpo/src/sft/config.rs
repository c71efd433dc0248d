//! [`SftConfig`]: the settings of a supervised fine-tuning run, and its checked form
//! [`SftTrainConfig`].

use serde::{Deserialize, Serialize};

use tsr_model::LoraConfig;

use crate::checkpointing::GradientCheckpointing;
use crate::config::LrSchedule;
use crate::error::{DpoError, Result};
use crate::logprobs::{ChunkedLogProbs, DEFAULT_CHUNK_TOKENS};
use crate::train_loop::OptimSettings;

/// SFT configuration. Every field has a default (see [`SftConfig::default`]); unknown keys are
/// rejected. Validate with [`SftConfig::validate`] before use.
///
/// Defaults are TRL's `SFTConfig` / transformers' `TrainingArguments` defaults (learning rate
/// 2e-5 decaying linearly, 8 examples per batch, 3 epochs, max length 1024, AdamW with
/// β = (0.9, 0.999), ε = 1e-8, no weight decay, gradient clipping at 1.0), except where noted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// Peak learning rate. Default 2e-5 (TRL).
    pub learning_rate: f64,
    /// Learning rate reached at the last step. Default 0. Ignored by `constant`.
    pub final_learning_rate: f64,
    /// Decay after warm-up. Default `linear`. tsr's linear schedule reaches
    /// `final_learning_rate` at the last step; transformers' reaches 0 one step after it.
    pub lr_schedule: LrSchedule,
    /// Linear warm-up steps from 0 to `learning_rate`. Default 0.
    pub warmup_steps: u64,
    /// Decoupled (AdamW) weight decay; not applied to biases and norm weights. Default 0.
    pub weight_decay: f64,
    /// Adam β1. Default 0.9.
    pub adam_beta1: f64,
    /// Adam β2. Default 0.999.
    pub adam_beta2: f64,
    /// Adam ε. Default 1e-8.
    pub adam_epsilon: f64,
    /// Clip the global gradient L2 norm to this; 0 disables. Default 1.0.
    pub max_grad_norm: f64,
    /// Rows (examples, or packed rows) per micro-batch. Default 8 (TRL).
    pub batch_size: usize,
    /// Micro-batches per optimizer step. Default 1.
    pub gradient_accumulation_steps: usize,
    /// Passes over the data. Default 3 (TRL). Ignored when `max_steps` is set.
    pub epochs: u64,
    /// Stop after this many optimizer steps (epochs repeat as needed). Default none.
    pub max_steps: Option<u64>,
    /// Dropout probability while training. Default 0.
    pub dropout: f64,
    /// Token budget per example (and per packed row). Default 1024 (TRL).
    pub max_length: usize,
    /// Pack several examples into each row of `max_length` tokens, each example still attending
    /// only to itself. Default false (TRL).
    pub packing: bool,
    /// Seed of the data order and of dropout. Default 42.
    pub seed: u64,
    /// Learned tokens per LM-head chunk (memory vs. speed). Default 256.
    pub logprob_chunk_tokens: usize,
    /// Batches per length-sorting window (1 = no bucketing). Default 8.
    pub bucket_window: usize,
    /// Write a checkpoint every this many optimizer steps (0 = never). Default 50.
    pub checkpoint_every: u64,
    /// Train only the last this-many decoder layers, the final norm and an untied LM head;
    /// the embedding (and with it a tied LM head) and the earlier layers stay frozen and are
    /// skipped by the backward pass. Default none (train everything).
    pub train_last_layers: Option<usize>,
    /// Activation checkpointing: `auto` (on from 1B parameters), `on` or `off`. Same
    /// gradients, less memory, one more forward pass per micro-batch. Default `auto`.
    pub gradient_checkpointing: GradientCheckpointing,
    /// LoRA (`[sft.lora]`: `r`, `alpha`, `targets`): train rank-`r` adapters on the chosen
    /// projections with every base weight frozen; the adapters are written in PEFT's format to
    /// `adapter/` under the output folder and merged into the weights. Not with
    /// `train_last_layers`. Default none (full fine-tuning).
    pub lora: Option<LoraConfig>,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            learning_rate: 2e-5,
            final_learning_rate: 0.0,
            lr_schedule: LrSchedule::Linear,
            warmup_steps: 0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            batch_size: 8,
            gradient_accumulation_steps: 1,
            epochs: 3,
            max_steps: None,
            dropout: 0.0,
            max_length: 1024,
            packing: false,
            seed: 42,
            logprob_chunk_tokens: DEFAULT_CHUNK_TOKENS,
            bucket_window: 8,
            checkpoint_every: 50,
            train_last_layers: None,
            gradient_checkpointing: GradientCheckpointing::Auto,
            lora: None,
        }
    }
}

/// A [`SftConfig`] that passed [`SftConfig::validate`]; the SFT trainer only accepts this.
#[derive(Clone, Debug, PartialEq)]
pub struct SftTrainConfig {
    raw: SftConfig,
    logprobs: ChunkedLogProbs,
}

impl SftTrainConfig {
    /// The validated settings.
    pub fn get(&self) -> &SftConfig {
        &self.raw
    }

    /// The LM-head chunking.
    pub fn logprobs(&self) -> &ChunkedLogProbs {
        &self.logprobs
    }

    /// Learning rate used by optimizer step `step` (0-based) out of `total` steps.
    pub fn learning_rate_at(&self, step: u64, total: u64) -> f64 {
        self.raw.optim().learning_rate_at(step, total)
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DpoError {
    DpoError::SftConfig {
        field,
        reason: reason.into(),
    }
}

impl SftConfig {
    pub(crate) fn optim(&self) -> OptimSettings {
        OptimSettings {
            learning_rate: self.learning_rate,
            final_learning_rate: self.final_learning_rate,
            lr_schedule: self.lr_schedule,
            warmup_steps: self.warmup_steps,
            weight_decay: self.weight_decay,
            adam_beta1: self.adam_beta1,
            adam_beta2: self.adam_beta2,
            adam_epsilon: self.adam_epsilon,
            max_grad_norm: self.max_grad_norm,
            dropout: self.dropout,
            batch_size: self.batch_size,
            gradient_accumulation_steps: self.gradient_accumulation_steps,
            epochs: self.epochs,
            max_steps: self.max_steps,
            max_length: self.max_length,
        }
    }

    /// Parses a TOML table holding these fields (for example the `[sft]` section of a file).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| invalid("toml", e.to_string()))
    }

    /// Checks every field and returns the checked form.
    pub fn validate(&self) -> Result<SftTrainConfig> {
        self.optim()
            .check()
            .map_err(|(field, reason)| invalid(field, reason))?;
        if self.bucket_window == 0 {
            return Err(invalid("bucket_window", "must be > 0"));
        }
        if self.train_last_layers == Some(0) {
            return Err(invalid(
                "train_last_layers",
                "must be > 0 (leave it out to train every layer)",
            ));
        }
        if let Some(l) = &self.lora {
            l.validate().map_err(|e| invalid("lora", e.to_string()))?;
            if self.train_last_layers.is_some() {
                return Err(invalid(
                    "lora",
                    "LoRA freezes every base weight: leave train_last_layers out",
                ));
            }
        }
        let logprobs = ChunkedLogProbs::new(self.logprob_chunk_tokens)
            .map_err(|_| invalid("logprob_chunk_tokens", "must be > 0"))?;
        Ok(SftTrainConfig {
            raw: self.clone(),
            logprobs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_field() {
        let c = SftConfig::default().validate().unwrap();
        assert_eq!(c.get().learning_rate, 2e-5);
        let parsed = SftConfig::from_toml_str("packing = true\ntrain_last_layers = 2").unwrap();
        assert!(parsed.packing);
        assert_eq!(parsed.train_last_layers, Some(2));
        let e = SftConfig::from_toml_str("learnig_rate = 1.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `learnig_rate`"), "{e}");
        for (bad, field) in [
            (
                SftConfig {
                    learning_rate: 0.0,
                    ..SftConfig::default()
                },
                "learning_rate",
            ),
            (
                SftConfig {
                    final_learning_rate: 1.0,
                    ..SftConfig::default()
                },
                "final_learning_rate",
            ),
            (
                SftConfig {
                    batch_size: 0,
                    ..SftConfig::default()
                },
                "batch_size",
            ),
            (
                SftConfig {
                    dropout: 1.0,
                    ..SftConfig::default()
                },
                "dropout",
            ),
            (
                SftConfig {
                    max_length: 1,
                    ..SftConfig::default()
                },
                "max_length",
            ),
            (
                SftConfig {
                    max_steps: Some(0),
                    ..SftConfig::default()
                },
                "max_steps",
            ),
            (
                SftConfig {
                    epochs: 0,
                    ..SftConfig::default()
                },
                "epochs",
            ),
            (
                SftConfig {
                    train_last_layers: Some(0),
                    ..SftConfig::default()
                },
                "train_last_layers",
            ),
            (
                SftConfig {
                    logprob_chunk_tokens: 0,
                    ..SftConfig::default()
                },
                "logprob_chunk_tokens",
            ),
            (
                SftConfig {
                    bucket_window: 0,
                    ..SftConfig::default()
                },
                "bucket_window",
            ),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("invalid sft config: {field}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn schedule_decays_linearly_to_the_floor() {
        let c = SftConfig {
            warmup_steps: 1,
            ..SftConfig::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.learning_rate_at(0, 5), 0.0);
        assert_eq!(c.learning_rate_at(1, 5), 2e-5);
        assert!((c.learning_rate_at(4, 5)).abs() < 1e-20);
    }
}
