//! Activation (gradient) checkpointing: a training forward pass that keeps only each decoder
//! layer's input, and a backward pass that recomputes one layer at a time.
//!
//! A plain training forward keeps every layer's intermediate tensors (attention weights, the MLP's
//! `gate`/`up` products, the norms' inputs) alive until `backward`, so activation memory grows
//! with `layers x batch x tokens`. [`Model::hidden_states_checkpointed`] runs the layers without
//! autograd, keeping only the `[B, T, H]` input of each layer, and returns the final hidden
//! states with a graph through the final norm only, rooted at a leaf that stands for the last
//! layer's output. After the caller back-propagates its loss into those hidden states (which fills
//! the leaf's gradient), [`Model::backward_checkpointed`] walks the layers from the last to the
//! first: it recomputes layer `i` from its saved input with autograd on, back-propagates
//! `Σ output · ∂L/∂output` through it (accumulating the layer's parameter gradients and yielding
//! `∂L/∂input`), frees that layer's graph, and moves on; the embedding comes last. The result is
//! the same gradients as the plain pass (same operations, same order within each layer) for one
//! extra forward pass of compute and at most one layer's activations alive at a time.
//!
//! Dropout: each layer's random draws are made reproducible by seeding libtorch's generator with
//! a per-layer seed (drawn from the generator at the start of the forward) both times the layer
//! runs, so the recomputed layer drops what the first pass dropped. The draws therefore differ
//! from a plain pass with the same global seed (equal in distribution, not bit for bit); with
//! dropout off the two passes are the same arithmetic.

use tch::{Kind, Tensor};

use super::forward::rms_norm;
use super::inputs::Masks;
use super::Model;
use crate::error::ModelError;

/// What a checkpointed forward keeps for its backward pass.
pub struct Checkpoint {
    ids: Tensor,
    /// The input of each decoder layer (no graph).
    inputs: Vec<Tensor>,
    /// Leaf standing for the last layer's output; its gradient starts the backward walk.
    last: Tensor,
    cos: Tensor,
    sin: Tensor,
    masks: Masks,
    dropout: f64,
    /// Per-layer generator seeds when dropout is on.
    seeds: Option<Vec<i64>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("layers", &self.inputs.len())
            .field("shape", &self.last.size())
            .field("dropout", &self.dropout)
            .finish()
    }
}

impl Checkpoint {
    /// A diagnostic: recomputes every layer as the backward pass will (same seeds, no autograd)
    /// and returns the largest absolute difference from what the forward produced. 0 when the
    /// recomputation is exact (deterministic kernels, dropout replayed); anything else means the
    /// backward pass would differentiate other activations than the forward computed.
    pub fn recompute_error(&self, model: &Model) -> Result<f64, ModelError> {
        tch::no_grad(|| {
            let mut worst = 0f64;
            for (i, input) in self.inputs.iter().enumerate() {
                if let Some(s) = &self.seeds {
                    tch::manual_seed(s[i]);
                }
                let out = model.layer(
                    i,
                    input,
                    &self.cos,
                    &self.sin,
                    &self.masks,
                    None,
                    self.dropout,
                )?;
                let forward = self.inputs.get(i + 1).unwrap_or(&self.last);
                let d = out.f_sub(forward)?.f_abs()?.f_max()?.f_double_value(&[])?;
                worst = worst.max(d);
            }
            Ok(worst)
        })
    }
}

impl Model {
    /// [`Model::hidden_states`] for training with activation checkpointing: the same hidden
    /// states, with a graph through the final norm only. Back-propagate the loss into them, then
    /// call [`Model::backward_checkpointed`] with the returned [`Checkpoint`] to carry the
    /// gradients through the layers into the parameters.
    pub fn hidden_states_checkpointed(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Checkpoint), ModelError> {
        let (positions, masks) = self.prepare_padded(input_ids, attention_mask)?;
        self.run_checkpointed(input_ids, &positions, masks, train)
    }

