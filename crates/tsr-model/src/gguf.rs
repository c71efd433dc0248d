//! GGUF files (llama.cpp's checkpoint format, versions 2 and 3): metadata, tensor table and
//! tensor data, memory-mapped.
//!
//! tsr reads GGUF with this small reader rather than a crate: the maintained Rust readers either
//! accept only version 3 (`ggus` rejects version 2 files) or pull in a whole inference stack.
//! The format is simple (little-endian; header, key/value metadata, tensor infos, aligned data),
//! and every read below is bounds-checked, so a truncated or corrupt file is an error naming the
//! file, never a panic.
//!
//! On top of the reader: the llama architecture's mapping to Hugging Face names (undoing
//! llama.cpp's Q/K row permutation) and a [`ModelConfig`] built from the metadata.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::dequant::{self, DequantError, GgmlType};
use crate::error::ModelError;
use crate::model::LoadOptions;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The string, for a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, for a bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, for an array value.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset into the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Shape in PyTorch order (outermost first): the ggml dims reversed.
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }
}

/// The file's bytes: memory-mapped when possible.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An opened GGUF file.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    data_start: usize,
    bytes: Bytes,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Maps a file read-only. The mapping is private to this process; like every reader of a
/// memory-mapped checkpoint we rely on the file not being truncated while it is open.
#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and only ever read through bounds-checked slices.
    unsafe { memmap2::Mmap::map(file) }
}

