//! Supervised fine-tuning (SFT): cross-entropy on the assistant tokens of chat data, the way
//! TRL's `SFTTrainer` does with `assistant_only_loss=True` / `completion_only_loss=True`.
//!
//! - [`data`]: the JSONL formats (`{"messages"}` and `{"prompt", "completion"}`), tokenization
//!   with the chat template and the loss mask (assistant tokens only), truncation;
//! - [`batch`]: training rows (optionally packed, each example still attending only to itself)
//!   and padded batches;
//! - [`config`]: [`SftConfig`] and its checked form;
//! - [`trainer`]: [`SftTrainer`], one optimizer step at a time, resumable;
//! - [`pipeline`]: [`train_sft`] / [`train_sft_jsonl`], the whole job with `metrics.jsonl` and
//!   checkpoints in an output directory.
//!
//! A custom loop can call the pieces directly:
//! ```no_run
//! # use tsr_dpo::sft::*;
//! # use tsr_dpo::VecSink;
//! # fn f(model: &mut tsr_model::Model, tok: &tsr_model::ChatTokenizer, examples: &[SftExample]) -> tsr_dpo::Result<()> {
//! let cfg = SftConfig { max_steps: Some(20), ..SftConfig::default() }.validate()?;
//! let (tokenized, _dropped) = tokenize_examples(tok, examples, cfg.get().max_length)?;
//! let rows = make_rows(&tokenized, None);
//! let mut trainer = SftTrainer::new(model, cfg, rows, tok.pad_id())?;
//! while let Some(m) = trainer.step()? {
//!     println!("step {} loss {:.4}", m.step, m.loss);
//! }
//! # Ok(()) }
//! ```

pub mod batch;
pub mod config;
pub mod data;
pub mod pipeline;
pub mod trainer;

pub use batch::{collate_rows, make_rows, SftBatch, SftRow};
pub use config::{SftConfig, SftTrainConfig};
pub use data::{
    parse_examples, read_examples, tokenize_examples, Conversation, PromptCompletion, SftExample,
    TokenizedExample,
};
pub use pipeline::{train_sft, train_sft_jsonl, SftReport};
pub use trainer::{SftMetrics, SftSummary, SftTrainer};
