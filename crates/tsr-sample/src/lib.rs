//! `tsr-sample`: batched sampling for `tsr-model`.
//!
//! - [`Processors`]: transformers-compatible logits processors on `[N, V]` tensors (repetition
//!   penalty, temperature, top-k, top-p, min-p).
//! - [`select`]: greedy argmax and seeded inverse-CDF sampling (one RNG per sequence).

pub mod error;
pub mod processors;
pub mod select;
pub mod stop;

pub use error::SampleError;
pub use processors::Processors;
pub use select::SequenceRng;
