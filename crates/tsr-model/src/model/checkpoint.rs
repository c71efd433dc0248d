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
//! [`Recompute::Attention`] (selective checkpointing) keeps the MLP's `gate` and `up` products
//! of each layer beside its input. The backward pass then recomputes only the attention half of
//! the layer (its norm, the q/k/v and o products, attention) and forms the MLP's gradients by hand
//! from the kept products: `∂L/∂down_proj` and `∂L/∂act` from the layer's output gradient, the
//! SiLU gate's gradient by autograd on the kept products, `∂L/∂gate_proj`, `∂L/∂up_proj` and
//! `∂L/∂norm(x + a)` by three products each. None of the MLP's three products is run again, three
//! quarters of a Llama layer's product FLOPs at SmolLM2's shapes (`I = 8/3 H`), for `2 I` more
//! values kept per token and layer (`H + 2 I` in all, against `H`; a plain forward keeps about
//! `4 H + 3 I` and the attention's own buffers). The products are kept from the top layer down
//! only while they fit into the memory the layers' gradients will take once the backward pass has
//! made them (free until then: the trainers' optimizer releases the gradients after each step),
//! so the peak stays where full checkpointing puts it, at the end of the backward pass; layers
//! beyond that, and layers whose MLP carries LoRA adapters, are recomputed whole.
//!
//! Dropout: each layer's random draws are made reproducible by seeding libtorch's generator with
//! a per-layer seed (drawn from the generator at the start of the forward) both times the layer
//! runs, so the recomputed layer drops what the first pass dropped. The draws therefore differ
//! from a plain pass with the same global seed (equal in distribution, not bit for bit); with
//! dropout off the two passes are the same arithmetic.

use tch::{Kind, Tensor};

use super::forward::rms_norm;
use super::inputs::Masks;
use super::{Layer, Linear, Model};
use crate::autograd::{accumulate_grad, backward};
use crate::error::ModelError;

/// What the backward pass of a checkpointed forward recomputes (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recompute {
    /// Whole decoder layers: the forward keeps each layer's input alone.
    #[default]
    Layers,
    /// The attention half of a layer where the forward also kept its MLP's `gate` and `up`
    /// products (from the top layer down, as far as the gradients' memory holds them), so its
    /// MLP's products are not run again; whole layers elsewhere.
    Attention,
}

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
    /// Per layer, the MLP's `gate` and `up` products when the forward kept them
    /// ([`Recompute::Attention`]).
    mlp: Vec<Option<(Tensor, Tensor)>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("layers", &self.inputs.len())
            .field("shape", &self.last.size())
            .field("dropout", &self.dropout)
            .field("mlp_kept", &self.layers_with_mlp_kept())
            .finish()
    }
}

impl Checkpoint {
    /// How many layers' MLP products the forward kept ([`Recompute::Attention`]; layers with
    /// LoRA adapters on the MLP, and those the backward pass does not reach, keep none).
    pub fn layers_with_mlp_kept(&self) -> usize {
        self.mlp.iter().filter(|m| m.is_some()).count()
    }

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
    /// gradients through the layers into the parameters. `recompute` chooses what the backward
    /// pass runs again (whole layers, or their attention half only).
    pub fn hidden_states_checkpointed(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
        recompute: Recompute,
    ) -> Result<(Tensor, Checkpoint), ModelError> {
        let (positions, masks) = self.prepare_padded(input_ids, attention_mask)?;
        self.run_checkpointed(input_ids, &positions, masks, train, recompute)
    }

