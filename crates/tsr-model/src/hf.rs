//! Hugging Face checkpoint directories: safetensors loading (single file or sharded with
//! `model.safetensors.index.json`) and saving.
//!
//! Saving writes everything into a temporary directory beside the target and renames it into
//! place at the end, so a failure never leaves a half-written model directory behind.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::generation::GenerationConfig;
use crate::model::{parameter_shapes, LoadOptions, Model};
use crate::tokenizer::ChatTokenizer;

/// `config.json`.
pub const CONFIG_FILE: &str = "config.json";
/// Single-file weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Index of sharded weights.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
/// `generation_config.json`.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// Reads `config.json` of a model directory.
pub fn load_config(dir: &Path) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_file(&dir.join(CONFIG_FILE))
}

/// Loads config and weights of an HF directory (no tokenizer): the model part of
/// `crate::load`, also usable on checkpoints that ship without tokenizer files.
pub fn load_model_dir(dir: &Path, opts: &LoadOptions) -> Result<Model, ModelError> {
    let config = load_config(dir)?;
    let tensors = read_weights_dir(dir, Some(opts))?;
    Model::from_tensors(config, tensors, opts).map_err(|e| match e {
        ModelError::MissingTensor { name, path: None } => ModelError::MissingTensor {
            name,
            path: Some(weights_path(dir)),
        },
        other => other,
    })
}

fn weights_path(dir: &Path) -> PathBuf {
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if index.is_file() {
        index
    } else {
        dir.join(WEIGHTS_FILE)
    }
}

/// All tensors of an HF directory, from `model.safetensors` or the shards listed in
/// `model.safetensors.index.json`. With `convert`, float tensors are converted to its dtype and
/// device one at a time (so peak memory stays near the final model size).
pub fn read_weights_dir(
    dir: &Path,
    convert: Option<&LoadOptions>,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    let index_path = dir.join(WEIGHTS_INDEX_FILE);
    let single = dir.join(WEIGHTS_FILE);
    if index_path.is_file() {
        let text =
            std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
        let index: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::json(&index_path, e))?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Safetensors {
                path: index_path.clone(),
                msg: "no weight_map object in the index".into(),
            })?;
        let mut by_file: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| ModelError::Safetensors {
                path: index_path.clone(),
                msg: format!("weight_map entry of {name} is not a file name"),
            })?;
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(ModelError::Safetensors {
                    path: index_path.clone(),
                    msg: format!("shard name {file:?} must be a plain file name"),
                });
            }
            by_file
                .entry(file.to_string())
                .or_default()
                .insert(name.clone());
        }
        let mut out = Vec::new();
        for (file, names) in by_file {
            let path = dir.join(&file);
            if !path.is_file() {
                return Err(ModelError::MissingFile {
                    path,
                    what: "weight shard".into(),
                });
            }
            let tensors = read_safetensors(&path, convert)?;
            let present: BTreeSet<&String> = tensors.iter().map(|(n, _)| n).collect();
            if let Some(missing) = names.iter().find(|n| !present.contains(n)) {
                return Err(ModelError::MissingTensor {
                    name: missing.clone(),
                    path: Some(path),
                });
            }
            out.extend(tensors);
        }
        Ok(out)
    } else if single.is_file() {
        read_safetensors(&single, convert)
    } else {
        Err(ModelError::MissingFile {
            path: single,
            what: format!("model weights (or {WEIGHTS_INDEX_FILE})"),
        })
    }
}

#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<memmap2::Mmap, ModelError> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the mapping is read-only and only read while `file` is open; tsr never writes a
    // checkpoint it is loading. As with every mmap-based loader, another process truncating the
    // file during the load could fault; that is outside what a loader can prevent.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

/// Name of a dtype as transformers writes it in `config.json`.
pub fn torch_dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

/// Reads every tensor of one safetensors file (memory-mapped). Truncated or corrupt files and
/// unsupported dtypes are errors naming the file (and tensor).
pub fn read_safetensors(
    path: &Path,
    convert: Option<&LoadOptions>,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    let mmap = map_file(path)?;
    let st = SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        msg: format!("{e:?}"),
    })?;
    let mut out = Vec::with_capacity(st.len());
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            msg: format!("tensor {name}: {e:?}"),
        })?;
        let kind = kind_of(view.dtype()).ok_or_else(|| ModelError::UnsupportedDtype {
            name: name.to_string(),
            dtype: format!("{:?}", view.dtype()),
            path: Some(path.to_path_buf()),
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let mut t = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        if let Some(opts) = convert {
            if t.is_floating_point() {
                t = t.f_to_device_(opts.device, opts.kind, false, false)?;
            }
        }
        out.push((name.to_string(), t));
    }
    Ok(out)
}

