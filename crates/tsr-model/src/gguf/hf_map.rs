//! GGUF to Hugging Face: the `config.json` a file's metadata stands for, tensors under their
//! Hugging Face names with llama.cpp's Q/K row permutation undone (llama architecture), and the
//! llama3 rope scaling recovered from `rope_freqs`.

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use super::{GgufFile, MetaValue};
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::model::LoadOptions;

impl GgufFile {
    fn meta_u64(&self, key: &str) -> Result<u64, ModelError> {
        self.get(key)
            .ok_or_else(|| self.err(format!("missing metadata {key}")))?
            .as_u64()
            .ok_or_else(|| self.err(format!("metadata {key} is not an unsigned integer")))
    }

    fn meta_f64_opt(&self, key: &str) -> Result<Option<f64>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(format!("metadata {key} is not a number"))),
        }
    }

    /// `general.architecture`, checked to be one tsr maps (`llama`, `qwen2`).
    fn supported_arch(&self) -> Result<&str, ModelError> {
        let arch = self.architecture()?;
        if !SUPPORTED_ARCHS.contains(&arch) {
            return Err(ModelError::UnsupportedArchitecture {
                arch: arch.to_string(),
                path: Some(self.path.clone()),
            });
        }
        Ok(arch)
    }

    /// The Hugging Face `config.json` equivalent of the file's metadata (`llama` and `qwen2`
    /// architectures).
    pub fn model_config(&self) -> Result<ModelConfig, ModelError> {
        let p = self.supported_arch()?;
        let hidden = self.meta_u64(&format!("{p}.embedding_length"))?;
        let heads = self.meta_u64(&format!("{p}.attention.head_count"))?;
        let kv_heads = match self.get(&format!("{p}.attention.head_count_kv")) {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| self.err("head_count_kv is not an integer"))?,
            None => heads,
        };
        if heads == 0 {
            return Err(self.err("llama.attention.head_count is zero"));
        }
        let head_dim = match self.get(&format!("{p}.attention.key_length")) {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| self.err("key_length is not an integer"))?,
            None => match self.get(&format!("{p}.rope.dimension_count")) {
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| self.err("rope.dimension_count is not an integer"))?,
                None => hidden / heads,
            },
        };
        let vocab = match self
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
        {
            Some(tokens) => tokens.len() as u64,
            None => match self.get(&format!("{p}.vocab_size")) {
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| self.err("vocab_size is not an integer"))?,
                None => {
                    let embd = self.tensor_info("token_embd.weight").ok_or_else(|| {
                        ModelError::MissingTensor {
                            name: "token_embd.weight".into(),
                            path: Some(self.path.clone()),
                        }
                    })?;
                    embd.dims.get(1).copied().unwrap_or(0)
                }
            },
        };
        let eps = self
            .meta_f64_opt(&format!("{p}.attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| self.err("missing metadata llama.attention.layer_norm_rms_epsilon"))?;
        // f32 metadata: print the shortest decimal of the f32 (1e-5, not 9.99999974e-6).
        let eps = f32_to_f64_short(eps);
        let theta = self
            .meta_f64_opt(&format!("{p}.rope.freq_base"))?
            .map(f32_to_f64_short)
            .unwrap_or(10000.0);
        let class = if p == "qwen2" {
            "Qwen2ForCausalLM"
        } else {
            "LlamaForCausalLM"
        };
        let mut cfg = json!({
            "architectures": [class],
            "model_type": p,
            "hidden_size": hidden,
            "intermediate_size": self.meta_u64(&format!("{p}.feed_forward_length"))?,
            "num_hidden_layers": self.meta_u64(&format!("{p}.block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "rms_norm_eps": eps,
            "rope_theta": theta,
            "vocab_size": vocab,
            "tie_word_embeddings": self.tensor_info("output.weight").is_none(),
            "max_position_embeddings": self.get(&format!("{p}.context_length")).and_then(MetaValue::as_u64).unwrap_or(2048),
            "mlp_bias": false,
            "hidden_act": "silu",
        });
        let obj = cfg.as_object_mut().expect("object literal");
        for (key, field) in [
            ("bos_token_id", "bos_token_id"),
            ("eos_token_id", "eos_token_id"),
            ("padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = self
                .get(&format!("tokenizer.ggml.{key}"))
                .and_then(MetaValue::as_u64)
            {
                obj.insert(field.into(), json!(id));
            }
        }
        if p == "llama" {
            obj.insert(
                "attention_bias".into(),
                json!(self.tensor_info("blk.0.attn_q.bias").is_some()),
            );
        }
        if let Some(scaling) = self.rope_scaling(p, head_dim, theta)? {
            obj.insert("rope_scaling".into(), scaling);
        }
        let text = serde_json::to_string(&cfg).map_err(|e| self.err(e.to_string()))?;
        ModelConfig::from_json_str(&text).map_err(|e| match e {
            ModelError::Config { msg, .. } => {
                self.err(format!("metadata gives an invalid config: {msg}"))
            }
            other => other,
        })
    }

    fn rope_scaling(
        &self,
        p: &str,
        head_dim: u64,
        theta: f64,
    ) -> Result<Option<Value>, ModelError> {
        if let Some(info) = self.tensor_info("rope_freqs.weight") {
            let factors = self.dequantize(info)?;
            return llama3_scaling_from_factors(&factors, head_dim as usize, theta)
                .map(Some)
                .ok_or_else(|| {
                    self.err(
                        "rope_freqs.weight does not match llama3 rope scaling with the usual \
                         parameters (low 1, high 4, original context 8192)",
                    )
                });
        }
        let kind = self
            .get_str(&format!("{p}.rope.scaling.type"))
            .unwrap_or("none");
        match kind {
            "none" => Ok(None),
            "linear" => {
                let factor = self
                    .meta_f64_opt(&format!("{p}.rope.scaling.factor"))?
                    .ok_or_else(|| {
                        self.err(format!(
                            "linear rope scaling without {p}.rope.scaling.factor"
                        ))
                    })?;
                Ok(Some(
                    json!({"rope_type": "linear", "factor": f32_to_f64_short(factor)}),
                ))
            }
            other => Err(self.err(format!("rope scaling type {other:?} is not supported"))),
        }
    }

    /// All weights under Hugging Face names, dequantized to `f32` CPU tensors, with llama.cpp's
    /// Q/K row permutation undone. Tied models (no `output.weight`) get no `lm_head.weight`.
    pub fn hf_tensors(&self, config: &ModelConfig) -> Result<Vec<(String, Tensor)>, ModelError> {
        self.hf_tensors_as(config, None)
    }

    /// As [`GgufFile::hf_tensors`], converting each tensor to `opts`' dtype and device as soon as
    /// it is dequantized (peak memory stays near one f32 tensor plus the converted model).
    pub fn hf_tensors_as(
        &self,
        config: &ModelConfig,
        opts: Option<&LoadOptions>,
    ) -> Result<Vec<(String, Tensor)>, ModelError> {
        let arch = self.supported_arch()?;
        // Only llama.cpp's llama converter permutes Q/K rows.
        let permuted = arch == "llama";
        let mut out = Vec::with_capacity(self.tensors.len());
        for info in &self.tensors {
            let Some(hf) = hf_name(&info.name) else {
                if info.name == "rope_freqs.weight" {
                    continue;
                }
                return Err(self.err(format!(
                    "unexpected tensor {} for architecture {arch}",
                    info.name
                )));
            };
            let mut values = self.dequantize(info)?;
            let shape = info.shape();
            let heads = if !permuted {
                None
            } else if info.name.ends_with(".attn_q.weight") || info.name.ends_with(".attn_q.bias") {
                Some(config.num_attention_heads)
            } else if info.name.ends_with(".attn_k.weight") || info.name.ends_with(".attn_k.bias") {
                Some(config.num_kv_heads())
            } else {
                None
            };
            if let Some(heads) = heads {
                values = unpermute_rows(&values, &shape, heads).ok_or_else(|| {
                    self.err(format!(
                        "tensor {}: shape {shape:?} does not split into {heads} heads",
                        info.name
                    ))
                })?;
            }
            let mut t = Tensor::from_slice(&values).f_reshape(&shape)?;
            drop(values);
            if let Some(o) = opts {
                if o.kind != Kind::Float || o.device != Device::Cpu {
                    t = t.f_to_device(o.device)?.f_to_kind(o.kind)?;
                }
            }
            out.push((hf, t));
        }
        Ok(out)
    }
}

/// GGUF architectures tsr maps to Hugging Face models.
pub const SUPPORTED_ARCHS: &[&str] = &["llama", "qwen2"];

/// Recovers HF `rope_scaling` of type `llama3` from llama.cpp's `rope_freqs` tensor (one
/// divisor per rotary frequency). llama.cpp's converter computes, per inverse frequency `f`
/// with wavelength `w = 2π/f`: 1 when `w < ctx/high`, `factor` when `w > ctx/low`, else
/// `1 / ((1 - s)/factor + s)` with `s = (ctx/w - low)/(high - low)`. `factor` is the largest
/// divisor; the other parameters are Meta's published ones, checked against every entry.
pub fn llama3_scaling_from_factors(factors: &[f32], head_dim: usize, theta: f64) -> Option<Value> {
    if factors.len() * 2 != head_dim || factors.is_empty() {
        return None;
    }
    let factor = f64::from(factors.iter().copied().fold(f32::MIN, f32::max));
    let (low, high, ctx) = (1.0f64, 4.0f64, 8192.0f64);
    let ok = factors.iter().enumerate().all(|(i, &got)| {
        let f = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
        let w = 2.0 * std::f64::consts::PI / f;
        let want = if w < ctx / high {
            1.0
        } else if w > ctx / low {
            factor
        } else {
            let s = (ctx / w - low) / (high - low);
            1.0 / ((1.0 - s) / factor + s)
        };
        (f64::from(got) - want).abs() <= 1e-4 * want.abs().max(1.0)
    });
    ok.then(|| {
        json!({"rope_type": "llama3", "factor": f32_to_f64_short(factor), "low_freq_factor": low,
               "high_freq_factor": high, "original_max_position_embeddings": ctx as u64})
    })
}

/// The shortest decimal that rounds to the same f32 (GGUF stores f32; HF configs hold decimals).
fn f32_to_f64_short(v: f64) -> f64 {
    let s = format!("{}", v as f32);
    s.parse().unwrap_or(v)
}

/// Hugging Face name of a llama-architecture GGUF tensor.
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Undoes llama.cpp's conversion permutation of Q/K rows.
///
/// llama.cpp's converter reshapes the rows to `[heads, 2, rows/heads/2]`, swaps the last two axes
/// and flattens again (interleaving the two rotary halves of each head). So GGUF row
/// `h*2d + 2j + i` holds HF row `h*2d + i*d + j`.
pub fn unpermute_rows(values: &[f32], shape: &[i64], heads: usize) -> Option<Vec<f32>> {
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    reorder_rows(values, &shape, heads, false)
}

/// llama.cpp's permutation of Q/K rows (`to_gguf`) or its inverse; `None` when the rows do not
/// split into `heads` heads.
pub(crate) fn reorder_rows(
    values: &[f32],
    shape: &[usize],
    heads: usize,
    to_gguf: bool,
) -> Option<Vec<f32>> {
    let rows = *shape.first()?;
    let cols: usize = shape[1..].iter().product();
    if heads == 0 || !rows.is_multiple_of(2 * heads) || values.len() != rows * cols {
        return None;
    }
    let d = rows / heads / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..d {
                let hf = h * 2 * d + i * d + j;
                let gguf = h * 2 * d + 2 * j + i;
                let (dst, src) = if to_gguf { (gguf, hf) } else { (hf, gguf) };
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").unwrap(),
            "model.layers.12.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(hf_name("output.weight").unwrap(), "lm_head.weight");
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("blk.0.attn_qkv.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp permute: w.reshape(heads, 2, d, cols).swapaxes(1, 2).reshape(rows, cols)
        let (heads, d, cols) = (3usize, 4usize, 2usize);
        let rows = heads * 2 * d;
        let hf: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..heads {
            for j in 0..d {
                for i in 0..2 {
                    let src_row = h * 2 * d + i * d + j; // [h, i, j] in the HF layout
                    let dst_row = h * 2 * d + j * 2 + i; // [h, j, i] after swapaxes
                    gguf[dst_row * cols..(dst_row + 1) * cols]
                        .copy_from_slice(&hf[src_row * cols..(src_row + 1) * cols]);
                }
            }
        }
        let back = unpermute_rows(&gguf, &[rows as i64, cols as i64], heads).unwrap();
        assert_eq!(back, hf);
        assert!(unpermute_rows(&gguf, &[rows as i64, cols as i64], 5).is_none());
    }
}
