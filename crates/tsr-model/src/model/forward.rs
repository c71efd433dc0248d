//! The forward passes: full-sequence (padded or packed rows) and incremental with a KV cache,
//! and the decoder layer they run (attention, MLP, RMSNorm).

use tch::{Kind, Tensor};

use super::inputs::Masks;
use super::rope::apply_rope;
use super::{Layer, Model};
use crate::error::ModelError;
use crate::kv_cache::KvCache;

/// Up to this many new tokens per row, a cached forward lets attention group the query heads
/// over the shared kv heads instead of repeating them (measured with libtorch 2.11 on 2 CPU
/// threads, SmolLM2's 9 query and 3 kv heads, 150 cached positions: 1 query 2.7x faster at
/// batch 1 and 3.0x at batch 14, 16 queries 1.4x-2.3x, a 128-token prefill 1.7x slower).
const GQA_MAX_QUERIES: i64 = 16;

impl Model {
    /// Full-sequence forward: final-norm hidden states `[B, T, H]`.
    ///
    /// `input_ids` `[B, T]` (integer), `attention_mask` `[B, T]` (1 = token, 0 = padding, left or
    /// right). Position ids are the number of real tokens before each token. Gradients flow to the
    /// parameters unless the caller runs under `tch::no_grad`. Padding positions hold finite but
    /// meaningless values.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let (positions, masks) = self.prepare_padded(input_ids, attention_mask)?;
        self.run(input_ids, &positions, &masks, None, train)
    }

    /// Full-sequence forward over **packed** rows: final-norm hidden states `[B, T, H]`.
    ///
    /// Each row holds several sequences side by side. `segment_ids` `[B, T]` numbers them (equal
    /// ids = same sequence; 0 = padding) and `positions` `[B, T]` gives each token's position id
    /// within its own sequence (restarting at 0). A token attends only to earlier tokens of its
    /// own sequence, so a packed row gives the same hidden states as its sequences run one by
    /// one (up to float rounding). Gradients flow as in [`Model::hidden_states`].
    pub fn hidden_states_packed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        segment_ids: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let (positions, masks) = self.prepare_packed(input_ids, positions, segment_ids, false)?;
        self.run(input_ids, &positions, &masks, None, train)
    }

    /// Full-sequence forward over **branched** rows: final-norm hidden states `[B, T, H]`.
    ///
    /// Each row holds a prefix (segment 1, first in the row) and sequences that continue it
    /// (segments 2, 3, ...; 0 = padding), e.g. a prompt then two completions of it.
    /// `positions` restart at the prefix's length in each continuation. A token attends to
    /// earlier tokens of its own segment and to the prefix, so each continuation's hidden
    /// states equal those of prefix + continuation run alone (up to float rounding), while the
    /// prefix is computed once. Refused for a model whose sliding attention window is shorter
    /// than the row. Gradients flow as in [`Model::hidden_states`].
    pub fn hidden_states_branched(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        segment_ids: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let (positions, masks) = self.prepare_packed(input_ids, positions, segment_ids, true)?;
        self.run(input_ids, &positions, &masks, None, train)
    }

    /// Full-sequence logits `[B, T, V]` (see [`Model::hidden_states`]).
    pub fn logits(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        Ok(self.lm_head(&self.hidden_states(input_ids, attention_mask, train)?))
    }

    /// Incremental decoding step (inference only; runs without autograd).
    ///
    /// `input_ids` `[B, S]` new tokens; `positions` `[B, S]` their position ids (the number of
    /// real tokens before them in the row); `attention_mask` `[B, past + S]` over cached and new
    /// positions (1 = attend, 0 = padding). Appends to `cache` and returns the hidden states of the
    /// new tokens `[B, S, H]`.
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let (b, s) = self.check_ids(input_ids)?;
        if cache.batch_size() != b || cache.num_layers() != self.layers.len() {
            return Err(ModelError::input(format!(
                "kv cache holds {} rows for {} layers, input has {b} rows for {} layers",
                cache.batch_size(),
                cache.num_layers(),
                self.layers.len()
            )));
        }
        if positions.size() != [b as i64, s as i64] {
            return Err(ModelError::input(format!(
                "positions has shape {:?}, expected [{b}, {s}]",
                positions.size()
            )));
        }
        let past = cache.len();
        let mask = self.check_mask(attention_mask, b, past + s, "attention_mask")?;
        self.check_context(positions)?;
        let positions = positions.f_to_device_(self.device(), Kind::Int64, false, false)?;
        tch::no_grad(|| {
            let valid = mask.ne(0);
            let q_idx =
                Tensor::arange_start(past as i64, (past + s) as i64, (Kind::Int64, self.device()));
            let masks = self.build_masks(&valid, &q_idx, (past + s) as i64, true, None)?;
            let out = self.run(input_ids, &positions, &masks, Some(cache), false)?;
            cache.advance(s);
            Ok(out)
        })
    }

    fn run(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        masks: &Masks,
        mut cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let ids = input_ids.f_to_device_(self.device(), Kind::Int64, false, false)?;
        let mut x = Tensor::f_embedding(&self.embed, &ids, -1, false, false)?;
        let (cos, sin) = self.rope_tables(positions)?;
        let dropout = if train { self.dropout } else { 0.0 };
        for i in 0..self.layers.len() {
            x = self.layer(i, &x, &cos, &sin, masks, cache.as_deref_mut(), dropout)?;
        }
        Ok(rms_norm(&x, &self.norm, self.config.rms_norm_eps))
    }

    /// Decoder layer `i`: `x + attention(norm(x))`, then `+ mlp(norm(·))`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer(
        &self,
        i: usize,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        masks: &Masks,
        cache: Option<&mut KvCache>,
        dropout: f64,
    ) -> Result<Tensor, ModelError> {
        let layer = &self.layers[i];
        let x = self.attention_block(i, x, cos, sin, masks, cache, dropout)?;
        let h = rms_norm(&x, &layer.post_norm, self.config.rms_norm_eps);
        let act = match layer.fused_for(&h) {
            Some(f) => {
                let gu = f.gate_up.forward(&h);
                let i = gu.size()[gu.dim() - 1] / 2;
                gu.narrow(-1, 0, i).silu() * gu.narrow(-1, i, i)
            }
            None => layer.gate.forward(&h).silu() * layer.up.forward(&h),
        };
        Ok(x + layer.down.forward(&act))
    }

    /// The first half of decoder layer `i`: `x + attention(norm(x))`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_block(
        &self,
        i: usize,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        masks: &Masks,
        cache: Option<&mut KvCache>,
        dropout: f64,
    ) -> Result<Tensor, ModelError> {
        let layer = &self.layers[i];
        let h = rms_norm(x, &layer.input_norm, self.config.rms_norm_eps);
        let mask = masks.for_layer(layer.window);
        let a = self.attention(i, layer, &h, cos, sin, mask, cache, dropout)?;
        // `x + a`, a new tensor: adding in place would overwrite a tensor autograd saved.
        Ok(x + a)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        index: usize,
        layer: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        dropout: f64,
    ) -> Result<Tensor, ModelError> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let nh = self.config.num_attention_heads as i64;
        let kvh = self.config.num_kv_heads() as i64;
        let hd = self.config.head_dim() as i64;
        let (q, k, v) = match layer.fused_for(x) {
            Some(f) => {
                // One product for q, k and v; RoPE on q and k together.
                let qkv = f
                    .qkv
                    .forward(x)
                    .view([b, t, nh + 2 * kvh, hd])
                    .transpose(1, 2);
                let qk = apply_rope(&qkv.narrow(1, 0, nh + kvh), cos, sin, hd);
                (
                    qk.narrow(1, 0, nh),
                    qk.narrow(1, nh, kvh),
                    qkv.narrow(1, nh + kvh, kvh),
                )
            }
            None => {
                let q = layer.q.forward(x).view([b, t, nh, hd]).transpose(1, 2);
                let k = layer.k.forward(x).view([b, t, kvh, hd]).transpose(1, 2);
                let v = layer.v.forward(x).view([b, t, kvh, hd]).transpose(1, 2);
                (
                    apply_rope(&q, cos, sin, hd),
                    apply_rope(&k, cos, sin, hd),
                    v,
                )
            }
        };
        let decoding = cache.is_some();
        let (k, v) = match cache {
            Some(c) => c.append(index, &k, &v)?,
            None => (k, v),
        };
        // A few new queries against the cache: libtorch's attention reads the shared kv heads
        // itself (`enable_gqa`), 2.5-4x faster than repeating them; for long query blocks its
        // grouped path is slower than the repeated heads' fused kernel.
        let gqa = nh != kvh && decoding && t <= GQA_MAX_QUERIES;
        let (k, v) = if nh != kvh && !gqa {
            let rep = nh / kvh;
            (repeat_kv(&k, rep), repeat_kv(&v, rep))
        } else {
            (k, v)
        };
        let out = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            dropout,
            mask.is_none(),
            None,
            gqa,
        )?;
        let out = out.transpose(1, 2).reshape([b, t, nh * hd]);
        Ok(layer.o.forward(&out))
    }
}

/// `[B, kvh, S, hd] -> [B, kvh*rep, S, hd]`, each kv head repeated `rep` times (HF `repeat_kv`).
fn repeat_kv(x: &Tensor, rep: i64) -> Tensor {
    let s = x.size();
    x.unsqueeze(2)
        .expand([s[0], s[1], rep, s[2], s[3]], false)
        .reshape([s[0], s[1] * rep, s[2], s[3]])
}

/// transformers' `LlamaRMSNorm`: normalise in f32, cast back, then scale.
pub(super) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let kind = x.kind();
    if kind == Kind::Float || kind == Kind::Double {
        // One libtorch op; the same arithmetic as below when no down-cast is involved.
        return x.rms_norm(&[x.size()[x.dim() - 1]][..], Some(weight), eps);
    }
    let xf = x.to_kind(Kind::Float);
    let var = xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    let normed = xf * (var + eps).rsqrt();
    weight * normed.to_kind(kind)
}
