//! The decoder: embeddings, RMSNorm, grouped-query attention with rotary embeddings, SwiGLU MLP
//! and a tied or untied LM head, as in transformers' `LlamaForCausalLM` / `Qwen2ForCausalLM` /
//! `MistralForCausalLM`.
//!
//! Parameters live in a [`VarStore`] under their Hugging Face names
//! (`model.layers.0.self_attn.q_proj.weight`, ...), stored `[out, in]` as HF does; linear layers
//! are `x.linear(w, b)`, which libtorch runs as one GEMM against the transposed weight.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::{ModelConfig, RopeScaling};
use crate::error::ModelError;
use crate::kv_cache::KvCache;

mod checkpoint;
pub use checkpoint::Checkpoint;

/// Where and in which dtype to build a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    pub device: Device,
    pub kind: Kind,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            kind: Kind::Float,
        }
    }
}

struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, self.b.as_ref())
    }
}

struct Layer {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    window: Option<usize>,
}

impl Layer {
    /// Whether any parameter of the layer takes a gradient.
    fn trains(&self) -> bool {
        [&self.input_norm, &self.post_norm]
            .iter()
            .any(|t| t.requires_grad())
            || [
                &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
            ]
            .iter()
            .any(|l| l.w.requires_grad() || l.b.as_ref().is_some_and(Tensor::requires_grad))
    }
}

/// A decoder-only language model.
pub struct Model {
    config: ModelConfig,
    vs: VarStore,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Option<Tensor>,
    inv_freq: Tensor,
    dropout: f64,
    kind: Kind,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("model_type", &self.config.model_type)
            .field("layers", &self.layers.len())
            .field("hidden_size", &self.config.hidden_size)
            .field("vocab_size", &self.config.vocab_size)
            .field("device", &self.vs.device())
            .field("kind", &self.kind)
            .field("dropout", &self.dropout)
            .finish()
    }
}

/// Name and shape of every parameter a config needs, in checkpoint order.
pub fn parameter_shapes(config: &ModelConfig) -> Vec<(String, Vec<i64>)> {
    let h = config.hidden_size as i64;
    let hd = config.head_dim() as i64;
    let q = config.num_attention_heads as i64 * hd;
    let kv = config.num_kv_heads() as i64 * hd;
    let i = config.intermediate_size as i64;
    let v = config.vocab_size as i64;
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        for (name, rows, cols, bias) in [
            ("q_proj", q, h, config.qkv_bias()),
            ("k_proj", kv, h, config.qkv_bias()),
            ("v_proj", kv, h, config.qkv_bias()),
            ("o_proj", h, q, config.o_bias()),
        ] {
            out.push((format!("{p}.self_attn.{name}.weight"), vec![rows, cols]));
            if bias {
                out.push((format!("{p}.self_attn.{name}.bias"), vec![rows]));
            }
        }
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        for (name, rows, cols) in [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)] {
            out.push((format!("{p}.mlp.{name}.weight"), vec![rows, cols]));
            if config.mlp_bias() {
                out.push((format!("{p}.mlp.{name}.bias"), vec![rows]));
            }
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !config.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    out
}

/// Adds `tensor` to the var store under a dotted HF name.
fn add_var(vs: &VarStore, name: &str, tensor: Tensor) -> Tensor {
    let mut parts: Vec<&str> = name.split('.').collect();
    let last = parts.pop().expect("non-empty name");
    let mut path = vs.root();
    for p in parts {
        path = path.sub(p);
    }
    path.add(last, tensor, true)
}

/// Attention masks shared by all layers of one forward call: `None` means "plain causal"
/// (no padding, no window), which lets SDPA take its `is_causal` fast path.
struct Masks {
    full: Option<Tensor>,
    windowed: HashMap<usize, Tensor>,
}

impl Masks {
    fn for_layer(&self, window: Option<usize>) -> Option<&Tensor> {
        match window {
            Some(w) if self.windowed.contains_key(&w) => self.windowed.get(&w),
            _ => self.full.as_ref(),
        }
    }
}

