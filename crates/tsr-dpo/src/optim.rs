//! AdamW over named tensors, with moments that can be saved and restored.
//!
//! `tch::nn::Optimizer` cannot export its state, so resumable training needs its own optimizer.
//! The update is PyTorch's `torch.optim.AdamW` (single-tensor path), checked against it by a
//! golden test (`tests/fixtures/make_adamw_golden.py`):
//!
//! ```text
//! θ ← θ·(1 - lr·λ)                         (decoupled weight decay, decayed parameters only)
//! m ← β1·m + (1-β1)·g ;  v ← β2·v + (1-β2)·g²
//! θ ← θ - lr/(1-β1ᵗ) · m / (√v/√(1-β2ᵗ) + ε)
//! ```
//! Gradients are read from the tensors' `.grad()` (accumulated by `backward`), optionally
//! scaled by a clipping coefficient, and released after the update (PyTorch's
//! `zero_grad(set_to_none=True)`, its default), so they hold no memory between steps.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use crate::error::{DpoError, Result};

/// Whether a parameter is exempt from weight decay: biases and normalisation weights, as
/// transformers' `Trainer` does.
pub fn is_no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("norm")
}

struct Slot {
    name: String,
    var: Tensor,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW state over a list of named trainable tensors. See the [module docs](self).
pub struct AdamW {
    slots: Vec<Slot>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    steps: u64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("params", &self.slots.len())
            .field("beta1", &self.beta1)
            .field("beta2", &self.beta2)
            .field("eps", &self.eps)
            .field("weight_decay", &self.weight_decay)
            .field("steps", &self.steps)
            .finish()
    }
}

impl AdamW {
    /// An optimizer over `params` (name, tensor requiring grad; the tensors are shallow
    /// handles updated in place). Parameters are kept in name order.
    pub fn new(
        mut params: Vec<(String, Tensor)>,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let m = var.f_zeros_like()?;
                let v = var.f_zeros_like()?;
                let decay = !is_no_decay(&name);
                Ok(Slot {
                    name,
                    var,
                    m,
                    v,
                    decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            slots,
            beta1,
            beta2,
            eps,
            weight_decay,
            steps: 0,
        })
    }

    /// Updates taken so far (the `t` of the bias corrections).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there is nothing to optimise.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Names and tensors of the parameters, in name order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.var))
    }

    /// Global L2 norm of the current gradients (per-tensor norms combined in f64).
    pub fn grad_norm(&self) -> Result<f64> {
        let mut sq = 0.0f64;
        for s in &self.slots {
            let g = s.var.grad();
            if g.defined() {
                let n = g.f_norm()?.f_double_value(&[])?;
                sq += n * n;
            }
        }
        Ok(sq.sqrt())
    }

    /// The first parameter whose gradient holds a NaN or an infinity.
    pub fn first_non_finite_grad(&self) -> Result<Option<&str>> {
        for s in &self.slots {
            let g = s.var.grad();
            if g.defined() && !g.f_norm()?.f_double_value(&[])?.is_finite() {
                return Ok(Some(&s.name));
            }
        }
        Ok(None)
    }

    /// The first parameter holding a NaN or an infinity.
    pub fn first_non_finite_param(&self) -> Result<Option<&str>> {
        for s in &self.slots {
            if !s.var.f_norm()?.f_double_value(&[])?.is_finite() {
                return Ok(Some(&s.name));
            }
        }
        Ok(None)
    }

    /// One update with learning rate `lr`, gradients scaled by `grad_scale` (the clipping
    /// coefficient; 1 = none). Releases the gradients: the next backward pass starts new ones.
    pub fn step(&mut self, lr: f64, grad_scale: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let t = self.steps as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for s in &mut self.slots {
            let mut g = s.var.grad();
            if !g.defined() {
                continue;
            }
            if grad_scale != 1.0 {
                let _ = g.f_mul_scalar_(grad_scale)?;
            }
            if s.decay && self.weight_decay > 0.0 {
                let _ = s.var.f_mul_scalar_(1.0 - lr * self.weight_decay)?;
            }
            // m ← β1·m + (1-β1)·g ;  v ← β2·v + (1-β2)·g²  (g is scaled in place)
            let _ = s.m.f_lerp_(&g, 1.0 - self.beta1)?;
            let _ = s.v.f_mul_scalar_(self.beta2)?;
            let _ = g.f_mul_scalar_((1.0 - self.beta2).sqrt())?;
            let _ = s.v.f_addcmul_(&g, &g)?;
            if lr > 0.0 {
                // θ ← θ - lr/bc1 · m / (√v/√bc2 + ε): one addcdiv, the step folded into the
                // denominator, which is built in the gradient's own buffer (no longer needed) so
                // the update allocates nothing.
                g.f_copy_(&s.v)?;
                let _ = g
                    .f_sqrt_()?
                    .f_div_scalar_(bc2.sqrt())?
                    .f_add_scalar_(self.eps)?
                    .f_mul_scalar_(-bc1 / lr)?;
                let _ = s.var.f_addcdiv_(&s.m, &g)?;
            }
            tsr_model::autograd::clear_grad(&s.var);
        }
        Ok(())
    }

    /// Writes the parameters (`path_weights`) and the moments (`path_moments`, tensors
    /// `m.NAME` and `v.NAME`) as safetensors.
    pub fn save(&self, path_weights: &Path, path_moments: &Path) -> Result<()> {
        let weights: Vec<(&str, &Tensor)> = self
            .slots
            .iter()
            .map(|s| (s.name.as_str(), &s.var))
            .collect();
        Tensor::write_safetensors(&weights, path_weights)?;
        let mut moments: Vec<(String, &Tensor)> = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            moments.push((format!("m.{}", s.name), &s.m));
            moments.push((format!("v.{}", s.name), &s.v));
        }
        Tensor::write_safetensors(&moments, path_moments)?;
        Ok(())
    }

    /// Restores parameters and moments written by [`save`](Self::save); `steps` is the update
    /// count to continue from.
    pub fn load(&mut self, path_weights: &Path, path_moments: &Path, steps: u64) -> Result<()> {
        let dir = path_weights.parent().unwrap_or(Path::new("."));
        let bad = |reason: String| DpoError::Checkpoint {
            path: dir.to_path_buf(),
            reason,
        };
        let weights: BTreeMap<String, Tensor> = Tensor::read_safetensors(path_weights)?
            .into_iter()
            .collect();
        let moments: BTreeMap<String, Tensor> = Tensor::read_safetensors(path_moments)?
            .into_iter()
            .collect();
        let _guard = tch::no_grad_guard();
        for s in &mut self.slots {
            let get = |map: &BTreeMap<String, Tensor>, key: &str| -> Result<Tensor> {
                map.get(key)
                    .map(Tensor::shallow_clone)
                    .ok_or_else(|| bad(format!("missing tensor {key}")))
            };
            let w = get(&weights, &s.name)?;
            let m = get(&moments, &format!("m.{}", s.name))?;
            let v = get(&moments, &format!("v.{}", s.name))?;
            for (what, t) in [("weight", &w), ("m", &m), ("v", &v)] {
                if t.size() != s.var.size() {
                    return Err(bad(format!(
                        "{} {what}: shape {:?}, model has {:?}",
                        s.name,
                        t.size(),
                        s.var.size()
                    )));
                }
            }
            s.var.f_copy_(&w)?;
            s.m.f_copy_(&m)?;
            s.v.f_copy_(&v)?;
        }
        self.steps = steps;
        Ok(())
    }
}
