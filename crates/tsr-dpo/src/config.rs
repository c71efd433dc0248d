//! [`DpoConfig`]: the `[dpo]` section of a run's TOML, and its checked form [`TrainConfig`].

use serde::{Deserialize, Serialize};

use tsr_model::LoraConfig;

use crate::checkpointing::GradientCheckpointing;
use crate::data::Truncation;
use crate::error::{DpoError, Result};
use crate::logprobs::{ChunkedLogProbs, DEFAULT_CHUNK_TOKENS};
use crate::loss::{LossParams, LossType};
pub use crate::train_loop::LrSchedule;
use crate::train_loop::OptimSettings;

/// DPO training configuration. Every field has a default (see [`DpoConfig::default`]); unknown
/// keys are rejected. Validate with [`DpoConfig::validate`] before use.
///
/// Defaults follow the Self-Rewarding LM paper (Yuan et al. 2024, §3: β = 0.1, learning rate
/// 1e-6 decaying to 1e-7, batch size 16, dropout 0.1) with the batch of 16 pairs reached as
/// 4 pairs × 4 accumulation steps, which fits a 2-core CPU; TRL's defaults are given where they
/// differ.
/// `share_prompt` of `[dpo]`: whether a micro-batch runs each pair's prompt once for both
/// completions ([`crate::data::collate_branched`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSharing {
    /// On when training without dropout (TRL's default), where it changes nothing but float
    /// rounding.
    #[default]
    Auto,
    /// Always (with dropout, the completions share the prompt's dropout draws).
    On,
    /// Never: chosen and rejected sequences run as separate padded rows (TRL's layout).
    Off,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoConfig {
    /// KL strength β (> 0). Default 0.1 (paper and TRL).
    pub beta: f64,
    /// Loss kernel. Default `sigmoid`.
    pub loss_type: LossType,
    /// Label-flip rate ε of the `robust` loss, in [0, 0.5). Default 0.
    pub label_smoothing: f64,
    /// Weight of TRL's `sft` term (NLL of chosen completions, token mean); 0 disables. Default 0.
    pub sft_weight: f64,
    /// Peak learning rate. Default 1e-6 (paper and TRL).
    pub learning_rate: f64,
    /// Floor reached at the last step. Default 1e-7 (paper). Ignored by `constant`.
    pub final_learning_rate: f64,
    /// Decay after warm-up. Default `linear` (TRL's default shape).
    pub lr_schedule: LrSchedule,
    /// Linear warm-up steps from 0 to `learning_rate`. Default 0.
    pub warmup_steps: u64,
    /// Decoupled (AdamW) weight decay; not applied to biases and norm weights. Default 0 (TRL).
    pub weight_decay: f64,
    /// Adam β1. Default 0.9.
    pub adam_beta1: f64,
    /// Adam β2. Default 0.999.
    pub adam_beta2: f64,
    /// Adam ε. Default 1e-8.
    pub adam_epsilon: f64,
    /// Clip the global gradient L2 norm to this; 0 disables. Default 1.0 (TRL).
    pub max_grad_norm: f64,
    /// Pairs per micro-batch (one forward of 2 × this many sequences). Default 4.
    pub batch_size: usize,
    /// Micro-batches per optimizer step. Default 4 (16 pairs per step, the paper's batch).
    pub gradient_accumulation_steps: usize,
    /// Passes over the data. Default 1. Ignored when `max_steps` is set.
    pub epochs: u64,
    /// Stop after this many optimizer steps (epochs repeat as needed). Default none.
    pub max_steps: Option<u64>,
    /// Dropout probability while training. Default 0.1 (paper; TRL disables dropout).
    pub dropout: f64,
    /// Token budget per sequence (prompt + completion). Default 1024 (TRL).
    pub max_length: usize,
    /// Which end survives truncation. Default `keep_start` (TRL).
    pub truncation: Truncation,
    /// Seed of the data order and of dropout. Default 42.
    pub seed: u64,
    /// Completion tokens per log-prob chunk (memory vs. speed). Default 256.
    pub logprob_chunk_tokens: usize,
    /// Batches per length-sorting window (1 = no bucketing). Default 8.
    pub bucket_window: usize,
    /// Pairs per forward when computing reference log-probs. Default 8.
    pub ref_batch_size: usize,
    /// Write a checkpoint every this many optimizer steps (0 = only when asked). Default 0.
    pub checkpoint_every: u64,
    /// Activation checkpointing: `auto` (on from 1B parameters), `on` or `off`. Same
    /// gradients, less memory, one more forward pass per micro-batch. Default `auto`.
    pub gradient_checkpointing: GradientCheckpointing,
    /// Compute each pair's prompt once for both completions: `auto` (when training without
    /// dropout), `on` or `off`. Same log-probs up to float rounding, fewer tokens through the
    /// model. With dropout, `on` makes the two completions share the prompt's dropout draws.
    /// Default `auto`.
    pub share_prompt: PromptSharing,
    /// LoRA (`[dpo.lora]`: `r`, `alpha`, `targets`): train rank-`r` adapters on the chosen
    /// projections with every base weight frozen. The reference log-probs are those of the
    /// weights before training (adapters start at zero, so no second model is held); the trained
    /// adapters are written in PEFT's format to `adapter/` under the output folder and merged
    /// into the weights. Default none (full fine-tuning).
    pub lora: Option<LoraConfig>,
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig {
            beta: 0.1,
            loss_type: LossType::Sigmoid,
            label_smoothing: 0.0,
            sft_weight: 0.0,
            learning_rate: 1e-6,
            final_learning_rate: 1e-7,
            lr_schedule: LrSchedule::Linear,
            warmup_steps: 0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            batch_size: 4,
            gradient_accumulation_steps: 4,
            epochs: 1,
            max_steps: None,
            dropout: 0.1,
            max_length: 1024,
            truncation: Truncation::KeepStart,
            seed: 42,
            logprob_chunk_tokens: DEFAULT_CHUNK_TOKENS,
            bucket_window: 8,
            ref_batch_size: 8,
            checkpoint_every: 0,
            gradient_checkpointing: GradientCheckpointing::Auto,
            share_prompt: PromptSharing::Auto,
            lora: None,
        }
    }
}