impl Model {
    /// Builds a model from HF-named tensors (any float dtype, any device; converted to
    /// `opts.kind` on `opts.device`). Errors name the missing or mis-shaped tensor. Unused tensors
    /// (e.g. a redundant `lm_head.weight` of a tied model) are ignored.
    pub fn from_tensors(
        config: ModelConfig,
        tensors: Vec<(String, Tensor)>,
        opts: &LoadOptions,
    ) -> Result<Model, ModelError> {
        config.validate()?;
        check_kind(opts.kind)?;
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        let vs = VarStore::new(opts.device);
        let mut vars: HashMap<String, Tensor> = HashMap::new();
        for (name, shape) in parameter_shapes(&config) {
            let t = by_name
                .remove(&name)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: name.clone(),
                    path: None,
                })?;
            if t.size() != shape {
                return Err(ModelError::ShapeMismatch {
                    name,
                    expected: shape,
                    found: t.size(),
                });
            }
            if !t.is_floating_point() {
                return Err(ModelError::UnsupportedDtype {
                    name,
                    dtype: format!("{:?}", t.kind()),
                    path: None,
                });
            }
            let t = tch::no_grad(|| t.f_to_device_(opts.device, opts.kind, false, false))?
                .detach()
                .contiguous();
            let var = add_var(&vs, &name, t);
            vars.insert(name, var);
        }
        let unused: Vec<&String> = by_name.keys().collect();
        if !unused.is_empty() {
            tracing::debug!(
                ?unused,
                "ignoring checkpoint tensors the model does not use"
            );
        }
        Self::assemble(config, vs, vars, opts)
    }

    /// A model with random weights (normal, std 0.02; norms 1; biases 0), for tests and
    /// benchmarks. Same seed, same weights (on CPU).
    pub fn random(config: ModelConfig, seed: u64, opts: &LoadOptions) -> Result<Model, ModelError> {
        config.validate()?;
        tch::manual_seed(seed as i64);
        let tensors = parameter_shapes(&config)
            .into_iter()
            .map(|(name, shape)| {
                let t = if name.ends_with("norm.weight") {
                    Tensor::ones(&shape, (Kind::Float, Device::Cpu))
                } else if name.ends_with(".bias") {
                    Tensor::zeros(&shape, (Kind::Float, Device::Cpu))
                } else {
                    Tensor::randn(&shape, (Kind::Float, Device::Cpu)) * 0.02
                };
                (name, t)
            })
            .collect();
        Self::from_tensors(config, tensors, opts)
    }

    fn assemble(
        config: ModelConfig,
        vs: VarStore,
        mut vars: HashMap<String, Tensor>,
        opts: &LoadOptions,
    ) -> Result<Model, ModelError> {
        let mut take = |name: &str| -> Result<Tensor, ModelError> {
            vars.remove(name).ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                path: None,
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut lin = |name: &str, bias: bool| -> Result<Linear, ModelError> {
                let w = take(&format!("{p}.{name}.weight"))?;
                let b = if bias {
                    Some(take(&format!("{p}.{name}.bias"))?)
                } else {
                    None
                };
                Ok(Linear { w, b })
            };
            let q = lin("self_attn.q_proj", config.qkv_bias())?;
            let k = lin("self_attn.k_proj", config.qkv_bias())?;
            let v = lin("self_attn.v_proj", config.qkv_bias())?;
            let o = lin("self_attn.o_proj", config.o_bias())?;
            let gate = lin("mlp.gate_proj", config.mlp_bias())?;
            let up = lin("mlp.up_proj", config.mlp_bias())?;
            let down = lin("mlp.down_proj", config.mlp_bias())?;
            layers.push(Layer {
                input_norm: take(&format!("{p}.input_layernorm.weight"))?,
                q,
                k,
                v,
                o,
                post_norm: take(&format!("{p}.post_attention_layernorm.weight"))?,
                gate,
                up,
                down,
                window: config.layer_window(l),
            });
        }
        let embed = take("model.embed_tokens.weight")?;
        let norm = take("model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(take("lm_head.weight")?)
        };
        let inv_freq = inv_freq(&config)?.to_device(opts.device);
        Ok(Model {
            dropout: config.attention_dropout.unwrap_or(0.0),
            config,
            vs,
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
            kind: opts.kind,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Device of the parameters.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Dtype of the parameters and activations.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The parameters (HF names).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The parameters, mutably (freeze, copy from another model, ...).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// Attention-probability dropout used when a forward runs with `train = true`
    /// (transformers' `attention_dropout`; the initial value comes from the config, default 0).
    pub fn set_dropout(&mut self, p: f64) {
        self.dropout = p.clamp(0.0, 1.0);
    }

    /// Current dropout probability.
    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    /// A fresh, empty KV cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.layers.len(), batch)
    }

    /// LM head: `[.., H] -> [.., V]`.
    pub fn lm_head(&self, hidden: &Tensor) -> Tensor {
        hidden.linear::<&Tensor>(self.lm_head.as_ref().unwrap_or(&self.embed), None)
    }

    /// The LM head weight `[V, H]` (the embedding matrix when tied).
    pub fn lm_head_weight(&self) -> Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed).shallow_clone()
    }

    /// The input embedding matrix `[V, H]`.
    pub fn embed_weight(&self) -> Tensor {
        self.embed.shallow_clone()
    }

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

    /// Position ids and masks of a full-sequence forward over padded rows.
    fn prepare_padded(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<(Tensor, Masks), ModelError> {
        let (b, t) = self.check_ids(input_ids)?;
        let mask = self.check_mask(attention_mask, b, t, "attention_mask")?;
        let positions = (mask.f_cumsum(-1, Kind::Int64)? - 1).clamp_min(0);
        self.check_context(&positions)?;
        let padded = t > 0 && mask.min().int64_value(&[]) == 0;
        let valid = mask.ne(0);
        let q_idx = Tensor::arange(t as i64, (Kind::Int64, self.device()));
        let masks = self.build_masks(&valid, &q_idx, t as i64, padded, None)?;
        Ok((positions, masks))
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
        let (positions, masks) = self.prepare_packed(input_ids, positions, segment_ids)?;
        self.run(input_ids, &positions, &masks, None, train)
    }

    /// Position ids and masks of a full-sequence forward over packed rows.
    fn prepare_packed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        segment_ids: &Tensor,
    ) -> Result<(Tensor, Masks), ModelError> {
        let (b, t) = self.check_ids(input_ids)?;
        let seg = self.check_mask(segment_ids, b, t, "segment_ids")?;
        let positions = self.check_mask(positions, b, t, "positions")?;
        self.check_context(&positions)?;
        let valid = seg.ne(0);
        let same = seg.unsqueeze(2).eq_tensor(&seg.unsqueeze(1)).unsqueeze(1); // [B,1,Q,K]
        let q_idx = Tensor::arange(t as i64, (Kind::Int64, self.device()));
        let masks = self.build_masks(&valid, &q_idx, t as i64, true, Some(&same))?;
        Ok((positions, masks))
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

    fn check_ids(&self, input_ids: &Tensor) -> Result<(usize, usize), ModelError> {
        let size = input_ids.size();
        if size.len() != 2 {
            return Err(ModelError::input(format!(
                "input_ids must be [batch, seq], got shape {size:?}"
            )));
        }
        if !matches!(
            input_ids.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        ) {
            return Err(ModelError::input(format!(
                "input_ids must be integers, got {:?}",
                input_ids.kind()
            )));
        }
        if input_ids.numel() > 0 {
            let (lo, hi) = (
                input_ids.min().int64_value(&[]),
                input_ids.max().int64_value(&[]),
            );
            if lo < 0 || hi >= self.config.vocab_size as i64 {
                return Err(ModelError::input(format!(
                    "token ids must lie in [0, {}), got range [{lo}, {hi}]",
                    self.config.vocab_size
                )));
            }
        }
        Ok((size[0] as usize, size[1] as usize))
    }

    /// Refuses position ids past the model's context (`max_position_embeddings`): the rotary
    /// tables would extrapolate and the result would be silently wrong.
    fn check_context(&self, positions: &Tensor) -> Result<(), ModelError> {
        if positions.numel() == 0 {
            return Ok(());
        }
        let context = self.config.max_position_embeddings;
        let last = positions.f_max()?.f_int64_value(&[])?;
        if last >= context as i64 {
            return Err(ModelError::input(format!(
                "a sequence of {} tokens is longer than the model's context of {context} tokens \
                 (max_position_embeddings)",
                last + 1
            )));
        }
        Ok(())
    }

    fn check_mask(
        &self,
        mask: &Tensor,
        b: usize,
        t: usize,
        what: &str,
    ) -> Result<Tensor, ModelError> {
        if mask.size() != [b as i64, t as i64] {
            return Err(ModelError::input(format!(
                "{what} has shape {:?}, expected [{b}, {t}]",
                mask.size()
            )));
        }
        Ok(mask.f_to_device_(self.device(), Kind::Int64, false, false)?)
    }

    /// Boolean masks `[B, 1, Q, K]` (true = attend) for queries at key slots `q_idx` over `k_len`
    /// keys, restricted to `same` (`[B, 1, Q, K]`, packed rows) when given. Every query may
    /// attend to itself, so padding rows stay finite.
    fn build_masks(
        &self,
        valid: &Tensor,
        q_idx: &Tensor,
        k_len: i64,
        need_full: bool,
        same: Option<&Tensor>,
    ) -> Result<Masks, ModelError> {
        let dev = self.device();
        let k_idx = Tensor::arange(k_len, (Kind::Int64, dev)).unsqueeze(0);
        let q = q_idx.unsqueeze(1);
        let causal = k_idx.le_tensor(&q);
        let diag = k_idx.eq_tensor(&q);
        let valid = valid.unsqueeze(1).unsqueeze(1); // [B,1,1,K]
        let combine = |allowed: &Tensor| -> Tensor {
            let m = allowed.unsqueeze(0).unsqueeze(0).logical_and(&valid);
            let m = match same {
                Some(same) => m.logical_and(same),
                None => m,
            };
            m.logical_or(&diag.unsqueeze(0).unsqueeze(0))
        };
        let full = need_full.then(|| combine(&causal));
        let mut windowed = HashMap::new();
        for w in self.layers.iter().filter_map(|l| l.window) {
            // The window only matters when some query can see more than `w` keys.
            if windowed.contains_key(&w) || (k_len as usize) <= w {
                continue;
            }
            let in_window = k_idx.gt_tensor(&(&q - w as i64));
            windowed.insert(w, combine(&causal.logical_and(&in_window)));
        }
        Ok(Masks { full, windowed })
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
    fn layer(
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
        let x = x + a;
        let h = rms_norm(&x, &layer.post_norm, self.config.rms_norm_eps);
        let m = layer
            .down
            .forward(&(layer.gate.forward(&h).silu() * layer.up.forward(&h)));
        Ok(x + m)
    }

    /// cos and sign-folded sin tables `[B, 1, T, head_dim]` for the given positions.
    fn rope_tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
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
        let q = layer.q.forward(x).view([b, t, nh, hd]).transpose(1, 2);
        let k = layer.k.forward(x).view([b, t, kvh, hd]).transpose(1, 2);
        let v = layer.v.forward(x).view([b, t, kvh, hd]).transpose(1, 2);
        let q = apply_rope(&q, cos, sin, hd);
        let k = apply_rope(&k, cos, sin, hd);
        let (k, v) = match cache {
            Some(c) => c.append(index, &k, &v)?,
            None => (k, v),
        };
        let (k, v) = if nh != kvh {
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
            false,
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

/// Rotary embedding with the "rotate half" layout: `x*cos + [x2, x1]*sin'` where `sin'` already
/// carries the sign of `[-x2, x1]`.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, hd: i64) -> Tensor {
    let half = hd / 2;
    let rotated = Tensor::cat(&[x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
    (x * cos).addcmul(&rotated, sin)
}

/// transformers' `LlamaRMSNorm`: normalise in f32, cast back, then scale.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
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

fn check_kind(kind: Kind) -> Result<(), ModelError> {
    match kind {
        Kind::Float | Kind::BFloat16 | Kind::Half | Kind::Double => Ok(()),
        other => Err(ModelError::Other(format!(
            "model dtype {other:?} is not supported (use f32, bf16 or f16)"
        ))),
    }
}

/// Inverse rotary frequencies `[head_dim/2]` (f32), with the config's scaling applied, computed
/// with the same f32 operations as transformers.
fn inv_freq(config: &ModelConfig) -> Result<Tensor, ModelError> {
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