/// A bounds-checked little-endian cursor over the header region.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> ModelError {
        ModelError::Gguf {
            path: self.path.to_path_buf(),
            msg: format!("{msg} (at byte {})", self.pos),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!("truncated file: cannot read {what} ({n} bytes)"))),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, ModelError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, ModelError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, ModelError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ModelError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A count that must fit in the remaining bytes at `min_size` bytes per element.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize, ModelError> {
        let n = self.u64(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(self.err(format!(
                "{what} {n} exceeds the file size (truncated or corrupt)"
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, ModelError> {
        let n = self.count(what, 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(format!("{what} is not valid utf-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue, ModelError> {
        Ok(match ty {
            0 => MetaValue::U8(self.u8(key)?),
            1 => MetaValue::I8(self.u8(key)? as i8),
            2 => MetaValue::U16(self.u16(key)?),
            3 => MetaValue::I16(self.u16(key)? as i16),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(self.u32(key)? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.err(format!("metadata {key}: invalid bool byte {b}"))),
            },
            8 => MetaValue::String(self.string(key)?),
            9 => {
                if depth > 4 {
                    return Err(self.err(format!("metadata {key}: arrays nested too deeply")));
                }
                let elem_ty = self.u32(key)?;
                let n = self.count(key, 1)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(self.u64(key)? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64(key)?)),
            other => return Err(self.err(format!("metadata {key}: unknown value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Opens and parses a GGUF file (memory-mapped). Checks that every tensor of a known type
    /// lies inside the file.
    pub fn open(path: &Path) -> Result<GgufFile, ModelError> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ModelError::MissingFile {
                    path: path.to_path_buf(),
                    what: "gguf".into(),
                }
            } else {
                ModelError::io(path, e)
            }
        })?;
        let bytes = match map_file(&file) {
            Ok(m) => Bytes::Mapped(m),
            Err(_) => {
                let v = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
                Bytes::Owned(v)
            }
        };
        Self::parse(path, bytes)
    }

    /// Parses a GGUF image held in memory (`path` is only used in messages).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<GgufFile, ModelError> {
        Self::parse(path, Bytes::Owned(bytes))
    }

    fn parse(path: &Path, bytes: Bytes) -> Result<GgufFile, ModelError> {
        let mut c = Cursor {
            buf: &bytes,
            pos: 0,
            path,
        };
        let magic = c.take(4, "magic")?;
        if magic != MAGIC {
            return Err(c.err("not a gguf file (bad magic)"));
        }
        let version = c.u32("version")?;
        if version == 1 {
            return Err(c.err("gguf version 1 is not supported (only 2 and 3)"));
        }
        if version != 2 && version != 3 {
            // A big-endian file reads as a huge version number.
            return Err(c.err(format!(
                "unsupported gguf version {version} (only little-endian versions 2 and 3)"
            )));
        }
        // Minimum on-disk sizes: a tensor info is at least 8+4+8+4+8 bytes, a kv 8+4+1.
        let n_tensors = c.count("tensor count", 32)?;
        let n_kv = c.count("metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(c.err(format!("duplicate metadata key {key}")));
            }
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.err(format!(
                    "tensor {name}: invalid number of dimensions {n_dims}"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let ty = GgmlType::from_id(c.u32(&name)?);
            let offset = c.u64(&name)?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(c.err(format!("invalid general.alignment {v:?}"))),
            },
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let data_len = (bytes.len() as u64).saturating_sub(data_start);
        let file = GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_start: 0,
            bytes: Bytes::Owned(Vec::new()),
        };
        let mut seen = std::collections::HashSet::new();
        for t in &file.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(file.err(format!("duplicate tensor {}", t.name)));
            }
            if t.dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .is_none()
            {
                return Err(file.err(format!("tensor {}: shape {:?} overflows", t.name, t.dims)));
            }
            if t.offset % alignment != 0 {
                return Err(file.err(format!(
                    "tensor {}: offset {} is not aligned",
                    t.name, t.offset
                )));
            }
            let Some(nbytes) = nbytes_of(t) else { continue };
            let end = t.offset.checked_add(nbytes as u64);
            if end.is_none_or(|e| e > data_len) {
                return Err(file.err(format!(
                    "truncated file: tensor {} needs bytes {}..{} of the data section, which has {data_len}",
                    t.name,
                    t.offset,
                    t.offset.saturating_add(nbytes as u64)
                )));
            }
        }
        Ok(GgufFile {
            data_start: data_start as usize,
            bytes,
            ..file
        })
    }

    fn err(&self, msg: impl Into<String>) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor info of `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, ModelError> {
        self.get_str("general.architecture")
            .ok_or_else(|| self.err("missing metadata general.architecture"))
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8], ModelError> {
        let nbytes = nbytes_of(info).ok_or_else(|| self.unsupported(info))?;
        let start = self.data_start + info.offset as usize;
        Ok(&self.bytes[start..start + nbytes])
    }

    fn unsupported(&self, info: &TensorInfo) -> ModelError {
        ModelError::UnsupportedQuantization {
            tensor: format!("{} in {}", info.name, self.path.display()),
            kind: info.ty.name(),
        }
    }

    /// Dequantizes one tensor to `f32` values in PyTorch order (row-major over [`TensorInfo::shape`]).
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>, ModelError> {
        if !info.ty.is_supported() {
            return Err(self.unsupported(info));
        }
        let bytes = self.tensor_bytes(info)?;
        dequant::dequantize(info.ty, bytes, info.numel() as usize).map_err(|e| match e {
            DequantError::Unsupported(_) => self.unsupported(info),
            DequantError::Size { expected, got } => self.err(format!(
                "tensor {}: {} elements of {} need {expected:?} bytes, found {got}",
                info.name,
                info.numel(),
                info.ty.name()
            )),
        })
    }

    /// Dequantizes one tensor into an `f32` CPU tensor of shape [`TensorInfo::shape`].
    pub fn tensor(&self, name: &str) -> Result<Tensor, ModelError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                path: Some(self.path.clone()),
            })?;
        let values = self.dequantize(info)?;
        Ok(Tensor::from_slice(&values).f_reshape(info.shape())?)
    }

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

fn nbytes_of(info: &TensorInfo) -> Option<usize> {
    let n = usize::try_from(info.numel()).ok()?;
    // Quantized rows must be whole blocks: ggml requires dims[0] to be a block multiple.
    let (per_block, _) = info.ty.block_layout()?;
    if !(info.dims[0] as usize).is_multiple_of(per_block) {
        return None;
    }
    info.ty.bytes_for(n)
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
    let rows = *shape.first()? as usize;
    let cols: usize = shape[1..].iter().map(|&d| d as usize).product();
    if heads == 0 || !rows.is_multiple_of(2 * heads) || values.len() != rows * cols {
        return None;
    }
    let d = rows / heads / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..d {
                let dst = h * 2 * d + i * d + j;
                let src = h * 2 * d + 2 * j + i;
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
