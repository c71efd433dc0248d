//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `tsr-dpo`.
///
/// Messages are lowercase and name what a user needs to act on: the file and line of a bad pair,
/// the step and batch of a non-finite loss, the tensor whose shape is off.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DpoError {
    /// A configuration value is out of range (for example `beta <= 0`).
    #[error("invalid dpo config: {field}: {reason}")]
    Config {
        /// The offending field, as spelled in the TOML section.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// An SFT configuration value is out of range.
    #[error("invalid sft config: {field}: {reason}")]
    SftConfig {
        /// The offending field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A line of a JSONL data file (preference pairs, SFT examples) could not be used.
    #[error("{path}:{line}: {reason}")]
    Data {
        /// The JSONL file (or `<memory>` for pairs given in memory).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The batch would not fit in memory (see [`tsr_model::memory`]).
    #[error(transparent)]
    Memory(#[from] tsr_model::memory::MemoryLimitError),
    /// Tensor shapes or kinds that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The loss or a gradient became NaN or infinite; training stops before any checkpoint.
    #[error("non-finite {what} at step {step}, batch {batch} (pairs {pairs:?})")]
    NonFinite {
        /// `loss` or `gradient`.
        what: &'static str,
        /// Optimizer step (1-based) being computed.
        step: u64,
        /// Index of the micro-batch within the epoch's data order.
        batch: usize,
        /// Dataset indices of the pairs in that micro-batch.
        pairs: Vec<usize>,
    },
    /// A checkpoint cannot be resumed (missing file, other config or data).
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What does not match or is missing.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// JSON (de)serialisation of a checkpoint, cache or metrics record failed.
    #[error("invalid json in {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An error from libtorch.
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
    /// An error from the model crate (forward pass, tokenizer, saving).
    #[error(transparent)]
    Model(#[from] tsr_model::ModelError),
}

/// `Result` with [`DpoError`].
pub type Result<T, E = DpoError> = std::result::Result<T, E>;

impl DpoError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DpoError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        DpoError::Json {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        DpoError::Config {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_errors_print_each_cause_once() {
        let io = DpoError::Io {
            path: "/x/metrics.jsonl".into(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        };
        assert_eq!(
            tsr_model::error_chain(&io),
            "i/o error on /x/metrics.jsonl: denied"
        );
    }
}