/// Options of [`save_model_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveOptions {
    /// Weights above this many bytes are split into shards with an index file.
    pub max_shard_bytes: u64,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            max_shard_bytes: 2_000_000_000,
        }
    }
}

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(name: &str, t: &Tensor) -> Result<Bytes, ModelError> {
    let t = t.detach().f_to_device(Device::Cpu)?.contiguous();
    let dtype = dtype_of(t.kind()).ok_or_else(|| ModelError::UnsupportedDtype {
        name: name.to_string(),
        dtype: format!("{:?}", t.kind()),
        path: None,
    })?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(Bytes {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Writes named tensors into one safetensors file (metadata `format: pt`).
pub fn write_safetensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<(), ModelError> {
    let bytes: Vec<(String, Bytes)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.to_string(), to_bytes(n, t)?)))
        .collect::<Result<_, ModelError>>()?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::serialize_to_file(bytes.iter().map(|(n, b)| (n.as_str(), b)), &metadata, path)
        .map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            msg: format!("{e:?}"),
        })
}

/// Writes `model` as an HF directory `dir`: `config.json` and the weights (sharded above
/// `opts.max_shard_bytes`), then lets `extra` add files (tokenizer, generation config) to the
/// staging directory. The directory appears (or replaces an existing one) only when everything
/// was written.
pub fn save_model_dir(
    model: &Model,
    dir: &Path,
    opts: &SaveOptions,
    extra: impl FnOnce(&Path) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    if dir.file_name().is_none() {
        return Err(ModelError::Other(format!(
            "cannot save a model to {}",
            dir.display()
        )));
    }
    tsr_io::replace_dir(dir, |tmp| {
        write_contents(model, tmp, opts).and_then(|()| extra(tmp))
    })
    .map_err(|e| e.into_error(|e| ModelError::io(dir, e)))?;
    tracing::info!(dir = %dir.display(), "saved model");
    Ok(())
}

/// Is `dir` a complete model written by [`save_model_into`] (or any HF folder): `config.json`
/// and its weights (`model.safetensors`, or a shard index)?
pub fn holds_model(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && (dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file())
}

/// Writes `model` (and `extra`'s files) as an HF model **into** the existing folder `dir`, beside
/// whatever else it holds (TRL's `output_dir` layout: the model at the top, the run's own files
/// next to it). Everything is written to a staging folder inside `dir` first, then moved into
/// place file by file with the weights last and the shard index very last, so a crash leaves
/// `dir` without weights (see [`holds_model`]), never with weights and a stale configuration.
pub fn save_model_into(
    model: &Model,
    dir: &Path,
    opts: &SaveOptions,
    extra: impl FnOnce(&Path) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tmp = dir.join(format!(".tsr-save-tmp-{}", std::process::id()));
    stage(model, &tmp, opts, extra)?;
    let mut names: Vec<String> = std::fs::read_dir(&tmp)
        .map_err(|e| ModelError::io(&tmp, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // Other files, then weight shards, then the index (rank 0, 1, 2), each group sorted.
    let rank = |n: &str| match n {
        "model.safetensors.index.json" => 2,
        n if n.ends_with(".safetensors") => 1,
        _ => 0,
    };
    names.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
    // Stale weights of an earlier save go first, so a crash below never pairs them with the
    // new configuration.
    for stale in ["model.safetensors.index.json", "model.safetensors"] {
        match std::fs::remove_file(dir.join(stale)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ModelError::io(dir.join(stale), e))
            }
            _ => {}
        }
    }
    for n in &names {
        let to = dir.join(n);
        std::fs::rename(tmp.join(n), &to).map_err(|e| ModelError::io(&to, e))?;
    }
    std::fs::remove_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    tracing::info!(dir = %dir.display(), "saved model");
    Ok(())
}

