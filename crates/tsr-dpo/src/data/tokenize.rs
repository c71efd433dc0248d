//! Tokenizing and truncating preference pairs (see the [rules](super)).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::pairs::{Message, PairCompletion, PairPrompt, PreferencePair};
use crate::error::{DpoError, Result};

/// What the data pipeline needs from a tokenizer. Implemented for
/// [`tsr_model::ChatTokenizer`]; implement it to feed another tokenizer.
pub trait PairTokenizer {
    /// Token ids of `text`.
    fn encode_ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>>;
    /// Renders chat messages with the model's chat template.
    fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String>;
    /// The end-of-sequence id appended to plain-text completions.
    fn eos_id(&self) -> Option<u32>;
}

impl PairTokenizer for tsr_model::ChatTokenizer {
    fn encode_ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self.encode(text, add_special_tokens)?)
    }
    fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        Ok(self.apply_chat_template(messages, add_generation_prompt)?)
    }
    fn eos_id(&self) -> Option<u32> {
        self.eos_ids().first().copied()
    }
}

/// Which end of an over-long sequence survives truncation (TRL's `truncation_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Keep the first `max_length` tokens (TRL's default).
    #[default]
    KeepStart,
    /// Keep the last `max_length` tokens.
    KeepEnd,
}

/// One tokenized training sequence: `ids[..prompt_len]` is context, the rest is scored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenizedSeq {
    /// Prompt ids followed by completion ids (after truncation).
    pub ids: Vec<u32>,
    /// Number of leading prompt ids.
    pub prompt_len: usize,
}

impl TokenizedSeq {
    /// Number of completion (scored) tokens.
    pub fn completion_len(&self) -> usize {
        self.ids.len() - self.prompt_len
    }

    pub(crate) fn truncate(
        prompt: &[u32],
        completion: &[u32],
        max_length: usize,
        mode: Truncation,
    ) -> TokenizedSeq {
        let mut ids: Vec<u32> = prompt.iter().chain(completion).copied().collect();
        let mut prompt_len = prompt.len();
        if ids.len() > max_length {
            match mode {
                Truncation::KeepStart => {
                    ids.truncate(max_length);
                    prompt_len = prompt_len.min(max_length);
                }
                Truncation::KeepEnd => {
                    let cut = ids.len() - max_length;
                    ids.drain(..cut);
                    prompt_len = prompt_len.saturating_sub(cut);
                }
            }
        }
        TokenizedSeq { ids, prompt_len }
    }
}

/// A tokenized pair. `index` is its line order in the source (0-based, blank lines not counted).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenizedPair {
    /// Position of the pair in the input list.
    pub index: usize,
    /// Prompt + chosen completion.
    pub chosen: TokenizedSeq,
    /// Prompt + rejected completion.
    pub rejected: TokenizedSeq,
}

impl TokenizedPair {
    /// Length of the longer of the two sequences (the padding cost of the pair).
    pub fn max_len(&self) -> usize {
        self.chosen.ids.len().max(self.rejected.ids.len())
    }
}

/// Prompt ids (see the [module docs](super)) and, for chat prompts, the rendered prompt text.
pub(crate) fn prompt_ids<T: PairTokenizer + ?Sized>(
    tok: &T,
    prompt: &PairPrompt,
) -> Result<(Vec<u32>, Option<String>)> {
    Ok(match prompt {
        PairPrompt::Text(p) => (tok.encode_ids(p, true)?, None),
        PairPrompt::Chat(m) => {
            let text = tok.render_chat(m, true)?;
            (tok.encode_ids(&text, false)?, Some(text))
        }
    })
}

/// Completion ids of `c` after `prompt` (see the [module docs](super)); `prompt_text` is the
/// rendered chat prompt from [`prompt_ids`].
pub(crate) fn completion_ids<T: PairTokenizer + ?Sized>(
    tok: &T,
    prompt: &PairPrompt,
    c: &PairCompletion,
    prompt_text: Option<&str>,
) -> Result<Vec<u32>> {
    let content = c.content().map_err(|e| DpoError::Data {
        path: PathBuf::from("<memory>"),
        line: 0,
        reason: e,
    })?;
    let eos = tok.eos_id();
    let with_eos = |mut ids: Vec<u32>| {
        if let Some(e) = eos {
            if ids.last() != Some(&e) {
                ids.push(e);
            }
        }
        ids
    };
    match (prompt, prompt_text) {
        (PairPrompt::Chat(msgs), Some(prompt_text)) => {
            let mut all = msgs.clone();
            all.push(Message {
                role: "assistant".into(),
                content: content.to_string(),
            });
            let full = tok.render_chat(&all, false)?;
            match full.strip_prefix(prompt_text) {
                Some(rest) if !rest.is_empty() => tok.encode_ids(rest, false),
                _ => Ok(with_eos(tok.encode_ids(content, false)?)),
            }
        }
        _ => Ok(with_eos(tok.encode_ids(content, false)?)),
    }
}

/// Tokenizes and truncates pairs (see the [module docs](super)). Returns the kept pairs and the
/// indices of the pairs dropped because their prompt fills `max_length` (keep-start mode only).
pub fn tokenize_pairs<T: PairTokenizer + ?Sized>(
    tok: &T,
    pairs: &[PreferencePair],
    max_length: usize,
    truncation: Truncation,
) -> Result<(Vec<TokenizedPair>, Vec<usize>)> {
    let mut kept = Vec::with_capacity(pairs.len());
    let mut dropped = Vec::new();
    for (index, pair) in pairs.iter().enumerate() {
        pair.check().map_err(|reason| DpoError::Data {
            path: PathBuf::from("<memory>"),
            line: index + 1,
            reason,
        })?;
        let (prompt_ids, prompt_text) = prompt_ids(tok, &pair.prompt)?;
        let chosen = completion_ids(tok, &pair.prompt, &pair.chosen, prompt_text.as_deref())?;
        let rejected = completion_ids(tok, &pair.prompt, &pair.rejected, prompt_text.as_deref())?;
        match truncate_pair(
            index,
            &prompt_ids,
            &chosen,
            &rejected,
            max_length,
            truncation,
        ) {
            Some(t) => kept.push(t),
            None => dropped.push(index),
        }
    }
    warn_dropped(&dropped, max_length);
    Ok((kept, dropped))
}

/// The pair `index` cut to `max_length`, or `None` when truncation leaves a side without a
/// completion token (or, keeping the start, when the prompt alone fills `max_length`).
pub(super) fn truncate_pair(
    index: usize,
    prompt_ids: &[u32],
    chosen: &[u32],
    rejected: &[u32],
    max_length: usize,
    truncation: Truncation,
) -> Option<TokenizedPair> {
    if truncation == Truncation::KeepStart && prompt_ids.len() >= max_length {
        return None;
    }
    let chosen = TokenizedSeq::truncate(prompt_ids, chosen, max_length, truncation);
    let rejected = TokenizedSeq::truncate(prompt_ids, rejected, max_length, truncation);
    if chosen.completion_len() == 0 || rejected.completion_len() == 0 {
        return None;
    }
    Some(TokenizedPair {
        index,
        chosen,
        rejected,
    })
}

pub(super) fn warn_dropped(dropped: &[usize], max_length: usize) {
    if !dropped.is_empty() {
        tracing::warn!(
            dropped = dropped.len(),
            max_length,
            "pairs dropped: prompt fills max_length"
        );
    }
}
