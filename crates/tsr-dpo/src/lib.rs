//! `tsr-dpo`: Direct Preference Optimization on libtorch (via `tch`).
//!
//! Train a causal language model ([`tsr_model::Model`]) on preference pairs — a prompt, a
//! preferred (`chosen`) and a dispreferred (`rejected`) completion — with the DPO loss or one of
//! its variants, the way TRL's `DPOTrainer` does, but with a memory-lean log-prob computation
//! and no second model in memory.
//!
//! # Quick start
//! ```no_run
//! use std::path::Path;
//! use tsr_dpo::{train_dpo_jsonl, DpoConfig};
//! use tsr_model::{load, LoadOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut loaded = load("smollm2-135m-instruct", &LoadOptions::default())?;
//! let cfg = DpoConfig { beta: 0.1, max_steps: Some(10), ..DpoConfig::default() }.validate()?;
//! let report = train_dpo_jsonl(&mut loaded.model, &loaded.tokenizer, Path::new("pairs.jsonl"), &cfg, Path::new("out"), |m, total| {
//!     eprintln!("step {}/{total} loss {:.4}", m.step, m.loss);
//! })?;
//! tsr_dpo::save_model(&loaded.model, &loaded.tokenizer, &loaded.generation, Path::new("out/model"))?;
//! # let _ = report; Ok(()) }
//! ```
//! `examples/train_jsonl.rs` is the same as a runnable program; `tsr train-dpo` is the CLI.
//!
//! # Data
//! JSON lines `{"prompt", "chosen", "rejected"}`, plain strings or chat messages (TRL's
//! "standard" and "conversational" preference formats); see [`data`] for the exact
//! tokenization (prompt ids and completion ids are tokenized separately and concatenated; EOS
//! appended to plain completions; truncation to `max_length` keeping the start, as TRL).
//! A malformed line is a [`DpoError::Data`] naming file and line.
//!
//! # What a training run does
//! 1. **Reference log-probs once.** [`reference::cached_reference_logps`] scores every pair
//!    with the starting model (eval mode, no gradients) and caches the numbers on disk under a
//!    hash of model and data; the reference model is never kept in memory (TRL's
//!    `precompute_ref_log_probs=True`).
//! 2. **Steps.** [`Trainer`] batches pairs bucketed by length (seeded order), runs chosen and
//!    rejected through **one** concatenated forward, computes completion log-probs in chunks
//!    ([`logprobs`]: the `B × T × V` logits are never materialised, not even for backward),
//!    applies the loss ([`loss`]), accumulates gradients over micro-batches, clips the global
//!    norm, and steps its own AdamW (weight decay, warm-up then linear/cosine decay to a floor).
//! 3. **Metrics** per step, with TRL's names (`loss`, `rewards/chosen`, `rewards/rejected`,
//!    `rewards/margins`, `rewards/accuracies`, `logps/chosen`, `logps/rejected`, `grad_norm`,
//!    `learning_rate`, `tokens/s`, plus `step`, `epoch`) to a [`MetricsSink`]
//!    (`metrics.jsonl` via [`JsonlSink`]).
//! 4. **Safety and resume.** A non-finite loss or gradient stops training with
//!    [`DpoError::NonFinite`] naming the step, the batch and its pairs, before the optimizer
//!    touches the weights; checkpoints refuse non-finite weights. A checkpoint holds weights,
//!    AdamW moments, the step, the data position and order; dropout is re-seeded per
//!    micro-batch, so resuming gives the same weights as not stopping.
//!
//! # Losses
//! `sigmoid` (DPO, default), `ipo`, `hinge`, `robust`, `sppo_hard`, `nca_pair`, each optionally
//! plus TRL's `sft` term with a weight. Formulas and their TRL correspondence: [`loss`]. The
//! kernels are plain functions on `[B]` tensors ([`dpo_loss`]) usable without the trainer.
//!
//! # Configuration
//! [`DpoConfig`] (serde, unknown keys rejected, every default in `DpoConfig::default`,
//! documented per field) is validated into a [`TrainConfig`] that the trainer requires.
//! Defaults: β 0.1, sigmoid, learning rate 1e-6 → 1e-7 linear, 4 pairs × 4 accumulation
//! steps (the Self-Rewarding paper's batch of 16), dropout 0.1, max length 1024, seed 42.
//!
//! # Supervised fine-tuning
//! [`sft`] trains on chat data (`{"messages": [...]}` or `{"prompt", "completion"}` lines,
//! TRL's conversational and prompt-completion formats) with the loss on assistant tokens only,
//! optional packing (examples kept apart by position ids and attention), and the same optimizer,
//! schedule, checkpoints and metrics conventions as DPO:
//! ```no_run
//! use std::path::Path;
//! use tsr_dpo::{train_sft_jsonl, SftConfig};
//! use tsr_model::{load, LoadOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut m = load("smollm2-135m-instruct", &LoadOptions::default())?;
//! let cfg = SftConfig { max_steps: Some(100), ..SftConfig::default() }.validate()?;
//! let report = train_sft_jsonl(&mut m.model, &m.tokenizer, Path::new("chats.jsonl"), &cfg, Path::new("out"), |s, total| {
//!     eprintln!("step {}/{total} loss {:.4}", s.step, s.loss);
//! })?;
//! tsr_dpo::save_model(&m.model, &m.tokenizer, &m.generation, Path::new("out/model"))?;
//! # let _ = report; Ok(()) }
//! ```
//! `tsr sft` is the CLI.
//!
//! # Diagnostics
//! [`reference::mean_completion_hidden`] returns the mean last-layer hidden state over the
//! completion tokens of `(prompt ids, completion ids)` items, and [`reference::row_cosines`]
//! compares chosen and rejected rows (the representation-gap measure of the TSR loop).

pub mod checkpointing;
pub mod config;
pub mod data;
pub mod error;
mod layout;
pub mod logprobs;
pub mod lora;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod pipeline;
pub mod policy;
pub mod reference;
pub mod sft;
mod train_loop;
pub mod trainer;

pub use checkpointing::GradientCheckpointing;
pub use config::{DpoConfig, LrSchedule, PromptSharing, TrainConfig};
pub use data::{
    count_unended, read_pairs, tokenize_pairs, tokenize_sampled_pairs, PairTokenizer,
    PreferencePair, SampledPair, TokenizedPair, Truncation,
};
pub use error::{DpoError, Result};
pub use logprobs::{completion_logps_naive, ChunkedLogProbs, ScoredPositions};
pub use loss::{dpo_loss, DpoLoss, LossParams, LossStats, LossType, PairLogps};
pub use optim::AdamW;
pub use pipeline::{
    save_model, save_model_in, train_dpo, train_dpo_jsonl, train_dpo_tokenized, RunFiles,
    TrainReport,
};
pub use policy::{train_policy, IdPair, Policy, PolicyStep, PreferenceLoss};
pub use reference::{
    cached_reference_logps, compute_reference_logps, mean_completion_hidden, row_cosines,
    ReferenceLogps,
};
pub use sft::{
    read_examples, train_sft, train_sft_jsonl, SftConfig, SftExample, SftMetrics, SftReport,
    SftTrainConfig, SftTrainer,
};
pub use trainer::{JsonlSink, MetricsSink, StepMetrics, TrainSummary, Trainer, VecSink};