/// Writes the model and `extra`'s files into a fresh staging folder `tmp` (replacing a stale one
/// of the same name); on an error the staging folder is removed.
fn stage(
    model: &Model,
    tmp: &Path,
    opts: &SaveOptions,
    extra: impl FnOnce(&Path) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(|e| ModelError::io(tmp, e))?;
    }
    std::fs::create_dir(tmp).map_err(|e| ModelError::io(tmp, e))?;
    let written = write_contents(model, tmp, opts).and_then(|()| extra(tmp));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(tmp);
    }
    written
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), ModelError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ModelError::json(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| ModelError::io(path, e))
}

fn write_contents(model: &Model, dir: &Path, opts: &SaveOptions) -> Result<(), ModelError> {
    let mut config = model.config().clone();
    let dtype = torch_dtype_name(model.kind()).to_string();
    if config.torch_dtype.is_some() {
        config.torch_dtype = Some(dtype.clone());
    }
    config.dtype = Some(dtype);
    if config.architectures.is_none() {
        let arch = match config.model_type.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            "mistral" => "MistralForCausalLM",
            _ => "LlamaForCausalLM",
        };
        config.architectures = Some(vec![arch.to_string()]);
    }
    write_json(&dir.join(CONFIG_FILE), &config)?;

    let vars = model.var_store().variables();
    let order: Vec<String> = parameter_shapes(model.config())
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| vars.contains_key(n))
        .collect();
    let sizes: Vec<u64> = order
        .iter()
        .map(|n| (vars[n].numel() * vars[n].kind().elt_size_in_bytes()) as u64)
        .collect();
    let total: u64 = sizes.iter().sum();
    // Greedy grouping in parameter order; a tensor larger than the limit gets a shard of its own.
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut current = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let last = groups.last_mut().expect("non-empty");
        if !last.is_empty() && current + size > opts.max_shard_bytes {
            groups.push(vec![i]);
            current = size;
        } else {
            last.push(i);
            current += size;
        }
    }
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let write_shard = |file: &Path, members: &[usize]| -> Result<(), ModelError> {
        let bytes: Vec<(String, Bytes)> = members
            .iter()
            .map(|&i| Ok((order[i].clone(), to_bytes(&order[i], &vars[&order[i]])?)))
            .collect::<Result<_, ModelError>>()?;
        safetensors::serialize_to_file(bytes.iter().map(|(n, b)| (n.as_str(), b)), &metadata, file)
            .map_err(|e| ModelError::Safetensors {
                path: file.to_path_buf(),
                msg: format!("{e:?}"),
            })
    };
    if groups.len() == 1 {
        write_shard(&dir.join(WEIGHTS_FILE), &groups[0])?;
    } else {
        let n = groups.len();
        let mut weight_map = BTreeMap::new();
        for (s, members) in groups.iter().enumerate() {
            let file = format!("model-{:05}-of-{n:05}.safetensors", s + 1);
            write_shard(&dir.join(&file), members)?;
            for &i in members {
                weight_map.insert(order[i].clone(), file.clone());
            }
        }
        let index = serde_json::json!({
            "metadata": {"total_size": total},
            "weight_map": weight_map,
        });
        write_json(&dir.join(WEIGHTS_INDEX_FILE), &index)?;
    }
    Ok(())
}

impl Model {
    /// Saves an HF directory that transformers loads: `config.json`, the weights (sharded with an
    /// index above 2 GB), the tokenizer files with the chat template and
    /// `generation_config.json`. Nothing is half-written: the directory appears (or replaces an
    /// existing one) only when every file was written.
    pub fn save_hf(
        &self,
        dir: &Path,
        tokenizer: &ChatTokenizer,
        generation: &GenerationConfig,
    ) -> Result<(), ModelError> {
        self.save_hf_with(dir, tokenizer, generation, &SaveOptions::default())
    }

    /// [`Model::save_hf`] with explicit options (shard size).
    pub fn save_hf_with(
        &self,
        dir: &Path,
        tokenizer: &ChatTokenizer,
        generation: &GenerationConfig,
        opts: &SaveOptions,
    ) -> Result<(), ModelError> {
        if tokenizer.vocab_size() > self.config().vocab_size {
            return Err(ModelError::VocabMismatch {
                tokenizer: tokenizer.vocab_size(),
                model: self.config().vocab_size,
            });
        }
        save_model_dir(self, dir, opts, |staging| {
            tokenizer.save(staging)?;
            generation.save(staging)
        })
    }
}
