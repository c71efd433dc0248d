//! The GGUF (version 3) layout: header, metadata, tensor infos and aligned tensor data, written
//! beside the final name and renamed into place.

use std::io::Write;
use std::path::Path;

use crate::error::ModelError;

/// GGUF value type ids.
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

pub(super) const ALIGNMENT: usize = 32;

/// One metadata value of the writer.
pub(super) enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// A tensor ready to write: llama.cpp name, ggml dims (innermost first), type and bytes.
pub(super) struct Out {
    pub(super) name: String,
    pub(super) dims: Vec<u64>,
    pub(super) ty: u32,
    pub(super) data: Vec<u8>,
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
pub(super) fn write_file(
    path: &Path,
    meta: &[(String, Meta)],
    tensors: &[Out],
) -> Result<u64, ModelError> {
    let dir = tsr_io::parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let io = |e| ModelError::io(path, e);
    // Dropped without a commit (an error on the way), it removes its temporary.
    let mut w = tsr_io::AtomicFile::create(path).map_err(io)?;
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
    let size = (header.len() + offset) as u64;
    w.commit().map_err(io)?;
    Ok(size)
}