/// A [`DpoConfig`] that passed [`DpoConfig::validate`]; the trainer only accepts this.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    raw: DpoConfig,
    loss: LossParams,
    logprobs: ChunkedLogProbs,
}

impl TrainConfig {
    /// The validated settings.
    pub fn get(&self) -> &DpoConfig {
        &self.raw
    }
    /// The loss hyper-parameters.
    pub fn loss(&self) -> &LossParams {
        &self.loss
    }
    /// The log-prob computer.
    pub fn logprobs(&self) -> &ChunkedLogProbs {
        &self.logprobs
    }

    /// Learning rate used by optimizer step `step` (0-based) out of `total` steps.
    pub fn learning_rate_at(&self, step: u64, total: u64) -> f64 {
        self.raw.optim().learning_rate_at(step, total)
    }
}

impl DpoConfig {
    /// The optimisation fields shared with SFT.
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

    /// Parses a TOML table holding these fields (for example the `[dpo]` section of a run file).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| DpoError::config("toml", e.to_string()))
    }

    /// Checks every field and returns the checked form.
    pub fn validate(&self) -> Result<TrainConfig> {
        let loss = LossParams::new(
            self.loss_type,
            self.beta,
            self.label_smoothing,
            self.sft_weight,
        )?;
        self.optim()
            .check()
            .map_err(|(field, reason)| DpoError::config(field, reason))?;
        for (f, v) in [
            ("bucket_window", self.bucket_window),
            ("ref_batch_size", self.ref_batch_size),
        ] {
            if v == 0 {
                return Err(DpoError::config(f, "must be > 0"));
            }
        }
        if let Some(l) = &self.lora {
            l.validate()
                .map_err(|e| DpoError::config("lora", e.to_string()))?;
        }
        let logprobs = ChunkedLogProbs::new(self.logprob_chunk_tokens)?;
        Ok(TrainConfig {
            raw: self.clone(),
            loss,
            logprobs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_unknown_keys_are_rejected() {
        let c = DpoConfig::default().validate().unwrap();
        assert_eq!(c.loss().beta(), 0.1);
        let parsed =
            DpoConfig::from_toml_str("beta = 0.2\nloss_type = \"ipo\"\nlr_schedule = \"cosine\"")
                .unwrap();
        assert_eq!(parsed.beta, 0.2);
        assert_eq!(parsed.loss_type, LossType::Ipo);
        assert_eq!(parsed.learning_rate, 1e-6);
        let e = DpoConfig::from_toml_str("betta = 0.2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
        let bad = DpoConfig {
            beta: 0.0,
            ..DpoConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("beta"));
        let bad = DpoConfig {
            final_learning_rate: 1.0,
            ..DpoConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = DpoConfig {
            batch_size: 0,
            ..DpoConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = DpoConfig {
            warmup_steps: 2,
            ..DpoConfig::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.learning_rate_at(0, 10), 0.0);
        assert_eq!(c.learning_rate_at(1, 10), 0.5e-6);
        assert_eq!(c.learning_rate_at(2, 10), 1e-6);
        assert!((c.learning_rate_at(9, 10) - 1e-7).abs() < 1e-20);
        let c = DpoConfig {
            lr_schedule: LrSchedule::Cosine,
            ..DpoConfig::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.learning_rate_at(0, 5), 1e-6);
        assert!((c.learning_rate_at(2, 5) - 0.55e-6).abs() < 1e-18);
        assert!((c.learning_rate_at(4, 5) - 1e-7).abs() < 1e-20);
    }
}
