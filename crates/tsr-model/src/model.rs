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
mod fbgemm;
mod forward;
mod inputs;
mod lora;
mod mkldnn;
mod rope;

pub use build::{parameter_shapes, LoadOptions};
pub use checkpoint::{Checkpoint, Recompute};
pub use lora::{LoraConfig, LORA_TARGETS};

struct Linear {
    w: Tensor,
    b: Option<Tensor>,
    /// A LoRA adapter on this projection (see `lora`).
    lora: Option<lora::Adapter>,
    /// The weight in a reduced dtype, for products of few rows (`Model::set_weight_dtype`).
    w_reduced: Option<ReducedWeight>,
}

/// Up to how many rows (tokens times sequences) a product uses the reduced-precision weights of
/// `Model::set_weight_dtype`. Few rows are bound by reading the weights, which the copies halve;
/// more rows are bound by arithmetic, where the copies pay only with kernels for them. Measured
/// with `benches/weight_formats_ref.py` (whole decode steps of SmolLM2's shapes, 2 threads):
/// - bf16 on a CPU without native bf16 arithmetic (the 2-core AVX2 machine): 2.4x f32 at 1 row,
///   1.3x at 4, 0.7x at 8, so at most 4 rows;
/// - bf16 with native bf16 (AVX512-BF16, the 2-core AMD EPYC machine): 2.1x at 1 row, 2.9x at 4,
///   2.3x at 8, 2.2x at 14, so at most 16 rows (a sampling batch; prefills stay in f32);
/// - fp16 packed for FBGEMM: 4.7x at 1 row, 4.4x at 4, 2.4x at 8, 1.6x at 14, so at most 16.
fn reduced_max_rows(format: &Format) -> i64 {
    match format {
        Format::Cast(w) if w.kind() == Kind::BFloat16 && !native_bf16() => 4,
        Format::Cast(_) | Format::PackedF16(_) | Format::PackedBf16(_) => 16,
    }
}

/// Whether the CPU multiplies bf16 natively (AVX512-BF16), so that libtorch's bf16
/// products keep up with f32 beyond a few rows.
fn native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUs with AMX have it too.
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of `x` (`[.., in]`).
fn rows(x: &Tensor) -> i64 {
    let size = x.size();
    size[..size.len().saturating_sub(1)].iter().product()
}

/// A reduced-precision copy of a weight for decoding (`Model::set_weight_dtype`).
struct ReducedWeight {
    format: Format,
    /// Products of at most this many rows use it (`reduced_max_rows`).
    max_rows: i64,
}

/// How a reduced-precision weight is stored and multiplied.
enum Format {
    /// The weight in bf16 or f16: the product runs in that dtype, on converted activations.
    Cast(Tensor),
    /// fp16 in FBGEMM's packed layout (f16 weights of an f32 CPU model): the product runs on
    /// the f32 activations.
    PackedF16(fbgemm::PackedF16),
    /// bf16 in oneDNN's packed layout (bf16 weights of an f32 model on a CPU with native bf16):
    /// the same product as `Cast`, without reordering the weight at every call.
    PackedBf16(mkldnn::PackedBf16),
}

impl ReducedWeight {
    /// `w` in `kind`, packed for the CPU kernels of that kind when `packed` (FBGEMM for f16,
    /// oneDNN for bf16).
    fn new(w: &Tensor, kind: Kind, packed: bool) -> Result<ReducedWeight, crate::ModelError> {
        let format = match (packed, kind) {
            (true, Kind::Half) => Format::PackedF16(fbgemm::PackedF16::pack(w)?),
            (true, Kind::BFloat16) => Format::PackedBf16(mkldnn::PackedBf16::pack(w)?),
            _ => Format::Cast(w.to_kind(kind)),
        };
        Ok(ReducedWeight {
            max_rows: reduced_max_rows(&format),
            format,
        })
    }

    /// Whether a product with input `x` uses this copy: at most `max_rows` rows, and never in
    /// training (an input that takes a gradient), as the copy has no gradient and FBGEMM's
    /// products no backward.
    fn serves(&self, x: &Tensor) -> bool {
        rows(x) <= self.max_rows && !x.requires_grad()
    }

