//! The one error type of `tsr-loop`.

use std::path::PathBuf;

/// Everything that can stop a run (or a report of one, [`crate::report`]).
///
/// A variant with a cause keeps it as its [`std::error::Error::source`] and does not repeat it
/// in its own message: print the whole chain (`{:#}` of an `anyhow::Error`, or
/// [`error_chain`]) to see both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopError {
    #[error("{path}")]
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
    #[error("iteration {iteration}, stage {stage}: backend failed")]
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
    /// Another process holds the run folder's lock (see [`crate::lock`]).
    #[error(
        "run folder {path} is in use by another tsr process{}; wait for it to finish or stop it \
         (the lock is released when that process exits)",
        holder(*pid)
    )]
    Locked { path: PathBuf, pid: Option<u32> },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// `error: cause: cause's cause ...` on one line: the error's message and every source's, each
/// once (what `{:#}` of an `anyhow::Error` prints), for places that keep an error as text.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Errors of a [`crate::Backend`] are its own; they travel boxed.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub type Result<T, E = LoopError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LoopError {
    let path = path.into();
    move |source| LoopError::Io { path, source }
}
