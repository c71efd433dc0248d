//! `tsr-sample`: batched sampling for `tsr-model`.
//!
//! - [`Processors`]: transformers-compatible logits processors on `[N, V]` tensors (repetition
//!   penalty, temperature, top-k, top-p, min-p).
//! - [`select`]: greedy argmax and seeded inverse-CDF sampling (one RNG per sequence).
//! - [`Sampler`]: batched generation of prompts x K samples with shared prefills, batch
//!   compaction, EOS / stop-string / length stops; implements [`tsr_judge::Generator`].

pub mod error;
pub mod probe;
pub mod processors;
pub mod sampler;
pub mod select;
pub mod stop;

pub use error::SampleError;
pub use processors::Processors;
pub use sampler::{LogprobMode, Progress, Sample, Sampler, SamplerOptions};
pub use select::SequenceRng;