    /// `x W^T + b`, the result in `x`'s dtype.
    fn linear(&self, x: &Tensor, b: Option<&Tensor>) -> Tensor {
        match &self.format {
            Format::Cast(w) => {
                let y = x
                    .to_kind(w.kind())
                    .linear::<&Tensor>(w, None)
                    .to_kind(x.kind());
                match b {
                    Some(b) => y + b,
                    None => y,
                }
            }
            Format::PackedF16(w) => w.forward(x, b),
            Format::PackedBf16(w) => {
                let y = w.forward(x);
                match b {
                    Some(b) => y + b,
                    None => y,
                }
            }
        }
    }
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = match &self.w_reduced {
            Some(w) if w.serves(x) => w.linear(x, self.b.as_ref()),
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

/// A product with reduced-precision weights: `x W^T + b`, `w` in the reduced dtype, `b` in the
/// model's.
struct Reduced {
    w: ReducedWeight,
    b: Option<Tensor>,
}

impl Reduced {
    /// The projections' weights stacked along the output dimension, in `kind`, and their biases
    /// (all or none) stacked likewise.
    fn stack(linears: &[&Linear], kind: Kind, packed: bool) -> Result<Reduced, crate::ModelError> {
        let ws: Vec<&Tensor> = linears.iter().map(|l| &l.w).collect();
        let bs: Option<Vec<&Tensor>> = linears.iter().map(|l| l.b.as_ref()).collect();
        Ok(Reduced {
            w: ReducedWeight::new(&Tensor::cat(&ws, 0), kind, packed)?,
            b: bs.map(|bs| Tensor::cat(&bs, 0)),
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.w.linear(x, self.b.as_ref())
    }
}

/// A layer's projections fused for decoding with reduced-precision weights
/// (`Model::set_weight_dtype`): q, k and v as one product and gate and up as another, so a
/// decoding step reads each weight once in three products instead of five and converts the
/// activations once per product.
struct Fused {
    qkv: Reduced,
    gate_up: Reduced,
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
    /// Fused reduced-precision q/k/v and gate/up products (`Model::set_weight_dtype`), used
    /// for products of few rows (`ReducedWeight::serves`).
    fused: Option<Fused>,
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

    /// The fused reduced-precision products, when set and `x` has few enough rows for them.
    fn fused_for(&self, x: &Tensor) -> Option<&Fused> {
        self.fused.as_ref().filter(|f| f.qkv.w.serves(x))
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
    lm_head_reduced: Option<ReducedWeight>,
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

    /// The shortest sliding attention window of any layer, if a layer has one.
    pub fn min_sliding_window(&self) -> Option<usize> {
        self.layers.iter().filter_map(|l| l.window).min()
    }

    /// A fresh, empty KV cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.layers.len(), batch)
    }

    /// LM head: `[.., H] -> [.., V]`.
    pub fn lm_head(&self, hidden: &Tensor) -> Tensor {
        match &self.lm_head_reduced {
            Some(w) if w.serves(hidden) => w.linear(hidden, None),
            _ => hidden.linear::<&Tensor>(self.lm_head.as_ref().unwrap_or(&self.embed), None),
        }
    }

    /// Weight-only reduced precision for decoding: the decoder's projection weights and the LM
    /// head get a copy in `kind` (bf16 or f16), used by every product of few rows (decoding one
    /// or a few sequences, bound by the bytes read per token): at most 16 rows, or 4 for bf16 on
    /// a CPU without native bf16 arithmetic (see `reduced_max_rows`). The copies of q, k and v,
    /// and of gate and up, are stacked so that each group is one product. Larger products
    /// (prefills) keep the model's weights. f16 copies of an f32 CPU model are packed for
    /// libtorch's FBGEMM fp16 kernels, which multiply them with the f32 activations: on x86 the
    /// closest to f32 and the fastest format at one to a few rows; bf16 copies multiply
    /// bf16-rounded activations, packed for oneDNN's kernels on a CPU with native bf16. Activations, norms, embeddings and the KV cache stay in the
    /// model's dtype. Products whose input takes a gradient (training) always use the model's
    /// own weights. Memory grows by the copies (half the weights' size). `kind` equal to the
    /// model's dtype does nothing.
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
        // For an f32 model on the CPU: f16 as FBGEMM's packed fp16 products where libtorch has
        // them (x86), plain f16 products elsewhere; bf16 as oneDNN's packed products on a CPU
        // with native bf16, plain bf16 products elsewhere.
        let cpu_f32 = self.kind == Kind::Float && self.device() == Device::Cpu;
        let packed = cpu_f32
            && match kind {
                Kind::Half => fbgemm::available(),
                _ => native_bf16() && mkldnn::available(),
            };
        if kind == Kind::Half && self.device() == Device::Cpu && !packed {
            tracing::warn!(
                "f16 weights without FBGEMM's packed kernels: products run in f16 on the CPU, \
                 which is slow; bf16 is the better choice here"
            );
        }
        let _guard = tch::no_grad_guard();
        for layer in &mut self.layers {
            layer.fused = Some(Fused {
                qkv: Reduced::stack(&[&layer.q, &layer.k, &layer.v], kind, packed)?,
                gate_up: Reduced::stack(&[&layer.gate, &layer.up], kind, packed)?,
            });
            for lin in [&mut layer.o, &mut layer.down] {
                lin.w_reduced = Some(ReducedWeight::new(&lin.w, kind, packed)?);
            }
        }
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        self.lm_head_reduced = Some(ReducedWeight::new(head, kind, packed)?);
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
