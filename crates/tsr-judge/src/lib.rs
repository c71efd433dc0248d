//! `tsr-judge`: LLM-as-a-judge for self-rewarding training (being built; see issue 5).
//!
//! [`generate`] holds the generation seam shared by the judge, the sampler and the loop.

pub mod generate;

pub use generate::{
    ChatMessage, Completion, FinishReason, GenRequest, GenerateError, Generator, Prompt,
    SamplingParams,
};
