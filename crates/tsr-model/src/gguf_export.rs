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

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::error::ModelError;
use crate::load::Loaded;
use crate::model::parameter_shapes;
use crate::tokenizer::gguf_pre_tokenizer;

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

/// GGUF value type ids.
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

/// ggml tensor type ids.
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_Q8_0: u32 = 8;

const ALIGNMENT: usize = 32;
const QK8_0: usize = 32;

/// One metadata value of the writer.
enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// A tensor ready to write: llama.cpp name, ggml dims (innermost first), type and bytes.
struct Out {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

/// The pre-tokenizer names tried when none is given, most specific first.
const PRE_CANDIDATES: &[&str] = &["smollm", "llama-bpe", "qwen2", "gpt2"];

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

/// Adds the `tokenizer.ggml.*` metadata; returns the pre-tokenizer name.
fn tokenizer_metadata(
    loaded: &Loaded,
    n_vocab: usize,
    pre: Option<&str>,
    put: &mut impl FnMut(&str, Meta),
) -> Result<String, String> {
    let tok = &loaded.tokenizer;
    let json: Value = tok
        .inner()
        .to_string(false)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        .map_err(|e| format!("serializing the tokenizer: {e}"))?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") || model["byte_fallback"].as_bool() == Some(true) {
        return Err(format!(
            "only byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen2) export to GGUF; this one \
             is {} {}",
            model["type"].as_str().unwrap_or("of an unknown type"),
            if model["byte_fallback"].as_bool() == Some(true) {
                "with byte fallback (SentencePiece style)"
            } else {
                ""
            }
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or("tokenizer.json has no model.vocab")?;
    let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
    let mut types = vec![1i32; n_vocab];
    let mut place = |id: u64, text: &str| -> Result<usize, String> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            format!("token {text:?} has id {id}, outside the model's {n_vocab} embeddings")
        })?;
        *slot = Some(text.to_string());
        Ok(id as usize)
    };
    for (text, id) in vocab {
        place(
            id.as_u64().ok_or("a vocabulary id is not an integer")?,
            text,
        )?;
    }
    for t in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err("an added token lacks its id or content".into());
        };
        let i = place(id, text)?;
        // 3 = control (special), 4 = user-defined.
        types[i] = if t["special"].as_bool() == Some(true) {
            3
        } else {
            4
        };
    }
    // Embedding rows past the vocabulary: padding tokens, as llama.cpp's converter writes them.
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .ok_or("tokenizer.json has no model.merges")?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p) if p.len() == 2 => Ok(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            )),
            other => Err(format!("a merge is neither \"a b\" nor [a, b]: {other}")),
        })
        .collect::<Result<_, _>>()?;
    let pre = match pre {
        Some(p) => {
            if gguf_pre_tokenizer(p).is_none() {
                return Err(format!(
                    "unknown pre-tokenizer {p:?}: tsr can export {}",
                    PRE_CANDIDATES.join(", ")
                ));
            }
            p.to_string()
        }
        None => detect_pre(&json["pre_tokenizer"]).ok_or_else(|| {
            format!(
                "the tokenizer's pre-tokenizer matches none tsr knows ({}); name the one llama.cpp \
                 should use with --pre (a wrong one tokenizes text differently)",
                PRE_CANDIDATES.join(", ")
            )
        })?,
    };
    put("tokenizer.ggml.model", Meta::Str("gpt2".into()));
    put("tokenizer.ggml.pre", Meta::Str(pre.clone()));
    put("tokenizer.ggml.tokens", Meta::Strs(tokens));
    put("tokenizer.ggml.token_type", Meta::I32s(types));
    put("tokenizer.ggml.merges", Meta::Strs(merges));
    let bos = tok.bos_id();
    if let Some(b) = bos {
        put("tokenizer.ggml.bos_token_id", Meta::U32(b));
    }
    if let Some(&e) = tok.eos_ids().first() {
        put("tokenizer.ggml.eos_token_id", Meta::U32(e));
    }
    // Only a real padding token (the tokenizer's fallback pad is the EOS).
    let pad = loaded
        .model
        .config()
        .pad_token_id
        .as_ref()
        .and_then(|p| p.to_vec().first().copied());
    if let Some(p) = pad {
        put("tokenizer.ggml.padding_token_id", Meta::U32(p));
    }
    let adds_bos = bos.is_some()
        && tok
            .encode("a", true)
            .map_err(|e| e.to_string())?
            .first()
            .copied()
            == bos;
    put("tokenizer.ggml.add_bos_token", Meta::Bool(adds_bos));
    if let Some(t) = tok.chat_template() {
        put("tokenizer.chat_template", Meta::Str(t.to_string()));
    }
    Ok(pre)
}

/// The known pre-tokenizer whose `tokenizers` form equals `own` (both normalised by a round trip
/// through `tokenizers`).
fn detect_pre(own: &Value) -> Option<String> {
    use tokenizers::PreTokenizerWrapper;
    let norm = |v: &Value| -> Option<Value> {
        let w: PreTokenizerWrapper = serde_json::from_value(v.clone()).ok()?;
        serde_json::to_value(&w).ok()
    };
    let own = norm(own)?;
    PRE_CANDIDATES
        .iter()
        .find(|p| gguf_pre_tokenizer(p).and_then(|v| norm(&v)).as_ref() == Some(&own))
        .map(|p| p.to_string())
}

