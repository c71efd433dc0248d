//! The decoder: embeddings, RMSNorm, grouped-query attention with rotary embeddings, SwiGLU MLP
//! and a tied or untied LM head, as in transformers' `LlamaForCausalLM` / `Qwen2ForCausalLM` /
//! `MistralForCausalLM`.
//!
//! Parameters live in a [`VarStore`] under their Hugging Face names
//! (`model.layers.0.self_attn.q_proj.weight`, ...), stored `[out, in]` as HF does; linear layers
//! are `x.linear(w, b)`, which libtorch runs as one GEMM against the transposed weight.
//!
//! This file holds the parameters and their accessors; beside it: `build` (construction from
//! tensors), `inputs` (input checks, position ids, attention masks), `rope` (rotary embeddings),
//! `forward` (the forward passes), `checkpoint` (the activation-checkpointed forward and
//! backward) and `lora` (low-rank adapters on the projections).

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::kv_cache::KvCache;

mod build;
mod checkpoint;
mod forward;
mod inputs;
mod lora;
mod rope;

pub use build::{parameter_shapes, LoadOptions};
pub use checkpoint::Checkpoint;
pub use lora::{LoraConfig, LORA_TARGETS};

struct Linear {
    w: Tensor,
    b: Option<Tensor>,
    /// A LoRA adapter on this projection (see `lora`).
    lora: Option<lora::Adapter>,
    /// The weight in a reduced dtype, for products of few rows (`Model::set_weight_dtype`).
    w_reduced: Option<Tensor>,
}

/// Up to this many rows (tokens times sequences) a product uses the reduced-precision weights
/// of `Model::set_weight_dtype`: there it is bound by reading the weights and bf16 halves that
/// (2.4x faster at 1 row, 1.3x at 4 on the 2-core AVX2 machine); above it, without native bf16
/// arithmetic, f32 is faster (0.7x at 8 rows). Measured with `benches/weight_formats_ref.py`.
const REDUCED_MAX_ROWS: i64 = 4;

/// Rows of `x` (`[.., in]`).
fn rows(x: &Tensor) -> i64 {
    let size = x.size();
    size[..size.len().saturating_sub(1)].iter().product()
}

/// `x W^T` with `w` in another dtype: the product in `w`'s dtype, the result in `x`'s.
fn reduced_linear(x: &Tensor, w: &Tensor) -> Tensor {
    x.to_kind(w.kind())
        .linear::<&Tensor>(w, None)
        .to_kind(x.kind())
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = match &self.w_reduced {
            Some(w) if rows(x) <= REDUCED_MAX_ROWS => {
                let y = reduced_linear(x, w);
                match &self.b {
                    Some(b) => y + b,
                    None => y,
                }
            }
            _ => x.linear(&self.w, self.b.as_ref()),
        };
        match &self.lora {
            Some(a) => a.apply(x, y),
            None => y,
        }
    }

    /// Whether any of its tensors takes a gradient.
    fn trains(&self) -> bool {
        self.w.requires_grad()
            || self.b.as_ref().is_some_and(Tensor::requires_grad)
            || self.lora.as_ref().is_some_and(lora::Adapter::trains)
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

/// Each projection of a layer as PEFT names it: (module path, projection), in [`Layer::linears`]
/// order.
const PROJECTIONS: [(&str, &str); 7] = [
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "o_proj"),
    ("mlp", "gate_proj"),
    ("mlp", "up_proj"),
    ("mlp", "down_proj"),
];

impl Layer {
    /// The projections, in [`PROJECTIONS`] order.
    fn linears(&self) -> [&Linear; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }

    /// The projections, mutably, in [`PROJECTIONS`] order.
    fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }

    /// Whether any parameter of the layer takes a gradient.
    fn trains(&self) -> bool {
        [&self.input_norm, &self.post_norm]
            .iter()
            .any(|t| t.requires_grad())
            || self.linears().iter().any(|l| l.trains())
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
    /// The LM head in a reduced weight dtype (`Model::set_weight_dtype`), used by `lm_head`.
    lm_head_reduced: Option<Tensor>,
    inv_freq: Tensor,
    dropout: f64,
    kind: Kind,
    /// The LoRA adapters' settings and their on/off switch, once added.
    lora: Option<lora::State>,
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

impl Model {
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
        match &self.lm_head_reduced {
            Some(w) if rows(hidden) <= REDUCED_MAX_ROWS => reduced_linear(hidden, w),
            _ => hidden.linear::<&Tensor>(self.lm_head.as_ref().unwrap_or(&self.embed), None),
        }
    }

    /// Weight-only reduced precision for decoding: the decoder's projection weights and the LM
    /// head get a copy in `kind` (bf16 or f16), used by every product of at most 4 rows (decoding
    /// one or a few sequences, bound by the bytes read per token); larger products (prefill,
    /// batched sampling) keep the f32 weights, faster there on a CPU without native bf16.
    /// Activations, norms, embeddings and the KV cache stay in the model's dtype. For inference:
    /// training ignores the copies only for large batches, so do not train such a model. Memory
    /// grows by the copies (half the weights' size). `kind` equal to the model's dtype does
    /// nothing.
    pub fn set_weight_dtype(&mut self, kind: Kind) -> Result<(), crate::ModelError> {
        if kind == self.kind {
            return Ok(());
        }
        if !matches!(kind, Kind::BFloat16 | Kind::Half) {
            return Err(crate::ModelError::Other(format!(
                "weight-only dtype {kind:?}: use bf16 or f16"
            )));
        }
        if self.lora.is_some() {
            return Err(crate::ModelError::Other(
                "weight-only reduced precision on a model with LoRA adapters: merge them first"
                    .into(),
            ));
        }
        tch::no_grad(|| {
            for layer in &mut self.layers {
                for lin in layer.linears_mut() {
                    lin.w_reduced = Some(lin.w.to_kind(kind));
                }
            }
            let head = self.lm_head.as_ref().unwrap_or(&self.embed);
            self.lm_head_reduced = Some(head.to_kind(kind));
        });
        Ok(())
    }

    /// The LM head weight `[V, H]` (the embedding matrix when tied).
    pub fn lm_head_weight(&self) -> Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed).shallow_clone()
    }

    /// The input embedding matrix `[V, H]`.
    pub fn embed_weight(&self) -> Tensor {
        self.embed.shallow_clone()
    }
}
