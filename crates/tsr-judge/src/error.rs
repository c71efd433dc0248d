//! The crate's error type.

use std::path::PathBuf;

use crate::generate::GenerateError;

/// Everything that can go wrong while configuring or running a judge.
///
/// A variant with a cause keeps it as its [`std::error::Error::source`] and does not repeat it
/// in its own message (print the chain, as the CLI does with `{:#}`).
///
/// A verdict that does not parse is *not* an error: it is data, kept in the
/// [`Verdict`](crate::Verdict) with its [`ParseFailure`](crate::ParseFailure) and counted in
/// [`JudgeStats`](crate::JudgeStats).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JudgeError {
    /// A configuration value is out of its allowed range.
    #[error("invalid judge config: `{field}` {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// The judge template file could not be read.
    #[error("cannot read judge template {}", path.display())]
    TemplateRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The judge template lacks a placeholder it must have (`{instruction}` or `{response}`).
    #[error("judge template {origin} lacks the `{placeholder}` placeholder")]
    TemplatePlaceholder {
        origin: String,
        placeholder: &'static str,
    },

    /// The generator behind an LLM judge failed.
    #[error("judge generator failed on a batch of {requests} request(s)")]
    Generator {
        requests: usize,
        #[source]
        source: GenerateError,
    },

    /// The generator returned a different number of outputs than requests.
    #[error("judge generator returned {got} output(s) for {expected} request(s)")]
    OutputCount { expected: usize, got: usize },

    /// The generator returned a different number of completions for one request than asked.
    #[error("judge generator returned {got} completion(s) for item `{id}`, expected {expected}")]
    SampleCount {
        id: String,
        expected: usize,
        got: usize,
    },

    /// The judge mode reads next-token probabilities and the generator cannot report them.
    #[error("judge mode `{mode}` reads next-token probabilities, but this generator cannot report them; use mode `sampled` or an engine that returns log-probs")]
    NoProbe { mode: &'static str },

    /// A verifier judge got an item without a reference answer.
    #[error("item `{id}` has no reference answer (the verifier judge needs one)")]
    MissingReference { id: String },

    /// A verifier judge got a reference answer with no number in it.
    #[error("item `{id}`: no final number in reference answer {reference:?}")]
    BadReference { id: String, reference: String },

    /// Reading or writing a JSON-lines file failed.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON-lines record is malformed (not JSON, not an object, or a required field is missing
    /// or has the wrong type). `line` is 1-based.
    #[error("{}:{line}: {message}", path.display())]
    Jsonl {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// Evaluation or training data is malformed (no line to point at: a whole file or archive
    /// member, or a set of records that contradict each other).
    #[error("{origin}: {message}")]
    InvalidData { origin: String, message: String },

    /// Training data contains evaluation prompts (AlpacaEval instructions, GSM8K test problems).
    #[error("{origin}: {count} prompt(s) are evaluation prompts ({sources}) and must not be trained on; the first, at item {first_index}: {first:?}")]
    EvalOverlap {
        origin: String,
        count: usize,
        sources: String,
        first_index: usize,
        first: String,
    },

    /// An option of a data builder is out of range.
    #[error("invalid option `{name}`: {reason}")]
    InvalidOption { name: &'static str, reason: String },
}
