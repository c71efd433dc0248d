//! [`load`]: one entry point for every way a model can be named: a built-in name
//! (`smollm2-135m-instruct`), a Hugging Face directory, or a `.gguf` file. Also device-string
//! parsing shared by the CLI.

use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use crate::error::ModelError;
use crate::gguf::GgufFile;
use crate::hub;
use crate::model::{LoadOptions, Model};
use crate::tokenizer::ChatTokenizer;

pub use crate::generation::GenerationConfig;
pub use crate::hub::tsr_home;

/// A loaded model with everything needed to use it.
#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    pub tokenizer: ChatTokenizer,
    pub generation: GenerationConfig,
    /// The directory or file the weights came from.
    pub source: PathBuf,
}

/// The judge-tuned seed model that `tsr seed-model` builds from the built-in model (a Hugging
/// Face folder under `tsr_home()/models/`), usable by this name once built.
pub const SEED_MODEL: &str = "smollm2-135m-judge";

/// Where [`SEED_MODEL`] lives once built.
pub fn seed_model_dir() -> PathBuf {
    hub::tsr_home().join("models").join(SEED_MODEL)
}

/// The folder of a locally built model name ([`SEED_MODEL`]); an error naming the command that
/// builds it when it is not there yet.
fn built_model(spec: &str) -> Option<Result<PathBuf, ModelError>> {
    (spec == SEED_MODEL).then(|| {
        let dir = seed_model_dir();
        if dir.join("config.json").is_file() {
            Ok(dir)
        } else {
            Err(ModelError::NotBuilt {
                name: spec.to_string(),
                path: dir,
                how: "`tsr seed-model` (or `cargo xtask seed-model`)".into(),
            })
        }
    })
}

/// Loads a model by built-in name, Hugging Face directory or `.gguf` file.
pub fn load(spec: &str, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    if let Some(builtin) = hub::builtin(spec) {
        let path = builtin.fetch()?;
        return load_gguf(&path, opts);
    }
    if let Some(dir) = built_model(spec) {
        return load_hf_dir(&dir?, opts);
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return load_hf_dir(path, opts);
    }
    let is_gguf = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf {
        if !path.exists() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "gguf".into(),
            });
        }
        return load_gguf(path, opts);
    }
    if path.is_file() {
        // A file without the extension: accept it if it starts with the GGUF magic.
        let mut magic = [0u8; 4];
        let ok = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok();
        if ok && &magic == b"GGUF" {
            return load_gguf(path, opts);
        }
    }
    Err(ModelError::UnknownModel {
        spec: spec.to_string(),
    })
}

/// Loads a GGUF file of the llama architecture: config from its metadata, dequantized weights
/// under HF names, the tokenizer and chat template from its metadata.
pub fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    let file = GgufFile::open(path)?;
    let config = file.model_config()?;
    let tokenizer = ChatTokenizer::from_gguf(&file)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(ModelError::VocabMismatch {
            tokenizer: tokenizer.vocab_size(),
            model: config.vocab_size,
        });
    }
    let tensors = file.hf_tensors_as(&config, Some(opts))?;
    drop(file);
    let generation = GenerationConfig::from_model(&config, &tokenizer);
    let model = Model::from_tensors(config, tensors, opts)?;
    Ok(Loaded {
        model,
        tokenizer,
        generation,
        source: path.to_path_buf(),
    })
}

/// Loads a Hugging Face directory: weights through [`crate::hf`], tokenizer files and
/// `generation_config.json` (derived from the config and tokenizer when absent).
pub fn load_hf_dir(dir: &Path, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    let tokenizer = ChatTokenizer::from_hf_dir(dir)?;
    let model = crate::hf::load_model_dir(dir, opts)?;
    let model_vocab = model.config().vocab_size;
    if tokenizer.vocab_size() > model_vocab {
        return Err(ModelError::VocabMismatch {
            tokenizer: tokenizer.vocab_size(),
            model: model_vocab,
        });
    }
    let gen_path = dir.join("generation_config.json");
    let generation = if gen_path.is_file() {
        GenerationConfig::from_file(&gen_path)?
    } else {
        GenerationConfig::from_model(model.config(), &tokenizer)
    };
    Ok(Loaded {
        model,
        tokenizer,
        generation,
        source: dir.to_path_buf(),
    })
}

/// Loads only the tokenizer of a model spec (no weights): cheap for tools that just tokenize.
pub fn load_tokenizer(spec: &str) -> Result<ChatTokenizer, ModelError> {
    let path = match (hub::builtin(spec), built_model(spec)) {
        (Some(b), _) => b.fetch()?,
        (None, Some(dir)) => dir?,
        (None, None) => PathBuf::from(spec),
    };
    if path.is_dir() {
        return ChatTokenizer::from_hf_dir(&path);
    }
    if path.is_file() {
        return ChatTokenizer::from_gguf(&GgufFile::open(&path)?);
    }
    if path.extension().is_some_and(|e| e == "gguf") {
        return Err(ModelError::MissingFile {
            path,
            what: "gguf".into(),
        });
    }
    Err(ModelError::UnknownModel {
        spec: spec.to_string(),
    })
}

