//! The error type of `tsr-sample`.

/// Everything that can go wrong while sampling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// A sampling parameter is out of range.
    #[error("invalid sampling parameter {name} = {value}: {reason}")]
    InvalidParam {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A prompt does not fit in the model context and truncation is off.
    #[error(
        "prompt {prompt} has {tokens} tokens but the model context is {context} \
         (shorten it or set truncate_prompt)"
    )]
    PromptTooLong {
        prompt: usize,
        tokens: usize,
        context: usize,
    },
    /// The model produced logits no token can be drawn from (a NaN or `+inf`, or `-inf` for
    /// every token): broken weights or inputs. Generation stops rather than picking a token.
    #[error(
        "the model's logits are {what} for prompt {prompt}, sample {sample} (batch row {row}) at \
         generation step {step}: generation stopped (are the weights broken?)"
    )]
    NonFiniteLogits {
        what: &'static str,
        prompt: usize,
        sample: usize,
        row: usize,
        step: usize,
    },
    /// A prompt tokenized to nothing.
    #[error("prompt {prompt} is empty after tokenization")]
    EmptyPrompt { prompt: usize },
    /// The requested shapes would not fit in memory (see [`tsr_model::memory`]).
    #[error(transparent)]
    Memory(#[from] tsr_model::memory::MemoryLimitError),
    /// The model or tokenizer failed.
    #[error(transparent)]
    Model(#[from] tsr_model::ModelError),
    /// A tensor operation failed (shape or device mismatch).
    #[error("tensor operation failed in {during}")]
    Tensor {
        during: &'static str,
        #[source]
        source: tch::TchError,
    },
}

/// Attach a description of the step to a tch error.
pub(crate) trait TchContext<T> {
    fn during(self, during: &'static str) -> Result<T, SampleError>;
}

impl<T> TchContext<T> for Result<T, tch::TchError> {
    fn during(self, during: &'static str) -> Result<T, SampleError> {
        self.map_err(|source| SampleError::Tensor { during, source })
    }
}
