//! DPO-family loss kernels on per-sequence log-probabilities.
//!
//! Every function here works on four `[B]` tensors of summed completion log-probabilities
//! (policy chosen/rejected, reference chosen/rejected) plus the completion token counts, and
//! reproduces TRL 1.16's `DPOTrainer._compute_loss` (with `f_divergence_type="reverse_kl"`,
//! `ld_alpha=None`, `use_weighting=False`, its defaults). The golden test
//! (`tests/fixtures/make_loss_golden.py`) runs TRL's own code on random inputs and checks every loss
//! type in f64 (1e-9 relative) and f32 (1e-5).
//!
//! With `πc, πr` the policy and `rc, rr` the reference log-probs of the chosen and rejected
//! completions, `lc = πc - rc`, `lr = πr - rr` (the log-ratios), `Δ = lc - lr` and `β = beta`:
//!
//! | [`LossType`] | per-pair loss | source |
//! |---|---|---|
//! | `sigmoid` | `-log σ(βΔ)` | DPO (Rafailov et al. 2023) |
//! | `ipo` | `(lc/nc - lr/nr - 1/(2β))²`, `nc, nr` = completion token counts (min 1) | IPO (Azar et al. 2023), length-normalised as TRL does |
//! | `hinge` | `max(0, 1 - βΔ)` | SLiC (Zhao et al. 2023) |
//! | `robust` | `(-(1-ε) log σ(βΔ) + ε log σ(-βΔ)) / (1 - 2ε)`, `ε = label_smoothing` | rDPO (Chowdhury et al. 2024) |
//! | `sppo_hard` | `(lc - 1/(2β))² + (lr + 1/(2β))²` | SPPO, hard labels (Wu et al. 2024) |
//! | `nca_pair` | `-log σ(βlc) - ½ log σ(-βlc) - ½ log σ(-βlr)` | NCA (Chen et al. 2024) |
//!
//! The batch loss is the mean of the per-pair losses, plus `sft_weight` times the SFT term when
//! `sft_weight > 0`. The SFT term is TRL's `sft` loss type (combined through `loss_type=[..,
//! "sft"]`, `loss_weights=[1, w]`; TRL 1.16 has no `rpo_alpha` any more, this is its successor):
//! the negative log-likelihood of the chosen completions **averaged over all chosen completion
//! tokens of the batch**, `-Σ_b πc_b / Σ_b nc_b` (a token mean, not a mean of per-sequence means).
//!
//! `label_smoothing` only affects `robust`, as in TRL 1.16 (its `sigmoid` loss no longer takes
//! label smoothing, the conservative-DPO variant moved to `robust`).
//!
//! Rewards are `β·(policy - reference)` per completion; margins are chosen minus rejected rewards
//! and accuracy is the fraction of pairs with a positive margin (a tie counts as wrong), the same
//! definitions as TRL's `rewards/*` metrics.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{DpoError, Result};

/// Which preference loss to optimise. Spelled in TOML/JSON as in TRL (`"sigmoid"`, `"ipo"`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LossType {
    /// The original DPO loss `-log σ(βΔ)` (the default).
    #[default]
    Sigmoid,
    /// Identity preference optimisation, length-normalised log-ratios.
    Ipo,
    /// SLiC hinge loss `max(0, 1 - βΔ)`.
    Hinge,
    /// Robust DPO: unbiased under a label-flip rate `label_smoothing`.
    Robust,
    /// SPPO with hard win/loss probabilities.
    SppoHard,
    /// Noise-contrastive alignment, pairwise form.
    NcaPair,
}

impl LossType {
    /// All loss types, in documentation order.
    pub const ALL: [LossType; 6] = [
        LossType::Sigmoid,
        LossType::Ipo,
        LossType::Hinge,
        LossType::Robust,
        LossType::SppoHard,
        LossType::NcaPair,
    ];

    /// The name TRL uses (`"sigmoid"`, `"sppo_hard"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LossType::Sigmoid => "sigmoid",
            LossType::Ipo => "ipo",
            LossType::Hinge => "hinge",
            LossType::Robust => "robust",
            LossType::SppoHard => "sppo_hard",
            LossType::NcaPair => "nca_pair",
        }
    }
}

impl std::fmt::Display for LossType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LossType {
    type Err = DpoError;
    fn from_str(s: &str) -> Result<Self> {
        LossType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            DpoError::config("loss_type", format!("unknown loss type {s:?} (expected one of sigmoid, ipo, hinge, robust, sppo_hard, nca_pair)"))
        })
    }
}