    /// [`Model::hidden_states_packed`] with activation checkpointing (see
    /// [`Model::hidden_states_checkpointed`]).
    pub fn hidden_states_packed_checkpointed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        segment_ids: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Checkpoint), ModelError> {
        let (positions, masks) = self.prepare_packed(input_ids, positions, segment_ids, false)?;
        self.run_checkpointed(input_ids, &positions, masks, train)
    }

    /// [`Model::hidden_states_branched`] with activation checkpointing (see
    /// [`Model::hidden_states_checkpointed`]).
    pub fn hidden_states_branched_checkpointed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        segment_ids: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Checkpoint), ModelError> {
        let (positions, masks) = self.prepare_packed(input_ids, positions, segment_ids, true)?;
        self.run_checkpointed(input_ids, &positions, masks, train)
    }

    fn run_checkpointed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        masks: Masks,
        train: bool,
    ) -> Result<(Tensor, Checkpoint), ModelError> {
        let ids = input_ids.f_to_device_(self.device(), Kind::Int64, false, false)?;
        let (cos, sin) = self.rope_tables(positions)?;
        let dropout = if train { self.dropout } else { 0.0 };
        let n = self.layers.len();
        let seeds = if dropout > 0.0 {
            let draw = Tensor::f_randint(i64::MAX, [n as i64], (Kind::Int64, tch::Device::Cpu))?;
            Some(Vec::<i64>::try_from(&draw)?)
        } else {
            None
        };
        let mut inputs = Vec::with_capacity(n);
        let last = tch::no_grad(|| -> Result<Tensor, ModelError> {
            let mut x = Tensor::f_embedding(&self.embed, &ids, -1, false, false)?;
            for i in 0..n {
                if let Some(s) = &seeds {
                    tch::manual_seed(s[i]);
                }
                let next = self.layer(i, &x, &cos, &sin, &masks, None, dropout)?;
                inputs.push(x);
                x = next;
            }
            Ok(x)
        })?;
        let last = last.set_requires_grad(true);
        let hidden = rms_norm(&last, &self.norm, self.config.rms_norm_eps);
        Ok((
            hidden,
            Checkpoint {
                ids,
                inputs,
                last,
                cos,
                sin,
                masks,
                dropout,
                seeds,
            },
        ))
    }

    /// The backward pass through the layers of a checkpointed forward: recomputes each layer
    /// from its saved input and accumulates the parameters' gradients (as `Tensor::backward`
    /// does). Call it after the loss was back-propagated into the hidden states that
    /// [`Model::hidden_states_checkpointed`] returned; without that there is no gradient to carry
    /// and it is an error.
    pub fn backward_checkpointed(&self, ckpt: Checkpoint) -> Result<(), ModelError> {
        let Checkpoint {
            ids,
            inputs,
            last,
            cos,
            sin,
            masks,
            dropout,
            seeds,
        } = ckpt;
        let mut grad = last.grad();
        if !grad.defined() {
            return Err(ModelError::input(
                "backward_checkpointed: the hidden states received no gradient (back-propagate \
                 the loss into them first)",
            ));
        }
        drop(last);
        // Frozen parameters (e.g. SFT's `train_last_layers`): the walk stops below the lowest
        // layer that trains, and the embedding is replayed only when it trains.
        let embed_trains = self.embed.requires_grad();
        let lowest = (0..inputs.len()).find(|&i| self.layers[i].trains());
        for (i, input) in inputs.into_iter().enumerate().rev() {
            let below_trains = embed_trains || lowest.is_some_and(|l| l < i);
            if !below_trains && lowest.is_none_or(|l| i < l) {
                break;
            }
            let x = if below_trains {
                input.set_requires_grad(true)
            } else {
                input
            };
            if let Some(s) = &seeds {
                tch::manual_seed(s[i]);
            }
            let out = self.layer(i, &x, &cos, &sin, &masks, None, dropout)?;
            out.f_mul(&grad)?.f_sum(Kind::Float)?.f_backward()?;
            if !below_trains {
                return Ok(());
            }
            grad = x.grad();
        }
        if embed_trains && self.embed.is_leaf() {
            // The embedding's gradient is the rows' gradients added into the rows of their
            // tokens. Added in place into the gradient it already has (the LM head's, when the
            // two are tied) instead of through autograd, which would first build a dense
            // `[V, H]` gradient of its own: one vocabulary-sized matrix less at the moment the
            // step holds every other gradient.
            let _guard = tch::no_grad_guard();
            let h = *grad.size().last().unwrap_or(&0);
            let rows = grad.f_reshape([-1, h])?.f_to_kind(self.embed.kind())?;
            let flat_ids = ids.f_reshape([-1])?;
            let mut current = self.embed.grad();
            if current.defined() {
                let _ = current.f_index_add_(0, &flat_ids, &rows)?;
            } else {
                let fresh = self
                    .embed
                    .f_zeros_like()?
                    .f_index_add(0, &flat_ids, &rows)?;
                crate::autograd::accumulate_grad(&self.embed, fresh)?;
            }
        } else if embed_trains {
            let x0 = Tensor::f_embedding(&self.embed, &ids, -1, false, false)?;
            x0.f_mul(&grad)?.f_sum(Kind::Float)?.f_backward()?;
        }
        Ok(())
    }
}
