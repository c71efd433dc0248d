//! `config.json` of Hugging Face decoder checkpoints (Llama, Qwen2, Mistral families).
//!
//! Field names are exactly those transformers writes. Fields tsr does not interpret are kept in
//! [`ModelConfig::extra`] so that saving a model writes them back unchanged. Both rope layouts are
//! accepted: the transformers 4 one (`rope_theta` + `rope_scaling`) and the transformers 5 one
//! (`rope_parameters` holding `rope_theta` and `rope_type`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ModelError;

/// Model families (`model_type`) the decoder implements.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "qwen2", "mistral"];

/// A token id field that HF writes either as one integer or as a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The parsed `config.json`. Use [`ModelConfig::from_file`] or [`ModelConfig::from_json_str`],
/// which validate; the accessors below assume a validated config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// transformers 4 layout: top-level theta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// transformers 4 layout: scaling object (or null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<Value>,
    /// transformers 5 layout: `{"rope_theta": .., "rope_type": .., ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<Value>,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Qwen2: the sliding window applies only when this is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    /// Qwen2: layers with index >= this use the sliding window (when enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_window_layers: Option<usize>,
    /// transformers 5: per-layer `"full_attention"` / `"sliding_attention"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<TokenIds>,
    /// transformers 4 name of the checkpoint dtype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// transformers 5 name of the checkpoint dtype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Every other field, kept verbatim for saving.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn default_max_position_embeddings() -> usize {
    2048
}