/// Validated loss hyper-parameters. Build with [`LossParams::new`] (or from a
/// [`crate::DpoConfig`]); the fields are checked once, so the kernels never see `beta <= 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossParams {
    loss_type: LossType,
    beta: f64,
    label_smoothing: f64,
    sft_weight: f64,
}

impl LossParams {
    /// `beta > 0` (finite), `0 <= label_smoothing < 0.5`, `sft_weight >= 0` (0 = no SFT term).
    pub fn new(
        loss_type: LossType,
        beta: f64,
        label_smoothing: f64,
        sft_weight: f64,
    ) -> Result<Self> {
        if !(beta.is_finite() && beta > 0.0) {
            return Err(DpoError::config(
                "beta",
                format!("must be finite and > 0, got {beta}"),
            ));
        }
        if !(0.0..0.5).contains(&label_smoothing) {
            return Err(DpoError::config(
                "label_smoothing",
                format!("must lie in [0, 0.5), got {label_smoothing}"),
            ));
        }
        if !(sft_weight.is_finite() && sft_weight >= 0.0) {
            return Err(DpoError::config(
                "sft_weight",
                format!("must be finite and >= 0, got {sft_weight}"),
            ));
        }
        Ok(LossParams {
            loss_type,
            beta,
            label_smoothing,
            sft_weight,
        })
    }
    /// Sigmoid loss with the given beta, no label smoothing, no SFT term.
    pub fn sigmoid(beta: f64) -> Result<Self> {
        Self::new(LossType::Sigmoid, beta, 0.0, 0.0)
    }
    /// The loss type.
    pub fn loss_type(&self) -> LossType {
        self.loss_type
    }
    /// β, the strength of the KL tie to the reference.
    pub fn beta(&self) -> f64 {
        self.beta
    }
    /// ε of the robust loss.
    pub fn label_smoothing(&self) -> f64 {
        self.label_smoothing
    }
    /// Weight of the SFT (chosen NLL) term; 0 disables it.
    pub fn sft_weight(&self) -> f64 {
        self.sft_weight
    }
}

/// The per-sequence inputs of a loss evaluation, all `[B]` and on one device.
///
/// Log-probs must share one floating kind (f32 or f64); the token counts may be integer or
/// floating. Only `policy_*` need to carry gradients.
#[derive(Debug)]
pub struct PairLogps<'a> {
    /// Summed log-probs of the chosen completions under the policy.
    pub policy_chosen: &'a Tensor,
    /// Summed log-probs of the rejected completions under the policy.
    pub policy_rejected: &'a Tensor,
    /// Summed log-probs of the chosen completions under the reference model.
    pub ref_chosen: &'a Tensor,
    /// Summed log-probs of the rejected completions under the reference model.
    pub ref_rejected: &'a Tensor,
    /// Number of completion tokens of each chosen completion (used by `ipo` and the SFT term).
    pub chosen_tokens: &'a Tensor,
    /// Number of completion tokens of each rejected completion (used by `ipo`).
    pub rejected_tokens: &'a Tensor,
}

/// The result of [`dpo_loss`].
#[derive(Debug)]
pub struct DpoLoss {
    /// Scalar batch loss, differentiable with respect to the policy log-probs.
    pub loss: Tensor,
    /// `β·(πc - rc)` per pair, detached.
    pub chosen_rewards: Tensor,
    /// `β·(πr - rr)` per pair, detached.
    pub rejected_rewards: Tensor,
    /// `chosen_rewards - rejected_rewards`, detached.
    pub margins: Tensor,
    /// Fraction of pairs whose chosen reward is strictly larger.
    pub accuracy: f64,
}

/// Plain-number means of a [`DpoLoss`], named like TRL's logged metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossStats {
    /// The batch loss.
    pub loss: f64,
    /// Mean chosen reward (`rewards/chosen`).
    pub rewards_chosen: f64,
    /// Mean rejected reward (`rewards/rejected`).
    pub rewards_rejected: f64,
    /// Mean margin (`rewards/margins`).
    pub rewards_margins: f64,
    /// Reward accuracy (`rewards/accuracies`).
    pub rewards_accuracies: f64,
}

impl DpoLoss {
    /// Means of the per-pair values as `f64` (synchronises with the device).
    pub fn stats(&self) -> Result<LossStats> {
        Ok(LossStats {
            loss: self.loss.f_double_value(&[])?,
            rewards_chosen: self
                .chosen_rewards
                .f_mean(Kind::Double)?
                .f_double_value(&[])?,
            rewards_rejected: self
                .rejected_rewards
                .f_mean(Kind::Double)?
                .f_double_value(&[])?,
            rewards_margins: self.margins.f_mean(Kind::Double)?.f_double_value(&[])?,
            rewards_accuracies: self.accuracy,
        })
    }
}