/// Parses a weight dtype: `f32` (the exact reference), `bf16` or `f16` (half the bytes read per
/// token; on a CPU without native bf16 arithmetic, faster only where decoding is bound by memory
/// reads, as at batch 1: see docs/benchmarks.md).
pub fn parse_dtype(s: &str) -> Result<Kind, ModelError> {
    match s.trim() {
        "f32" | "float32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "f16" | "float16" => Ok(Kind::Half),
        other => Err(ModelError::input(format!(
            "invalid dtype {other:?}: expected f32, bf16 or f16"
        ))),
    }
}

/// Parses a device string: `cpu`, `cuda` (= `cuda:0`), `cuda:N`, or `auto` (CUDA 0 when
/// available, else CPU). `cuda` and `cuda:N` are an error ("CUDA requested but not available:
/// ...") when libtorch sees no such GPU.
pub fn parse_device(s: &str) -> Result<Device, ModelError> {
    let s = s.trim();
    let bad = || {
        ModelError::input(format!(
            "invalid device {s:?}: expected cpu, cuda, cuda:N or auto"
        ))
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" | "gpu" => cuda_device(0),
        _ => {
            let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
            let n: usize = n.parse().map_err(|_| bad())?;
            cuda_device(n)
        }
    }
}

/// `cuda:n` when libtorch sees that GPU; otherwise a one-line error (rather than the C++
/// backtrace libtorch prints when a tensor is first moved there).
fn cuda_device(n: usize) -> Result<Device, ModelError> {
    let count = if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    };
    check_cuda(n, count)
}

fn check_cuda(n: usize, count: usize) -> Result<Device, ModelError> {
    match count {
        0 => Err(ModelError::Other(format!(
            "CUDA requested but not available: libtorch finds no CUDA device (no NVIDIA driver or \
             GPU, or a CPU-only libtorch build; `tsr doctor` shows what it sees); use --device \
             cpu, or auto to take a GPU when there is one (asked for cuda:{n})"
        ))),
        c if n >= c => Err(ModelError::Other(format!(
            "CUDA requested but not available: cuda:{n} asked for, libtorch sees {c} CUDA \
             device(s) (cuda:0 to cuda:{})",
            c - 1
        ))),
        _ => Ok(Device::Cuda(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_parse() {
        assert_eq!(parse_dtype("f32").unwrap(), Kind::Float);
        assert_eq!(parse_dtype("bf16").unwrap(), Kind::BFloat16);
        assert_eq!(parse_dtype("float16").unwrap(), Kind::Half);
        let e = parse_dtype("int4").unwrap_err().to_string();
        assert!(e.contains("expected f32, bf16 or f16"), "{e}");
    }

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_device("tpu").is_err());
        assert_eq!(check_cuda(1, 2).unwrap(), Device::Cuda(1));
        assert_eq!(check_cuda(0, 1).unwrap(), Device::Cuda(0));
    }

    /// Issue 14: `cuda` without a GPU is a one-line error, not a libtorch backtrace.
    #[test]
    fn cuda_without_a_gpu_is_a_one_line_error() {
        for n in [0, 3] {
            let e = check_cuda(n, 0).unwrap_err().to_string();
            assert!(e.starts_with("CUDA requested but not available: "), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = check_cuda(2, 2).unwrap_err().to_string();
        assert!(
            e.contains("cuda:2") && e.contains("2 CUDA device(s)"),
            "{e}"
        );
        // On this machine, whatever it has.
        if tch::Cuda::is_available() {
            assert_eq!(parse_device("cuda").unwrap(), Device::Cuda(0));
        } else {
            let e = parse_device("cuda").unwrap_err().to_string();
            assert!(e.starts_with("CUDA requested but not available"), "{e}");
            assert!(parse_device("cuda:1").is_err());
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
        }
    }

    #[test]
    fn generation_config_roundtrip() {
        let g: GenerationConfig = serde_json::from_str(
            r#"{"bos_token_id": 1, "eos_token_id": [2, 3], "temperature": 0.6}"#,
        )
        .unwrap();
        assert_eq!(g.eos_ids(), vec![2, 3]);
        assert_eq!(
            g.extra.get("temperature"),
            Some(&serde_json::Value::from(0.6))
        );
        let dir = tempfile::tempdir().unwrap();
        g.save(dir.path()).unwrap();
        assert_eq!(
            GenerationConfig::from_file(&dir.path().join("generation_config.json")).unwrap(),
            g
        );
    }

    #[test]
    fn unknown_specs_and_missing_files_are_named() {
        let e = load("/nonexistent/model.gguf", &LoadOptions::default()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
        let e = load("no-such-model", &LoadOptions::default()).unwrap_err();
        assert!(matches!(e, ModelError::UnknownModel { .. }), "{e}");
    }
}
