//! Rotary position embeddings: the inverse frequencies (with the config's scaling), the cos/sin
//! tables of a forward call, and their application to queries and keys.

use tch::{Device, Kind, Tensor};

use super::Model;
use crate::config::{ModelConfig, RopeScaling};
use crate::error::ModelError;

impl Model {
    /// cos and sign-folded sin tables `[B, 1, T, head_dim]` for the given positions.
    pub(super) fn rope_tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq; // [B,T,hd/2]
        let cos = freqs.cos();
        let sin = freqs.sin();
        let cos = Tensor::f_cat(&[&cos, &cos], -1)?;
        let sin = Tensor::f_cat(&[&(-&sin), &sin], -1)?;
        Ok((
            cos.unsqueeze(1).to_kind(self.kind),
            sin.unsqueeze(1).to_kind(self.kind),
        ))
    }
}

/// Rotary embedding with the "rotate half" layout: `x*cos + [x2, x1]*sin'` where `sin'` already
/// carries the sign of `[-x2, x1]`.
pub(super) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, hd: i64) -> Tensor {
    let half = hd / 2;
    let rotated = Tensor::cat(&[x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
    (x * cos).addcmul(&rotated, sin)
}

/// Inverse rotary frequencies `[head_dim/2]` (f32), with the config's scaling applied, computed
/// with the same f32 operations as transformers.
pub(super) fn inv_freq(config: &ModelConfig) -> Result<Tensor, ModelError> {
    let rope = config.rope()?;
    let dim = config.head_dim() as i64;
    let exps = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))
        .to_kind(Kind::Float)
        / dim as f64;
    let inv = Tensor::pow_scalar(rope.theta, &exps).reciprocal();
    Ok(match rope.scaling {
        RopeScaling::None => inv,
        RopeScaling::Linear { factor } => inv / factor,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            let wavelen = inv.reciprocal() * (2.0 * std::f64::consts::PI);
            let scaled = (&inv / factor).where_self(&wavelen.gt(low_wavelen), &inv);
            let smooth = (wavelen.reciprocal() * old - low_freq_factor)
                / (high_freq_factor - low_freq_factor);
            let one_minus: Tensor = smooth.ones_like() - &smooth;
            let smoothed: Tensor = one_minus * &scaled / factor + &smooth * &scaled;
            let medium = wavelen
                .lt(high_wavelen)
                .logical_not()
                .logical_and(&wavelen.gt(low_wavelen).logical_not());
            smoothed.where_self(&medium, &scaled)
        }
    })
}