fn check_inputs(x: &PairLogps<'_>) -> Result<(i64, Kind)> {
    let kind = x.policy_chosen.f_kind()?;
    if !matches!(
        kind,
        Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half
    ) {
        return Err(DpoError::Shape(format!(
            "policy_chosen has kind {kind:?}, expected a floating kind"
        )));
    }
    let size = x.policy_chosen.size();
    if size.len() != 1 {
        return Err(DpoError::Shape(format!(
            "policy_chosen has shape {size:?}, expected [B]"
        )));
    }
    let named = [
        ("policy_rejected", x.policy_rejected),
        ("ref_chosen", x.ref_chosen),
        ("ref_rejected", x.ref_rejected),
        ("chosen_tokens", x.chosen_tokens),
        ("rejected_tokens", x.rejected_tokens),
    ];
    for (name, t) in named {
        if t.size() != size {
            return Err(DpoError::Shape(format!(
                "{name} has shape {:?}, policy_chosen {size:?}",
                t.size()
            )));
        }
    }
    for (name, t) in [
        ("policy_rejected", x.policy_rejected),
        ("ref_chosen", x.ref_chosen),
        ("ref_rejected", x.ref_rejected),
    ] {
        if t.f_kind()? != kind {
            return Err(DpoError::Shape(format!(
                "{name} has kind {:?}, policy_chosen {kind:?}",
                t.f_kind()?
            )));
        }
    }
    Ok((size[0], kind))
}

/// Computes the configured loss, rewards, margins and accuracy for a batch of pairs.
///
/// Arithmetic happens in the kind of the log-prob tensors, as in TRL. An empty batch is an error.
pub fn dpo_loss(x: &PairLogps<'_>, params: &LossParams) -> Result<DpoLoss> {
    let (batch, kind) = check_inputs(x)?;
    if batch == 0 {
        return Err(DpoError::Shape(
            "empty batch: at least one pair is needed".into(),
        ));
    }
    let beta = params.beta;
    let chosen_lr = x.policy_chosen.f_sub(x.ref_chosen)?;
    let rejected_lr = x.policy_rejected.f_sub(x.ref_rejected)?;
    let delta = chosen_lr.f_sub(&rejected_lr)?;
    let per_pair = match params.loss_type {
        LossType::Sigmoid => delta
            .f_mul_scalar(beta)?
            .apply_fallible(log_sigmoid)?
            .f_neg()?,
        LossType::Hinge => delta.f_mul_scalar(-beta)?.f_add_scalar(1.0)?.f_relu()?,
        LossType::Ipo => {
            let nc = x.chosen_tokens.f_to_kind(kind)?.f_clamp_min(1.0)?;
            let nr = x.rejected_tokens.f_to_kind(kind)?.f_clamp_min(1.0)?;
            let d = chosen_lr.f_div(&nc)?.f_sub(&rejected_lr.f_div(&nr)?)?;
            d.f_sub_scalar(1.0 / (2.0 * beta))?.f_square()?
        }
        LossType::Robust => {
            let eps = params.label_smoothing;
            let clean = delta
                .f_mul_scalar(beta)?
                .apply_fallible(log_sigmoid)?
                .f_mul_scalar(-(1.0 - eps))?;
            let flipped = delta
                .f_mul_scalar(-beta)?
                .apply_fallible(log_sigmoid)?
                .f_mul_scalar(-eps)?;
            clean.f_sub(&flipped)?.f_div_scalar(1.0 - 2.0 * eps)?
        }
        LossType::SppoHard => {
            let w = chosen_lr.f_sub_scalar(0.5 / beta)?.f_square()?;
            let l = rejected_lr.f_add_scalar(0.5 / beta)?.f_square()?;
            w.f_add(&l)?
        }
        LossType::NcaPair => {
            let cr = chosen_lr.f_mul_scalar(beta)?;
            let rr = rejected_lr.f_mul_scalar(beta)?;
            let a = cr.apply_fallible(log_sigmoid)?.f_neg()?;
            let b = cr.f_neg()?.apply_fallible(log_sigmoid)?.f_mul_scalar(0.5)?;
            let c = rr.f_neg()?.apply_fallible(log_sigmoid)?.f_mul_scalar(0.5)?;
            a.f_sub(&b)?.f_sub(&c)?
        }
    };
    let mut loss = per_pair.f_mean(kind)?;
    if params.sft_weight > 0.0 {
        loss = loss
            .f_add(&sft_term(x.policy_chosen, x.chosen_tokens)?.f_mul_scalar(params.sft_weight)?)?;
    }
    let chosen_rewards = chosen_lr.f_detach()?.f_mul_scalar(beta)?;
    let rejected_rewards = rejected_lr.f_detach()?.f_mul_scalar(beta)?;
    let margins = chosen_rewards.f_sub(&rejected_rewards)?;
    let accuracy = chosen_rewards
        .f_gt_tensor(&rejected_rewards)?
        .f_to_kind(Kind::Double)?
        .f_mean(Kind::Double)?
        .f_double_value(&[])?;
    Ok(DpoLoss {
        loss,
        chosen_rewards,
        rejected_rewards,
        margins,
        accuracy,
    })
}

