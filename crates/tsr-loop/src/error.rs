//! The one error type of `tsr-loop`.

use std::path::PathBuf;

/// Everything that can stop a run (or a report of one, [`crate::report`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid configuration: {message}")]
    ConfigParse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}:{line}: {message}")]
    Prompts {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Record { path: PathBuf, message: String },
    #[error("run directory {path}: {message}")]
    RunDir { path: PathBuf, message: String },
    #[error("iteration {iteration}, stage {stage}: backend failed: {source}")]
    Backend {
        iteration: u32,
        stage: String,
        #[source]
        source: BackendError,
    },
    #[error("{path}: chart not drawn: {message}")]
    Chart { path: PathBuf, message: String },
    #[error("iteration {iteration}, stage {stage}: {message}")]
    Protocol {
        iteration: u32,
        stage: String,
        message: String,
    },
}

/// Errors of a [`crate::Backend`] are its own; they travel boxed.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub type Result<T, E = LoopError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LoopError {
    let path = path.into();
    move |source| LoopError::Io { path, source }
}
