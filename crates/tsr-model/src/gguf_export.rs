//! Writing a loaded model as a GGUF file that llama.cpp serves (`tsr export-gguf`).
//!
//! The layout follows llama.cpp's own converter (`convert_hf_to_gguf.py`) for the two
//! architectures tsr reads back ([`crate::gguf::SUPPORTED_ARCHS`]): the hyper-parameters under
//! `<arch>.*`, a byte-level BPE tokenizer under `tokenizer.ggml.*` (vocabulary, token types,
//! merges, the pre-tokenizer's name, special ids, chat template), tensors under llama.cpp's names
//! with the llama architecture's Q/K rows permuted ([`permute_rows`], the inverse of
//! [`crate::gguf::unpermute_rows`]). Tensor types as the converter picks them: 1-D tensors
//! (norms, biases) stay F32; 2-D weights are F32, F16, or Q8_0 (blocks of 32 values with an f16
//! scale; a weight whose rows are not a multiple of 32 falls back to F16).
//!
//! Only byte-level BPE tokenizers export (SmolLM2, Llama 3, Qwen2); a SentencePiece vocabulary
//! (Llama 2, Mistral) or llama3-style rope scaling is refused with an error that says so. The file
//! is written beside its final name and renamed into place, so a reader never sees half a file.
//!
//! Beside this file: `tokenizer_meta` (the `tokenizer.ggml.*` metadata), `tensors` (names,
//! row permutation and encodings of the weights) and `writer` (the GGUF v3 layout and the write
//! into place).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::ModelError;
use crate::load::Loaded;
use crate::model::parameter_shapes;

mod tensors;
mod tokenizer_meta;
mod writer;

pub use tensors::{gguf_name, permute_rows, quantize_q8_0};

use tensors::{f16_bytes, f32_bytes, tensor_values, GGML_F16, GGML_F32, GGML_Q8_0, QK8_0};
use tokenizer_meta::tokenizer_metadata;
use writer::{write_file, Meta, Out, ALIGNMENT};