    /// [`Model::hidden_states_packed`] with activation checkpointing (see
    /// [`Model::hidden_states_checkpointed`]).
    pub fn hidden_states_packed_checkpointed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        segment_ids: &Tensor,
        train: bool,
        recompute: Recompute,
    ) -> Result<(Tensor, Checkpoint), ModelError> {
        let (positions, masks) = self.prepare_packed(input_ids, positions, segment_ids, false)?;
        self.run_checkpointed(input_ids, &positions, masks, train, recompute)
    }

    /// [`Model::hidden_states_branched`] with activation checkpointing (see
    /// [`Model::hidden_states_checkpointed`]).
    pub fn hidden_states_branched_checkpointed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        segment_ids: &Tensor,
        train: bool,
        recompute: Recompute,
    ) -> Result<(Tensor, Checkpoint), ModelError> {
        let (positions, masks) = self.prepare_packed(input_ids, positions, segment_ids, true)?;
        self.run_checkpointed(input_ids, &positions, masks, train, recompute)
    }

    /// Whether the backward pass of a checkpointed forward reaches layer `i`: it stops below the
    /// lowest layer that trains, unless the embedding trains.
    fn backward_reaches(&self) -> impl Fn(usize) -> bool {
        let embed_trains = self.embed.requires_grad();
        let lowest = (0..self.layers.len()).find(|&i| self.layers[i].trains());
        move |i| embed_trains || lowest.is_some_and(|l| l <= i)
    }

    /// Which layers a selective checkpoint keeps the MLP's products of: from the top layer down
    /// (the backward pass frees them first), layers whose MLP is plain, while the products fit
    /// into the bytes of the layer gradients the backward pass has yet to create, less one LM
    /// head's worth (room for the log-prob backward, which runs before the first layer's: its
    /// logit chunks and the head's gradient). That memory is free until the layers' gradients
    /// arrive (the optimizer releases them after each step), and the backward pass frees a
    /// layer's products as it creates that layer's gradients, so keeping them does not raise the
    /// step's peak above its end, when every gradient exists (measured on SmolLM2: 2766 MB against
    /// 2741 MB recomputing whole layers, docs/benchmarks.md). When the gradients are there
    /// already (a later micro-batch of an accumulated step) nothing is kept.
    fn layers_to_keep_mlp(&self, ids: &Tensor, reaches: &impl Fn(usize) -> bool) -> Vec<bool> {
        let n = self.layers.len();
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let reserve = head.numel() as u64 * head.kind().elt_size_in_bytes() as u64;
        let mut budget: u64 = (0..n)
            .filter(|&i| reaches(i))
            .map(|i| self.layers[i].pending_grad_bytes())
            .sum::<u64>()
            .saturating_sub(reserve);
        let per_layer = ids.numel() as u64
            * 2
            * self.config.intermediate_size as u64
            * self.kind.elt_size_in_bytes() as u64;
        let mut keep = vec![false; n];
        for i in (0..n).rev() {
            if reaches(i) && self.layers[i].mlp_plain() && budget >= per_layer {
                keep[i] = true;
                budget -= per_layer;
            }
        }
        keep
    }

    fn run_checkpointed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        masks: Masks,
        train: bool,
        recompute: Recompute,
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
        let mut mlp = Vec::with_capacity(n);
        let reaches = self.backward_reaches();
        let eps = self.config.rms_norm_eps;
        let keep_mlp = match recompute {
            Recompute::Layers => vec![false; n],
            Recompute::Attention => self.layers_to_keep_mlp(&ids, &reaches),
        };
        let last = tch::no_grad(|| -> Result<Tensor, ModelError> {
            let mut x = Tensor::f_embedding(&self.embed, &ids, -1, false, false)?;
            for i in 0..n {
                if let Some(s) = &seeds {
                    tch::manual_seed(s[i]);
                }
                let layer = &self.layers[i];
                let next = if keep_mlp[i] {
                    // `layer` in two halves, keeping the MLP's gate and up products.
                    let x2 = self.attention_block(i, &x, &cos, &sin, &masks, None, dropout)?;
                    let h2 = rms_norm(&x2, &layer.post_norm, eps);
                    let g = layer.gate.forward(&h2);
                    let u = layer.up.forward(&h2);
                    let next = x2 + layer.down.forward(&(g.silu() * &u));
                    mlp.push(Some((g, u)));
                    next
                } else {
                    mlp.push(None);
                    self.layer(i, &x, &cos, &sin, &masks, None, dropout)?
                };
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
                mlp,
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
            mut mlp,
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
            match mlp.get_mut(i).and_then(Option::take) {
                Some((g, u)) => {
                    let layer = &self.layers[i];
                    let x2 = self.attention_block(i, &x, &cos, &sin, &masks, None, dropout)?;
                    let h2 = rms_norm(&x2, &layer.post_norm, self.config.rms_norm_eps);
                    let dh2 = mlp_backward(layer, &h2, g, u, &grad)?;
                    // The layer's output is `x2 + mlp(h2)`: x2 takes the output's gradient
                    // directly and, through the norm, h2's.
                    let (roots, grads): (Vec<&Tensor>, Vec<&Tensor>) = [(&x2, &grad), (&h2, &dh2)]
                        .into_iter()
                        .filter(|(t, _)| t.requires_grad())
                        .unzip();
                    if !roots.is_empty() {
                        backward(&roots, &grads)?;
                    }
                }
                None => {
                    let out = self.layer(i, &x, &cos, &sin, &masks, None, dropout)?;
                    backward(&[&out], &[&grad])?;
                }
            }
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
                accumulate_grad(&self.embed, fresh)?;
            }
        } else if embed_trains {
            let x0 = Tensor::f_embedding(&self.embed, &ids, -1, false, false)?;
            backward(&[&x0], &[&grad])?;
        }
        Ok(())
    }
}

