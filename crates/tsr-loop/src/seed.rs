//! Deterministic seed derivation: [`derive_seed`], defined with every other seed of the
//! workspace in [`tsr_judge::seed`].
//!
//! Every stochastic call of a run gets a seed derived from the run seed and a path of labels
//! (iteration, stage, prompt id, response index), so results do not depend on batching, chunking
//! or on whether the run was resumed. The hash is part of the run format and must not change.

pub use tsr_judge::seed::derive_seed;