/// `log σ(x) = -softplus(-x)` (softplus with PyTorch's defaults, β 1 and threshold 20).
///
/// libtorch's own `log_sigmoid` CPU kernel always dispatches to the intra-op thread pool, which
/// costs milliseconds per call on a busy machine even for 16 elements; this form stays
/// element-wise. Identical up to rounding, except below -20 where it returns `x` instead of
/// `x - log1p(e^x)` (an absolute difference under 2.1e-9).
fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_neg()?.f_softplus()?.f_neg()?)
}

trait ApplyFallible {
    fn apply_fallible(&self, f: fn(&Tensor) -> Result<Tensor>) -> Result<Tensor>;
}

impl ApplyFallible for Tensor {
    fn apply_fallible(&self, f: fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        f(self)
    }
}

/// TRL's `sft` term: `-Σ πc / Σ nc`, the chosen-completion NLL averaged over all chosen completion
/// tokens of the batch (the token count is clamped to at least 1).
pub fn sft_term(policy_chosen: &Tensor, chosen_tokens: &Tensor) -> Result<Tensor> {
    let kind = policy_chosen.f_kind()?;
    let total = chosen_tokens
        .f_to_kind(kind)?
        .f_sum(kind)?
        .f_clamp_min(1.0)?;
    Ok(policy_chosen.f_sum(kind)?.f_neg()?.f_div(&total)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_slice(v)
    }

    #[test]
    fn params_are_validated() {
        assert!(LossParams::new(LossType::Sigmoid, 0.0, 0.0, 0.0).is_err());
        assert!(LossParams::new(LossType::Sigmoid, f64::NAN, 0.0, 0.0).is_err());
        assert!(LossParams::new(LossType::Robust, 0.1, 0.5, 0.0).is_err());
        assert!(LossParams::new(LossType::Robust, 0.1, 0.0, -1.0).is_err());
        assert!(LossParams::new(LossType::Robust, 0.1, 0.2, 0.5).is_ok());
    }

    #[test]
    fn loss_type_names_round_trip() {
        for lt in LossType::ALL {
            assert_eq!(lt.as_str().parse::<LossType>().unwrap(), lt);
            let json = serde_json::to_string(&lt).unwrap();
            assert_eq!(json, format!("\"{}\"", lt.as_str()));
        }
        assert!("dpo".parse::<LossType>().is_err());
    }

    #[test]
    fn sigmoid_at_zero_margin_is_log2_and_gradients_flow() {
        let pc = t(&[-3.0, -5.0]).set_requires_grad(true);
        let pr = t(&[-4.0, -2.0]).set_requires_grad(true);
        let (rc, rr) = (pc.detach(), pr.detach());
        let n = t(&[2.0, 3.0]);
        let x = PairLogps {
            policy_chosen: &pc,
            policy_rejected: &pr,
            ref_chosen: &rc,
            ref_rejected: &rr,
            chosen_tokens: &n,
            rejected_tokens: &n,
        };
        let out = dpo_loss(&x, &LossParams::sigmoid(0.1).unwrap()).unwrap();
        assert!((out.loss.double_value(&[]) - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(out.accuracy, 0.0);
        out.loss.backward();
        // d/dπc of -log σ(βΔ) at Δ = 0 is -β/2, averaged over 2 pairs.
        assert!((pc.grad().double_value(&[0]) + 0.1 / 2.0 / 2.0).abs() < 1e-12);
        assert!((pr.grad().double_value(&[1]) - 0.1 / 2.0 / 2.0).abs() < 1e-12);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let a = t(&[-1.0, -2.0]);
        let b = t(&[-1.0]);
        let x = PairLogps {
            policy_chosen: &a,
            policy_rejected: &b,
            ref_chosen: &a,
            ref_rejected: &a,
            chosen_tokens: &a,
            rejected_tokens: &a,
        };
        assert!(matches!(
            dpo_loss(&x, &LossParams::sigmoid(0.1).unwrap()),
            Err(DpoError::Shape(_))
        ));
    }
}
