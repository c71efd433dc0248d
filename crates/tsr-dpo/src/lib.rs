//! `tsr-dpo` (work in progress).
pub mod error;
pub mod logprobs;
pub mod loss;
pub use error::{DpoError, Result};
