//! GGUF files (llama.cpp's checkpoint format, versions 2 and 3): metadata, tensor table and
//! tensor data, memory-mapped.
//!
//! tsr reads GGUF with this small reader rather than a crate: the maintained Rust readers either
//! accept only version 3 (`ggus` rejects version 2 files) or pull in a whole inference stack.
//! The format is simple (little-endian; header, key/value metadata, tensor infos, aligned data),
//! and every read below is bounds-checked, so a truncated or corrupt file is an error naming the
//! file, never a panic.
//!
//! On top of the reader ([`hf_map`]): the llama architecture's mapping to Hugging Face names
//! (undoing llama.cpp's Q/K row permutation) and a `ModelConfig` built from the metadata.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::dequant::{self, DequantError, GgmlType};
use crate::error::ModelError;

pub mod hf_map;

pub use hf_map::{hf_name, llama3_scaling_from_factors, unpermute_rows, SUPPORTED_ARCHS};

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