/// The weight format of an exported GGUF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportType {
    /// Every tensor in f32: the exact weights.
    F32,
    /// 2-D weights in f16, 1-D tensors in f32.
    F16,
    /// 2-D weights in Q8_0 (8-bit blocks of 32 with an f16 scale), 1-D tensors in f32.
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl ExportType {
    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`).
    fn file_type(self) -> u32 {
        match self {
            ExportType::F32 => 0,
            ExportType::F16 => 1,
            ExportType::Q8_0 => 7,
        }
    }

    /// The name used on the command line and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportType::F32 => "f32",
            ExportType::F16 => "f16",
            ExportType::Q8_0 => "q8_0",
        }
    }
}

impl FromStr for ExportType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(ExportType::F32),
            "f16" => Ok(ExportType::F16),
            "q8_0" | "q8" => Ok(ExportType::Q8_0),
            other => Err(format!("unknown GGUF type {other:?}: use f32, f16 or q8_0")),
        }
    }
}

/// What [`export_gguf`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportReport {
    pub path: PathBuf,
    pub architecture: String,
    pub weights: ExportType,
    /// The `tokenizer.ggml.pre` name written.
    pub pre_tokenizer: String,
    pub tensors: usize,
    pub bytes: u64,
}

/// Writes `loaded` as a GGUF file at `path` with weights in `ty`. `pre` names the
/// pre-tokenizer (`tokenizer.ggml.pre`); `None` finds it by comparing the tokenizer's own
/// pre-tokenizer with the ones tsr knows.
pub fn export_gguf(
    loaded: &Loaded,
    path: &Path,
    ty: ExportType,
    pre: Option<&str>,
) -> Result<ExportReport, ModelError> {
    let err = |msg: String| ModelError::Other(format!("exporting {}: {msg}", path.display()));
    let config = loaded.model.config();
    let arch = match config.model_type.as_str() {
        "llama" | "mistral" => "llama",
        "qwen2" => "qwen2",
        other => {
            return Err(err(format!(
                "model type {other:?} has no GGUF export (llama, mistral and qwen2 do)"
            )))
        }
    };
    let rope = config.rope()?;
    if rope.scaling != crate::config::RopeScaling::None {
        return Err(err(format!(
            "rope scaling ({:?}) is not exported yet (llama.cpp needs a rope_freqs tensor for it)",
            rope.scaling
        )));
    }
    let mut meta: Vec<(String, Meta)> = Vec::new();
    let mut put = |k: &str, v: Meta| meta.push((k.to_string(), v));
    put("general.architecture", Meta::Str(arch.into()));
    let name = loaded
        .source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    put("general.name", Meta::Str(name));
    put("general.file_type", Meta::U32(ty.file_type()));
    put("general.alignment", Meta::U32(ALIGNMENT as u32));
    let a = |k: &str| format!("{arch}.{k}");
    let u = |v: usize| Meta::U32(v as u32);
    put(&a("context_length"), u(config.max_position_embeddings));
    put(&a("embedding_length"), u(config.hidden_size));
    put(&a("block_count"), u(config.num_hidden_layers));
    put(&a("feed_forward_length"), u(config.intermediate_size));
    put(&a("attention.head_count"), u(config.num_attention_heads));
    put(&a("attention.head_count_kv"), u(config.num_kv_heads()));
    put(
        &a("attention.layer_norm_rms_epsilon"),
        Meta::F32(config.rms_norm_eps as f32),
    );
    put(&a("rope.freq_base"), Meta::F32(rope.theta as f32));
    let head_dim = config.head_dim();
    put(&a("rope.dimension_count"), u(head_dim));
    if head_dim * config.num_attention_heads != config.hidden_size {
        put(&a("attention.key_length"), u(head_dim));
        put(&a("attention.value_length"), u(head_dim));
    }
    put(&a("vocab_size"), u(config.vocab_size));

    let pre = tokenizer_metadata(loaded, config.vocab_size, pre, &mut put).map_err(err)?;

    // Tensors, in the converter's order (the HF parameter order).
    let vars = loaded.model.var_store().variables();
    let mut tensors = Vec::new();
    for (hf, _) in parameter_shapes(config) {
        let Some(t) = vars.get(&hf) else { continue };
        let name = gguf_name(&hf).ok_or_else(|| err(format!("no GGUF name for tensor {hf}")))?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let mut values = tensor_values(t)?;
        if arch == "llama" {
            let heads = if hf.contains(".q_proj.") {
                Some(config.num_attention_heads)
            } else if hf.contains(".k_proj.") {
                Some(config.num_kv_heads())
            } else {
                None
            };
            if let Some(heads) = heads {
                values = permute_rows(&values, &shape, heads).ok_or_else(|| {
                    err(format!(
                        "{hf}: shape {shape:?} does not split into {heads} heads"
                    ))
                })?;
            }
        }
        let cols = *shape.last().unwrap_or(&1);
        let (ty_id, data) = match (ty, shape.len()) {
            (ExportType::F32, _) | (_, 0 | 1) => (GGML_F32, f32_bytes(&values)),
            (ExportType::Q8_0, _) if cols.is_multiple_of(QK8_0) => {
                (GGML_Q8_0, quantize_q8_0(&values))
            }
            (ExportType::F16 | ExportType::Q8_0, _) => (GGML_F16, f16_bytes(&values)),
        };
        tensors.push(Out {
            name,
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ty: ty_id,
            data,
        });
    }
    let bytes = write_file(path, &meta, &tensors)?;
    tracing::info!(path = %path.display(), tensors = tensors.len(), bytes, weights = ty.as_str(), "wrote GGUF");
    Ok(ExportReport {
        path: path.to_path_buf(),
        architecture: arch.to_string(),
        weights: ty,
        pre_tokenizer: pre,
        tensors: tensors.len(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_types_parse() {
        assert_eq!("Q8_0".parse::<ExportType>().unwrap(), ExportType::Q8_0);
        assert_eq!("f16".parse::<ExportType>().unwrap(), ExportType::F16);
        assert!("q4_k"
            .parse::<ExportType>()
            .unwrap_err()
            .contains("f32, f16 or q8_0"));
    }
}