/// How rotary position frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (inverse frequencies divided by `factor`).
    Linear { factor: f64 },
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// Resolved rotary embedding settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl ModelConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ModelError::MissingFile {
                    path: path.to_path_buf(),
                    what: "model config".into(),
                }
            } else {
                ModelError::io(path, e)
            }
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates a config from JSON text (errors name `<memory>` as the path).
    pub fn from_json_str(text: &str) -> Result<Self, ModelError> {
        Self::parse(text, Path::new("<memory>"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ModelError> {
        let config: ModelConfig =
            serde_json::from_str(text).map_err(|e| ModelError::json(path, e))?;
        config.validate_at(path)?;
        Ok(config)
    }

    /// Checks that the configuration describes a model tsr can build.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.validate_at(Path::new("<memory>"))
    }

    fn validate_at(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |msg: String| ModelError::Config {
            path: PathBuf::from(path),
            msg,
        };
        if !SUPPORTED_MODEL_TYPES.contains(&self.model_type.as_str()) {
            return Err(ModelError::UnsupportedArchitecture {
                arch: self.model_type.clone(),
                path: Some(path.to_path_buf()),
            });
        }
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return Err(bad(format!("{name} must be positive")));
            }
        }
        let kv = self.num_kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({kv})",
                self.num_attention_heads
            )));
        }
        match self.head_dim {
            Some(0) => return Err(bad("head_dim must be positive".into())),
            Some(d) if !d.is_multiple_of(2) => {
                return Err(bad(format!("head_dim ({d}) must be even")))
            }
            Some(_) => {}
            None => {
                if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
                    return Err(bad(format!(
                        "hidden_size ({}) is not divisible by num_attention_heads ({}) and no head_dim is given",
                        self.hidden_size, self.num_attention_heads
                    )));
                }
                if !(self.hidden_size / self.num_attention_heads).is_multiple_of(2) {
                    return Err(bad(
                        "head dimension must be even for rotary embeddings".into()
                    ));
                }
            }
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" && act != "swish" {
                return Err(bad(format!(
                    "hidden_act {act:?} is not supported (only silu)"
                )));
            }
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return Err(bad("rms_norm_eps must be positive".into()));
        }
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers {
                return Err(bad(format!(
                    "layer_types has {} entries for {} layers",
                    types.len(),
                    self.num_hidden_layers
                )));
            }
            if let Some(t) = types
                .iter()
                .find(|t| *t != "full_attention" && *t != "sliding_attention")
            {
                return Err(bad(format!("layer type {t:?} is not supported")));
            }
        }
        if self.sliding_window == Some(0) {
            return Err(bad("sliding_window must be positive".into()));
        }
        self.rope_at(path)?;
        Ok(())
    }

    /// Number of key/value heads (GQA); defaults to the number of attention heads.
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head dimension.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q/k/v projections carry a bias (always for Qwen2).
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias.unwrap_or(false)
    }

    /// Whether the attention output projection carries a bias.
    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias.unwrap_or(false)
    }

    /// Whether the MLP projections carry biases.
    pub fn mlp_bias(&self) -> bool {
        self.mlp_bias.unwrap_or(false)
    }

    /// Sliding attention window of layer `layer`, if that layer uses one.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let window = self.sliding_window?;
        if let Some(types) = &self.layer_types {
            return (types.get(layer).map(String::as_str) == Some("sliding_attention"))
                .then_some(window);
        }
        match self.model_type.as_str() {
            "qwen2" => {
                let enabled = self.use_sliding_window.unwrap_or(false);
                let from = self.max_window_layers.unwrap_or(0);
                (enabled && layer >= from).then_some(window)
            }
            "mistral" => Some(window),
            _ => None,
        }
    }

    /// Resolved rotary settings (theta and scaling).
    pub fn rope(&self) -> Result<RopeConfig, ModelError> {
        self.rope_at(Path::new("<memory>"))
    }

    fn rope_at(&self, path: &Path) -> Result<RopeConfig, ModelError> {
        let bad = |msg: String| ModelError::Config {
            path: PathBuf::from(path),
            msg,
        };
        let params = match (&self.rope_parameters, &self.rope_scaling) {
            (Some(p), _) if !p.is_null() => Some(p),
            (_, Some(s)) if !s.is_null() => Some(s),
            _ => None,
        };
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10000.0);
        if theta.is_nan() || theta <= 0.0 {
            return Err(bad(format!("rope_theta must be positive, got {theta}")));
        }
        let Some(params) = params else {
            return Ok(RopeConfig {
                theta,
                scaling: RopeScaling::None,
            });
        };
        if !params.is_object() {
            return Err(bad("rope scaling parameters must be an object".into()));
        }
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let num = |key: &str| -> Result<f64, ModelError> {
            params
                .get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| bad(format!("rope scaling of type {kind} needs a numeric {key}")))
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: num("factor")?,
            },
            "llama3" => {
                let s = RopeScaling::Llama3 {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_position_embeddings: num("original_max_position_embeddings")?,
                };
                if let RopeScaling::Llama3 {
                    low_freq_factor,
                    high_freq_factor,
                    ..
                } = s
                {
                    if high_freq_factor <= low_freq_factor {
                        return Err(bad(
                            "llama3 rope scaling needs high_freq_factor > low_freq_factor".into(),
                        ));
                    }
                }
                s
            }
            other => {
                return Err(bad(format!(
                "rope scaling type {other:?} is not supported (supported: default, linear, llama3)"
            )))
            }
        };
        if let RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. } = scaling {
            if factor.is_nan() || factor <= 0.0 {
                return Err(bad(format!(
                    "rope scaling factor must be positive, got {factor}"
                )));
            }
        }
        Ok(RopeConfig { theta, scaling })
    }

    /// End-of-sequence ids from the config (may be empty).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Number of parameters of a model built from this config.
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim();
        let kv = self.num_kv_heads() * self.head_dim();
        let i = self.intermediate_size;
        let mut layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
        if self.qkv_bias() {
            layer += q + 2 * kv;
        }
        if self.o_bias() {
            layer += h;
        }
        if self.mlp_bias() {
            layer += 2 * i + h;
        }
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + h + layer * self.num_hidden_layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#"{
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "tie_word_embeddings": true, "eos_token_id": [128001, 128009], "pretraining_tp": 1
    }"#;

    #[test]
    fn parses_llama3_and_keeps_unknown_fields() {
        let c = ModelConfig::from_json_str(LLAMA).unwrap();
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.num_kv_heads(), 2);
        assert_eq!(c.eos_ids(), vec![128001, 128009]);
        let rope = c.rope().unwrap();
        assert_eq!(rope.theta, 500000.0);
        assert!(matches!(rope.scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(c.extra.get("pretraining_tp"), Some(&Value::from(1)));
        let back = serde_json::to_string(&c).unwrap();
        assert_eq!(ModelConfig::from_json_str(&back).unwrap(), c);
    }

    #[test]
    fn parses_transformers5_rope_parameters() {
        let text = r#"{"model_type": "mistral", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
            "sliding_window": 4, "rope_parameters": {"rope_theta": 1000.0, "rope_type": "default"}}"#;
        let c = ModelConfig::from_json_str(text).unwrap();
        assert_eq!(
            c.rope().unwrap(),
            RopeConfig {
                theta: 1000.0,
                scaling: RopeScaling::None
            }
        );
        assert_eq!(c.layer_window(1), Some(4));
    }

    #[test]
    fn qwen2_window_needs_use_sliding_window() {
        let text = r#"{"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
            "sliding_window": 4, "use_sliding_window": false}"#;
        let c = ModelConfig::from_json_str(text).unwrap();
        assert!(c.qkv_bias() && !c.o_bias());
        assert_eq!(c.layer_window(0), None);
    }

    #[test]
    fn rejects_bad_configs() {
        let e = ModelConfig::from_json_str(&LLAMA.replace("\"llama\"", "\"gpt2\"")).unwrap_err();
        assert!(
            matches!(e, ModelError::UnsupportedArchitecture { ref arch, .. } if arch == "gpt2")
        );
        let e = ModelConfig::from_json_str(&LLAMA.replace("\"llama3\"", "\"dynamic\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dynamic"), "{e}");
        let e = ModelConfig::from_json_str(
            &LLAMA.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
    }
}
