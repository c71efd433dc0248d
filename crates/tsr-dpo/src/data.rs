//! Preference pairs: reading TRL-style JSON lines, tokenizing, truncating, batching.
//!
//! # Format
//! One JSON object per line with `prompt`, `chosen` and `rejected` (other keys are ignored, as
//! TRL ignores extra dataset columns):
//! - **plain text**: all three are strings, e.g.
//!   `{"prompt": "2+2=", "chosen": "4", "rejected": "5"}`;
//! - **conversational**: `prompt` is a list of `{"role", "content"}` messages; `chosen` and
//!   `rejected` are either the assistant reply as a string or a list holding exactly one
//!   assistant message, e.g.
//!   `{"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}], ...}`.
//!
//! Blank lines are skipped; any other line that does not parse is an error naming its line.
//!
//! # Tokenization (what ends up in a training sequence)
//! The prompt and the completion are tokenized **separately** and the id lists concatenated, so
//! the prompt/completion boundary is exact (never found by slicing re-tokenized text):
//! - plain text: `prompt_ids = encode(prompt, add_special_tokens = true)`,
//!   `completion_ids = encode(completion, false)` followed by the EOS id unless the completion
//!   already ends with it. TRL does the same (it appends the EOS token text to non-conversational
//!   completions);
//! - conversational: `prompt_ids = encode(template(prompt, add_generation_prompt = true), false)`;
//!   the completion is the text the chat template appends for the assistant turn,
//!   `template(prompt + [assistant], false)` minus the rendered prompt (for ChatML:
//!   `"{content}<|im_end|>\n"`), so the end-of-turn token is part of the completion, exactly as
//!   in TRL. If a template renders the prompt differently on its own (the rendered prompt is not
//!   a prefix), the completion falls back to `content` + EOS.
//!
//! TRL tokenizes `prompt + completion` as one string and splits at the common prefix; the two
//! agree except where a BPE merge spans the boundary, where tsr keeps the prompt's own tokens
//! (the context the model sees at inference).
//!
//! # Truncation
//! As TRL 1.16's `DataCollatorForPreference`, each sequence (prompt + completion, chosen and
//! rejected independently) is cut to `max_length` tokens:
//! - [`Truncation::KeepStart`] (TRL's default): keep the first `max_length` tokens, i.e. the end
//!   of the completion is dropped. Pairs whose prompt alone has `max_length` tokens or more are
//!   dropped (they have no completion token left), as TRL does;
//! - [`Truncation::KeepEnd`]: keep the last `max_length` tokens, i.e. the prompt is cut from the
//!   left (and the completion's start too if it alone is longer).
//!
//! Beside this file: `pairs` (the JSON-lines format), `tokenize` (tokenization and truncation),
//! `sampled` (pairs of sampled token ids) and `batch` (padded batches and the epoch order).

mod batch;
mod pairs;
mod sampled;
mod tokenize;

pub use batch::{
    collate, collate_branched, epoch_batches, epoch_batches_by_length, BranchedBatch, PairBatch,
};
pub use pairs::{parse_pairs, read_pairs, Message, PairCompletion, PairPrompt, PreferencePair};
pub use sampled::{count_unended, tokenize_sampled_pairs, SampledPair};
pub use tokenize::{tokenize_pairs, PairTokenizer, TokenizedPair, TokenizedSeq, Truncation};

pub(crate) use tokenize::{completion_ids, prompt_ids};

#[cfg(test)]
pub(crate) mod tests;
