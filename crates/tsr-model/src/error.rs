//! The one error type of `tsr-model`.

use std::path::PathBuf;

/// Everything that can go wrong while loading, running or saving a model.
///
/// Messages are lowercase and name the file (and tensor) involved, so a user can act on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A model name tsr builds locally has not been built yet.
    #[error("model `{name}` is not built yet (expected at {}); build it with {how}", path.display())]
    NotBuilt {
        name: String,
        path: PathBuf,
        how: String,
    },
    /// Reading or writing a file failed (includes a missing file).
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A required file of a model directory is absent.
    #[error("missing {what} file {path}")]
    MissingFile { path: PathBuf, what: String },
    /// A JSON file (config.json, index, tokenizer_config.json, ...) does not parse.
    #[error("invalid json in {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file is truncated, corrupt or otherwise unreadable.
    #[error("invalid safetensors file {path}: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    /// A `config.json` is readable but describes something inconsistent or unsupported.
    #[error("invalid model config {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    /// The checkpoint lacks a tensor the architecture needs.
    #[error("missing tensor {name}{}", in_file(.path))]
    MissingTensor { name: String, path: Option<PathBuf> },
    /// A tensor has the wrong shape for the configuration.
    #[error("shape mismatch for tensor {name}: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    /// A tensor is stored in a dtype tsr cannot convert.
    #[error("unsupported dtype {dtype} for tensor {name}{}", in_file(.path))]
    UnsupportedDtype {
        name: String,
        dtype: String,
        path: Option<PathBuf>,
    },
    /// `model_type` / GGUF `general.architecture` is not one tsr implements.
    #[error("unsupported architecture {arch}{}", in_file(.path))]
    UnsupportedArchitecture { arch: String, path: Option<PathBuf> },
    /// A GGUF tensor uses a quantization type tsr cannot dequantize.
    #[error("unsupported quantization type {kind} for tensor {tensor}")]
    UnsupportedQuantization { tensor: String, kind: String },
    /// A GGUF file is truncated, corrupt or inconsistent.
    #[error("invalid gguf file {path}: {msg}")]
    Gguf { path: PathBuf, msg: String },
    /// Building or running the tokenizer failed.
    #[error("tokenizer error{}: {msg}", in_file(.path))]
    Tokenizer { path: Option<PathBuf>, msg: String },
    /// The tokenizer's vocabulary does not fit the model's embedding matrix.
    #[error(
        "tokenizer vocabulary ({tokenizer}) does not match the model's embedding ({model} rows)"
    )]
    VocabMismatch { tokenizer: usize, model: usize },
    /// A chat template failed to compile or render.
    #[error("chat template error: {msg}")]
    Template { msg: String },
    /// Bad arguments to a forward call (shapes, dtypes, cache state).
    #[error("invalid input: {msg}")]
    InvalidInput { msg: String },
    /// An error raised by libtorch.
    #[error("libtorch error")]
    Torch(#[from] tch::TchError),
    /// Fetching a built-in model failed.
    #[error("download of {what} failed: {msg}")]
    Download { what: String, msg: String },
    /// A downloaded or cached file has the wrong checksum.
    #[error("checksum mismatch for {path}: expected sha256 {expected}, found {found}")]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// A model spec that is neither a built-in name, an HF directory nor a `.gguf` file.
    #[error("unknown model {spec}: not a built-in name, an hf directory or a .gguf file")]
    UnknownModel { spec: String },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

fn in_file(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" in {}", p.display()),
        None => String::new(),
    }
}

impl ModelError {
    /// Wraps an i/o error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a JSON error with the path of the file.
    pub fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        ModelError::Json {
            path: path.into(),
            source,
        }
    }

    /// An [`ModelError::InvalidInput`] with the given message.
    pub fn input(msg: impl Into<String>) -> Self {
        ModelError::InvalidInput { msg: msg.into() }
    }
}

/// An error and its causes on one line, as `anyhow`'s `{:#}` prints them (`a: b: c`): how the
/// CLI shows errors, so a message should not repeat its cause.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out += &format!(": {s}");
        cur = s.source();
    }
    out
}

/// Shorthand used throughout the crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_errors_print_each_cause_once() {
        let io = ModelError::Io {
            path: "/x/config.json".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(
            error_chain(&io),
            "i/o error on /x/config.json: no such file"
        );
        let json = ModelError::Json {
            path: "/x/config.json".into(),
            source: serde_json::from_str::<serde_json::Value>("{").unwrap_err(),
        };
        let text = error_chain(&json);
        assert_eq!(text.matches("EOF while parsing").count(), 1, "{text}");
    }
}
