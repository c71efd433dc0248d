//! LoRA (Hu et al., 2021): a trainable low-rank update `scale * B A` beside a frozen projection
//! `W`, so a projection computes `x Wᵀ + scale * (x Aᵀ) Bᵀ` with `A: [r, in]`, `B: [out, r]` and
//! `scale = alpha / r`. As in PEFT, `A` starts Kaiming-uniform (bound `1/sqrt(in)`) and `B` at
//! zero, so a freshly adapted model computes exactly what the base model does.
//!
//! [`Model::add_lora`] freezes every base weight and adds the adapters to the model's var store
//! under PEFT's names without the `base_model.model.` prefix
//! (`model.layers.0.self_attn.q_proj.lora_A.weight`); an optimizer over the tensors that require
//! a gradient therefore trains the adapters only. [`Model::set_lora_enabled`] switches them off
//! and on (the base model's outputs from the same weights, for reference log-probs), and
//! [`Model::merge_lora`] folds them into the weights (`W += scale * B A`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::build::add_var;
use super::{Model, PROJECTIONS};
use crate::error::ModelError;

/// The projections an adapter may sit on (PEFT's `target_modules` names).
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Which projections get adapters, of what rank and scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank `r` of every adapter.
    pub r: usize,
    /// `alpha`: the update is scaled by `alpha / r`.
    pub alpha: f64,
    /// Projections to adapt, from [`LORA_TARGETS`].
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 16,
            alpha: 32.0,
            targets: LORA_TARGETS.iter().map(|t| t.to_string()).collect(),
        }
    }
}

impl LoraConfig {
    /// The update's scale, `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// Rank at least 1, a finite positive alpha, known and distinct targets.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Other(format!("lora: {m}")));
        if self.r == 0 {
            return bad("r must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!(
                "alpha must be a positive number, not {}",
                self.alpha
            ));
        }
        if self.targets.is_empty() {
            return bad(format!("targets is empty: choose from {LORA_TARGETS:?}"));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !LORA_TARGETS.contains(&t.as_str()) {
                return bad(format!(
                    "unknown target {t:?}: choose from {LORA_TARGETS:?}"
                ));
            }
            if self.targets[..i].contains(t) {
                return bad(format!("target {t:?} is listed twice"));
            }
        }
        Ok(())
    }
}

/// The model's adapters: their settings and one switch they all share.
#[derive(Debug)]
pub(super) struct State {
    config: LoraConfig,
    enabled: Arc<AtomicBool>,
}

/// One projection's adapter.
#[derive(Debug)]
pub(super) struct Adapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
    enabled: Arc<AtomicBool>,
}

impl Adapter {
    /// `y + scale * (x Aᵀ) Bᵀ` when the adapters are on, else `y`.
    pub(super) fn apply(&self, x: &Tensor, y: Tensor) -> Tensor {
        if self.enabled.load(Ordering::Relaxed) {
            y + x
                .linear::<&Tensor>(&self.a, None)
                .linear::<&Tensor>(&self.b, None)
                * self.scale
        } else {
            y
        }
    }

    pub(super) fn trains(&self) -> bool {
        self.a.requires_grad() || self.b.requires_grad()
    }

    /// The adapter's two matrices.
    pub(super) fn tensors(&self) -> [&Tensor; 2] {
        [&self.a, &self.b]
    }
}

impl Model {
    /// Adds LoRA adapters as `cfg` says and freezes every other parameter. `A` is drawn from
    /// `seed` (same seed, same adapters on the CPU), `B` is zero. Refused when the model already
    /// has adapters.
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<(), ModelError> {
        cfg.validate()?;
        if self.lora.is_some() {
            return Err(ModelError::Other(
                "the model already has LoRA adapters".into(),
            ));
        }
        if self.lm_head_reduced.is_some() {
            // Merging would leave the reduced-precision copies of the weights stale.
            return Err(ModelError::Other(
                "LoRA on a model with reduced-precision weight copies (set_weight_dtype): load it \
                 again"
                    .into(),
            ));
        }
        for (_, t) in self.vs.variables() {
            let _ = t.set_requires_grad(false);
        }
        let enabled = Arc::new(AtomicBool::new(true));
        let (device, kind, scale) = (self.vs.device(), self.kind, cfg.scale());
        let r = cfg.r as i64;
        tch::manual_seed(seed as i64);
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for ((module, name), lin) in PROJECTIONS.iter().zip(layer.linears_mut()) {
                if !cfg.targets.iter().any(|t| t == name) {
                    continue;
                }
                let (out, inp) = (lin.w.size()[0], lin.w.size()[1]);
                let bound = 1.0 / (inp as f64).sqrt();
                let a = Tensor::empty([r, inp], (Kind::Float, device))
                    .uniform_(-bound, bound)
                    .to_kind(kind);
                let b = Tensor::zeros([out, r], (kind, device));
                let prefix = format!("model.layers.{l}.{module}.{name}");
                let a = add_var(&self.vs, &format!("{prefix}.lora_A.weight"), a);
                let b = add_var(&self.vs, &format!("{prefix}.lora_B.weight"), b);
                lin.lora = Some(Adapter {
                    a,
                    b,
                    scale,
                    enabled: enabled.clone(),
                });
            }
        }
        self.lora = Some(State {
            config: cfg.clone(),
            enabled,
        });
        Ok(())
    }

    /// The adapters' settings, when the model has adapters.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref().map(|s| &s.config)
    }

    /// Switches the adapters off (the base model's outputs) or on again. No effect without
    /// adapters.
    pub fn set_lora_enabled(&self, on: bool) {
        if let Some(s) = &self.lora {
            s.enabled.store(on, Ordering::Relaxed);
        }
    }

    /// The adapter tensors under PEFT's file names (`base_model.model.model.layers.0.
    /// self_attn.q_proj.lora_A.weight`), in layer and projection order.
    pub fn lora_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for ((module, name), lin) in PROJECTIONS.iter().zip(layer.linears()) {
                if let Some(a) = &lin.lora {
                    let p = format!("base_model.model.model.layers.{l}.{module}.{name}");
                    out.push((format!("{p}.lora_A.weight"), a.a.shallow_clone()));
                    out.push((format!("{p}.lora_B.weight"), a.b.shallow_clone()));
                }
            }
        }
        out
    }

    /// Folds the adapters into the weights (`W += scale * B A`, computed in f32) and removes
    /// them: the model then computes what the adapted model computed, with no adapter. The
    /// base weights stay frozen. Returns the settings the adapters had (`None`: no adapters).
    pub fn merge_lora(&mut self) -> Option<LoraConfig> {
        let state = self.lora.take()?;
        tch::no_grad(|| {
            for layer in &mut self.layers {
                for lin in layer.linears_mut() {
                    if let Some(a) = lin.lora.take() {
                        let delta =
                            a.b.to_kind(Kind::Float).matmul(&a.a.to_kind(Kind::Float)) * a.scale;
                        let merged = lin.w.to_kind(Kind::Float) + delta;
                        lin.w.copy_(&merged.to_kind(lin.w.kind()));
                        let _ = a.a.set_requires_grad(false);
                        let _ = a.b.set_requires_grad(false);
                    }
                }
            }
        });
        Some(state.config)
    }
}