impl Layer {
    /// Whether the MLP's projections are plain products (no LoRA adapter), whose gradients
    /// [`mlp_backward`] forms by hand.
    fn mlp_plain(&self) -> bool {
        [&self.gate, &self.up, &self.down]
            .iter()
            .all(|l| l.lora.is_none())
    }

    /// Bytes of the gradients the layer's trainable tensors do not have yet (a backward pass will
    /// create them).
    fn pending_grad_bytes(&self) -> u64 {
        let linears = self.linears();
        let tensors = linears.iter().flat_map(|l| {
            [Some(&l.w), l.b.as_ref()]
                .into_iter()
                .flatten()
                .chain(l.lora.iter().flat_map(|a| a.tensors()))
        });
        [&self.input_norm, &self.post_norm]
            .into_iter()
            .chain(tensors)
            .filter(|t| t.requires_grad() && !t.grad().defined())
            .map(|t| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64)
            .sum()
    }
}

/// The backward pass through `layer`'s MLP, `out = x2 + down(silu(gate(h2)) * up(h2))`, from
/// the kept products `g = gate(h2)` and `u = up(h2)` and the output's gradient `dout`:
/// accumulates the three projections' gradients (those that train) and returns `∂L/∂h2`.
/// The same products autograd would run for these three `linear`s.
fn mlp_backward(
    layer: &Layer,
    h2: &Tensor,
    g: Tensor,
    u: Tensor,
    dout: &Tensor,
) -> Result<Tensor, ModelError> {
    let hidden = *h2.size().last().unwrap_or(&0);
    let inter = *g.size().last().unwrap_or(&0);
    let g = g.set_requires_grad(true);
    let u = u.set_requires_grad(true);
    let act = g.f_silu()?.f_mul(&u)?;
    let dout = dout.f_reshape([-1, hidden])?;
    let dact = tch::no_grad(|| -> Result<Tensor, ModelError> {
        let act = act.f_detach()?.f_reshape([-1, inter])?;
        linear_param_grads(&layer.down, &dout, &act)?;
        Ok(dout.f_mm(&layer.down.w)?)
    })?;
    backward(&[&act], &[&dact.f_view_as(&act)?])?;
    drop(act);
    let dg = g.grad().f_reshape([-1, inter])?;
    let du = u.grad().f_reshape([-1, inter])?;
    tch::no_grad(|| {
        let h2f = h2.f_detach()?.f_reshape([-1, hidden])?;
        linear_param_grads(&layer.gate, &dg, &h2f)?;
        linear_param_grads(&layer.up, &du, &h2f)?;
        let dh2 = dg.f_mm(&layer.gate.w)?.f_add_(&du.f_mm(&layer.up.w)?)?;
        Ok(dh2.f_view_as(h2)?)
    })
}

/// Accumulates the gradients of `y = x Wᵀ + b` (`x` `[N, in]`, `dy` `[N, out]`) into `W` and
/// `b`, those that train: `∂L/∂W = dyᵀ x`, `∂L/∂b = Σ_rows dy`.
fn linear_param_grads(l: &Linear, dy: &Tensor, x: &Tensor) -> Result<(), ModelError> {
    if l.w.requires_grad() {
        accumulate_grad(&l.w, dy.f_tr()?.f_mm(x)?)?;
    }
    if let Some(b) = l.b.as_ref().filter(|b| b.requires_grad()) {
        accumulate_grad(b, dy.f_sum_dim_intlist([0i64].as_slice(), false, b.kind())?)?;
    }
    Ok(())
}
