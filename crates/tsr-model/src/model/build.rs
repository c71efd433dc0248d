//! Building a [`Model`] from Hugging Face-named tensors or random weights.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::rope::inv_freq;
use super::{Layer, Linear, Model};
use crate::config::ModelConfig;
use crate::error::ModelError;

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
pub(super) fn add_var(vs: &VarStore, name: &str, tensor: Tensor) -> Tensor {
    let mut parts: Vec<&str> = name.split('.').collect();
    let last = parts.pop().expect("non-empty name");
    let mut path = vs.root();
    for p in parts {
        path = path.sub(p);
    }
    path.add(last, tensor, true)
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
    /// benchmarks. Same seed, same weights: they are drawn by a ChaCha8 generator of their own
    /// (tensor by tensor in name order), not libtorch's global one, so draws elsewhere in the
    /// process (another test thread, dropout) cannot change them.
    pub fn random(config: ModelConfig, seed: u64, opts: &LoadOptions) -> Result<Model, ModelError> {
        use rand::SeedableRng;
        use rand_distr::Distribution;
        config.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let normal = rand_distr::Normal::new(0.0f32, 0.02).expect("a valid std");
        let mut shapes = parameter_shapes(&config);
        shapes.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let t = if name.ends_with("norm.weight") {
                    Tensor::ones(&shape, (Kind::Float, Device::Cpu))
                } else if name.ends_with(".bias") {
                    Tensor::zeros(&shape, (Kind::Float, Device::Cpu))
                } else {
                    let n: i64 = shape.iter().product();
                    let values: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
                    Tensor::from_slice(&values).reshape(&shape)
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
                Ok(Linear {
                    w,
                    b,
                    lora: None,
                    w_reduced: None,
                })
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
                fused: None,
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
            lora: None,
            lm_head_reduced: None,
            kind: opts.kind,
        })
    }
}

fn check_kind(kind: Kind) -> Result<(), ModelError> {
    match kind {
        Kind::Float | Kind::BFloat16 | Kind::Half | Kind::Double => Ok(()),
        other => Err(ModelError::Other(format!(
            "model dtype {other:?} is not supported (use f32, bf16 or f16)"
        ))),
    }
}