/// llama.cpp's name of a Hugging Face tensor (the inverse of [`crate::gguf::hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// llama.cpp's conversion permutation of Q/K rows (weights or biases): HF row `h*2d + i*d + j`
/// goes to row `h*2d + 2j + i`. `None` when the rows do not split into `heads` heads.
pub fn permute_rows(values: &[f32], shape: &[usize], heads: usize) -> Option<Vec<f32>> {
    crate::gguf::hf_map::reorder_rows(values, shape, heads, true)
}

fn tensor_values(t: &Tensor) -> Result<Vec<f32>, ModelError> {
    let t = t
        .detach()
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .contiguous()
        .f_flatten(0, -1)?;
    Ok(Vec::<f32>::try_from(&t)?)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

/// ggml's reference Q8_0 quantisation (`quantize_row_q8_0_ref`): per block of 32, the scale
/// `d = max|x| / 127` (stored as f16) and `round(x / d)` as i8 (rounding half away from zero).
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / QK8_0 * 34);
    for block in values.chunks(QK8_0) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    out
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_meta(w: &mut impl Write, key: &str, value: &Meta) -> std::io::Result<()> {
    write_str(w, key)?;
    match value {
        Meta::U32(v) => {
            w.write_all(&T_U32.to_le_bytes())?;
            w.write_all(&v.to_le_bytes())
        }
        Meta::F32(v) => {
            w.write_all(&T_F32.to_le_bytes())?;
            w.write_all(&v.to_le_bytes())
        }
        Meta::Bool(v) => {
            w.write_all(&T_BOOL.to_le_bytes())?;
            w.write_all(&[u8::from(*v)])
        }
        Meta::Str(s) => {
            w.write_all(&T_STRING.to_le_bytes())?;
            write_str(w, s)
        }
        Meta::Strs(list) => {
            w.write_all(&T_ARRAY.to_le_bytes())?;
            w.write_all(&T_STRING.to_le_bytes())?;
            w.write_all(&(list.len() as u64).to_le_bytes())?;
            list.iter().try_for_each(|s| write_str(w, s))
        }
        Meta::I32s(list) => {
            w.write_all(&T_ARRAY.to_le_bytes())?;
            w.write_all(&T_I32.to_le_bytes())?;
            w.write_all(&(list.len() as u64).to_le_bytes())?;
            list.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
        }
    }
}

fn pad_to(pos: usize) -> usize {
    pos.div_ceil(ALIGNMENT) * ALIGNMENT - pos
}

/// Writes the file (version 3) beside `path` and renames it into place; returns its size.
fn write_file(path: &Path, meta: &[(String, Meta)], tensors: &[Out]) -> Result<u64, ModelError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| ModelError::io(&dir, e))?;
    let io = |e| ModelError::io(tmp.path(), e);
    let mut w = BufWriter::new(tmp.as_file());
    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        write_meta(&mut header, k, v).map_err(io)?;
    }
    let mut offset = 0usize;
    for t in tensors {
        write_str(&mut header, &t.name).map_err(io)?;
        header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            header.extend_from_slice(&d.to_le_bytes());
        }
        header.extend_from_slice(&t.ty.to_le_bytes());
        header.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += t.data.len() + pad_to(t.data.len());
    }
    header.resize(header.len() + pad_to(header.len()), 0);
    w.write_all(&header).map_err(io)?;
    for t in tensors {
        w.write_all(&t.data).map_err(io)?;
        w.write_all(&vec![0u8; pad_to(t.data.len())]).map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    tmp.as_file().sync_all().map_err(io)?;
    // A temporary file is private (0600); the export is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    let size = (header.len() + offset) as u64;
    tmp.persist(path)
        .map_err(|e| ModelError::io(path, e.error))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{hf_name, unpermute_rows};

    #[test]
    fn names_and_permutation_invert_the_reader() {
        for hf in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.3.self_attn.q_proj.bias",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.11.post_attention_layernorm.weight",
        ] {
            assert_eq!(hf_name(&gguf_name(hf).unwrap()).as_deref(), Some(hf));
        }
        assert_eq!(gguf_name("model.rotary.inv_freq"), None);
        let (rows, cols, heads) = (16usize, 3usize, 2usize);
        let w: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let p = permute_rows(&w, &[rows, cols], heads).unwrap();
        assert_ne!(p, w);
        assert_eq!(
            unpermute_rows(&p, &[rows as i64, cols as i64], heads).unwrap(),
            w
        );
        assert!(permute_rows(&w, &[rows, cols], 3).is_none());
    }

    #[test]
    fn q8_0_blocks_dequantize_within_about_half_a_step() {
        let values: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let q = quantize_q8_0(&values);
        assert_eq!(q.len(), 2 * 34);
        let back = crate::dequant::dequantize(crate::dequant::GgmlType::Q8_0, &q, 64).unwrap();
        for (block, (orig, deq)) in values.chunks(32).zip(back.chunks(32)).enumerate() {
            let amax = orig.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = half::f16::from_f32(amax / 127.0).to_f32();
            // Half a step, plus up to 127 times the scale's f16 rounding (2^-11 relative).
            for (a, b) in orig.iter().zip(deq) {
                assert!(
                    (a - b).abs() <= 0.5 * d + 127.0 * d / 2048.0,
                    "block {block}: {a} vs {b}"
                );
            }
            // The largest value maps to +-127.
            assert!(q[block * 34 + 2..block * 34 + 34]
                .iter()
                .any(|&b| b as i8 == 127 || b as i8 == -127));
        }
        // An all-zero block has scale 0 and zero quants.
        assert!(quantize_q8_0(&[0.0; 32]).iter().all(|&b| b == 0));
    }

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
