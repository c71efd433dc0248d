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

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{DpoError, Result};

/// One chat message (`role` is `system`, `user` or `assistant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: String,
    /// What is said.
    pub content: String,
}

/// The prompt of a pair: plain text, or chat messages rendered with the model's template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PairPrompt {
    /// Raw text, tokenized as is (with the tokenizer's special tokens).
    Text(String),
    /// Chat messages.
    Chat(Vec<Message>),
}

/// A completion of a pair: plain text, or a list holding one assistant message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PairCompletion {
    /// The completion text (for chat prompts: the assistant reply).
    Text(String),
    /// `[{"role": "assistant", "content": ...}]`.
    Chat(Vec<Message>),
}

impl PairCompletion {
    pub(crate) fn content(&self) -> std::result::Result<&str, String> {
        match self {
            PairCompletion::Text(s) => Ok(s),
            PairCompletion::Chat(m) if m.len() == 1 && m[0].role == "assistant" => Ok(&m[0].content),
            PairCompletion::Chat(m) => Err(format!(
                "a chat completion must be a list with exactly one assistant message, got {} message(s) with roles {:?}",
                m.len(),
                m.iter().map(|x| x.role.as_str()).collect::<Vec<_>>()
            )),
        }
    }
}

/// One preference pair as read from JSONL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencePair {
    /// The shared prompt.
    pub prompt: PairPrompt,
    /// The preferred completion.
    pub chosen: PairCompletion,
    /// The dispreferred completion.
    pub rejected: PairCompletion,
}

impl PreferencePair {
    /// A plain-text pair.
    pub fn text(
        prompt: impl Into<String>,
        chosen: impl Into<String>,
        rejected: impl Into<String>,
    ) -> Self {
        PreferencePair {
            prompt: PairPrompt::Text(prompt.into()),
            chosen: PairCompletion::Text(chosen.into()),
            rejected: PairCompletion::Text(rejected.into()),
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.chosen.content().map_err(|e| format!("chosen: {e}"))?;
        self.rejected
            .content()
            .map_err(|e| format!("rejected: {e}"))?;
        if let PairPrompt::Text(_) = self.prompt {
            if matches!(self.chosen, PairCompletion::Chat(_))
                || matches!(self.rejected, PairCompletion::Chat(_))
            {
                return Err("a plain-text prompt needs plain-text chosen and rejected".into());
            }
        }
        if let PairPrompt::Chat(m) = &self.prompt {
            if m.is_empty() {
                return Err("prompt: empty message list".into());
            }
        }
        Ok(())
    }
}

/// Parses JSONL text (see the [module docs](self)); `path` only names the source in errors.
pub fn parse_pairs(text: &str, path: &Path) -> Result<Vec<PreferencePair>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(line, path, i + 1)?);
    }
    Ok(out)
}

fn parse_line(line: &str, path: &Path, lineno: usize) -> Result<PreferencePair> {
    let err = |reason: String| DpoError::Data {
        path: path.to_path_buf(),
        line: lineno,
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| err(format!("invalid json: {e}")))?;
    for key in ["prompt", "chosen", "rejected"] {
        if value.get(key).is_none() {
            return Err(err(format!("missing field `{key}`")));
        }
    }
    let pair: PreferencePair = serde_json::from_value(value).map_err(|e| {
        err(format!("expected prompt/chosen/rejected as strings or lists of {{role, content}} messages: {e}"))
    })?;
    pair.check().map_err(err)?;
    Ok(pair)
}

/// Reads a JSONL file of pairs.
pub fn read_pairs(path: &Path) -> Result<Vec<PreferencePair>> {
    let file = std::fs::File::open(path).map_err(|e| DpoError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DpoError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(&line, path, i + 1)?);
    }
    Ok(out)
}

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

/// Prompt ids (see the [module docs](self)) and, for chat prompts, the rendered prompt text.
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

/// Completion ids of `c` after `prompt` (see the [module docs](self)); `prompt_text` is the
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

/// Tokenizes and truncates pairs (see the [module docs](self)). Returns the kept pairs and the
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

/// A preference pair whose completions are token ids as a model sampled them (for example the
/// answers of a self-rewarding iteration), not text to re-tokenize.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampledPair {
    /// The shared prompt, tokenized as in [`tokenize_pairs`] (for chat messages: the template
    /// with the generation prompt, which is what the sampler saw).
    pub prompt: PairPrompt,
    /// The preferred completion's sampled ids, used verbatim: they end with an EOS id only if
    /// the model generated one (an answer cut by the length limit gets none appended).
    pub chosen_ids: Vec<u32>,
    /// The dispreferred completion's sampled ids, used verbatim.
    pub rejected_ids: Vec<u32>,
}

/// Tokenizes the prompts of sampled pairs and joins them to the sampled completion ids, with
/// the same truncation and dropping rules as [`tokenize_pairs`]. Training on the ids that were
/// sampled, rather than on their decoded text tokenized again, scores exactly the tokens the
/// model produced (decoding and re-encoding can merge or split pieces differently) and never
/// adds an end-of-sequence the model did not write. A pair with an empty completion is an
/// error (nothing to score).
pub fn tokenize_sampled_pairs<T: PairTokenizer + ?Sized>(
    tok: &T,
    pairs: &[SampledPair],
    max_length: usize,
    truncation: Truncation,
) -> Result<(Vec<TokenizedPair>, Vec<usize>)> {
    let mut kept = Vec::with_capacity(pairs.len());
    let mut dropped = Vec::new();
    for (index, pair) in pairs.iter().enumerate() {
        let bad = |reason: &str| DpoError::Data {
            path: PathBuf::from("<memory>"),
            line: index + 1,
            reason: reason.to_string(),
        };
        if pair.chosen_ids.is_empty() || pair.rejected_ids.is_empty() {
            return Err(bad("a sampled completion has no token ids"));
        }
        if let PairPrompt::Chat(m) = &pair.prompt {
            if m.is_empty() {
                return Err(bad("prompt: empty message list"));
            }
        }
        let (prompt_ids, _) = prompt_ids(tok, &pair.prompt)?;
        match truncate_pair(
            index,
            &prompt_ids,
            &pair.chosen_ids,
            &pair.rejected_ids,
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

/// Number of completions (chosen and rejected counted apart) among `pairs` whose sampled ids do
/// not end with one of `eos_ids`: answers the length limit (or a stop string) cut before the
/// model ended them.
pub fn count_unended(pairs: &[SampledPair], eos_ids: &[u32]) -> usize {
    pairs
        .iter()
        .flat_map(|p| [&p.chosen_ids, &p.rejected_ids])
        .filter(|ids| ids.last().is_none_or(|l| !eos_ids.contains(l)))
        .count()
}

/// The pair `index` cut to `max_length`, or `None` when truncation leaves a side without a
/// completion token (or, keeping the start, when the prompt alone fills `max_length`).
fn truncate_pair(
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

fn warn_dropped(dropped: &[usize], max_length: usize) {
    if !dropped.is_empty() {
        tracing::warn!(
            dropped = dropped.len(),
            max_length,
            "pairs dropped: prompt fills max_length"
        );
    }
}

/// A padded batch of pairs: rows `0..B` are the chosen sequences, rows `B..2B` the rejected ones,
/// right-padded (TRL's collator layout).
#[derive(Debug)]
pub struct PairBatch {
    /// `[2B, T]` i64.
    pub input_ids: Tensor,
    /// `[2B, T]` i64, 1 = token.
    pub attention_mask: Tensor,
    /// `[2B, T]` i64, 1 = completion token.
    pub completion_mask: Tensor,
    /// Completion token counts `[2B]` i64.
    pub completion_tokens: Tensor,
    /// Positions of the pairs in the tokenized list the batch was built from.
    pub pairs: Vec<usize>,
    /// Number of non-padding tokens.
    pub real_tokens: usize,
}

/// Pads `pairs[sel]` into a [`PairBatch`] on `device`.
pub fn collate(
    pairs: &[TokenizedPair],
    sel: &[usize],
    pad_id: u32,
    device: Device,
) -> Result<PairBatch> {
    if sel.is_empty() {
        return Err(DpoError::Shape("empty batch".into()));
    }
    let seqs: Vec<&TokenizedSeq> = sel
        .iter()
        .map(|&i| &pairs[i].chosen)
        .chain(sel.iter().map(|&i| &pairs[i].rejected))
        .collect();
    let t = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(1).max(1);
    let rows = seqs.len();
    let mut ids = vec![pad_id as i64; rows * t];
    let mut attn = vec![0i64; rows * t];
    let mut comp = vec![0i64; rows * t];
    let mut counts = Vec::with_capacity(rows);
    let mut real = 0;
    for (r, s) in seqs.iter().enumerate() {
        for (j, &id) in s.ids.iter().enumerate() {
            ids[r * t + j] = id as i64;
            attn[r * t + j] = 1;
            comp[r * t + j] = (j >= s.prompt_len) as i64;
        }
        counts.push(s.completion_len() as i64);
        real += s.ids.len();
    }
    let shape = [rows as i64, t as i64];
    Ok(PairBatch {
        input_ids: Tensor::from_slice(&ids)
            .f_reshape(shape)?
            .f_to_device(device)?,
        attention_mask: Tensor::from_slice(&attn)
            .f_reshape(shape)?
            .f_to_device(device)?,
        completion_mask: Tensor::from_slice(&comp)
            .f_reshape(shape)?
            .f_to_device(device)?,
        completion_tokens: Tensor::from_slice(&counts)
            .f_to_device(device)?
            .f_to_kind(Kind::Int64)?,
        pairs: sel.to_vec(),
        real_tokens: real,
    })
}

/// The batches of one epoch, as lists of positions into the tokenized pairs.
///
/// Deterministic in `(seed, epoch)`: the pairs are shuffled, cut into windows of
/// `bucket_window × batch_size` pairs, each window sorted by length (so a batch holds pairs of
/// similar length and little padding), cut into batches, and the batch order shuffled again. A
/// window of 1 batch disables bucketing. The last batch may be smaller.
pub fn epoch_batches(
    pairs: &[TokenizedPair],
    batch_size: usize,
    bucket_window: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let lengths: Vec<usize> = pairs.iter().map(TokenizedPair::max_len).collect();
    epoch_batches_by_length(&lengths, batch_size, bucket_window, seed, epoch)
}

/// [`epoch_batches`] over items of the given `lengths` (the padding cost of each item).
pub fn epoch_batches_by_length(
    lengths: &[usize],
    batch_size: usize,
    bucket_window: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let window = (bucket_window.max(1) * batch_size).max(1);
    let mut batches = Vec::new();
    for w in order.chunks(window) {
        let mut w = w.to_vec();
        if bucket_window > 1 {
            w.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        }
        batches.extend(w.chunks(batch_size).map(<[usize]>::to_vec));
    }
    if bucket_window > 1 {
        batches.shuffle(&mut rng);
    }
    debug_assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), lengths.len());
    debug_assert_eq!(
        batches.iter().flatten().collect::<HashSet<_>>().len(),
        lengths.len()
    );
    batches
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A toy tokenizer: one id per byte (+3), bos 1, eos 2; ChatML-like template.
    #[derive(Debug)]
    pub(crate) struct ByteTok;
    impl PairTokenizer for ByteTok {
        fn encode_ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
            let mut v: Vec<u32> = if add_special_tokens { vec![1] } else { vec![] };
            let mut rest = text;
            while !rest.is_empty() {
                if let Some(r) = rest.strip_prefix("<eos>") {
                    v.push(2);
                    rest = r;
                } else {
                    let c = rest.as_bytes()[0];
                    v.push(c as u32 + 3);
                    rest = &rest[1..];
                }
            }
            Ok(v)
        }
        fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
            let mut s = String::new();
            for m in messages {
                s += &format!("[{}]{}<eos>\n", m.role, m.content);
            }
            if add_generation_prompt {
                s += "[assistant]";
            }
            Ok(s)
        }
        fn eos_id(&self) -> Option<u32> {
            Some(2)
        }
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let text = "{\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\"}\n\n{\"prompt\":\"a\",\"chosen\":\"b\"}\n";
        let e = parse_pairs(text, Path::new("p.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.jsonl:3: missing field `rejected`"), "{e}");
        let e = parse_pairs("not json", Path::new("p.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.jsonl:1: invalid json"), "{e}");
        let e = parse_pairs(
            "{\"prompt\":\"a\",\"chosen\":3,\"rejected\":\"c\"}",
            Path::new("x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x:1: expected"), "{e}");
        let two = r#"{"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"user","content":"a"}],"rejected":"r"}"#;
        let e = parse_pairs(two, Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("exactly one assistant message"), "{e}");
    }

    #[test]
    fn plain_text_gets_eos_and_exact_boundary() {
        let pairs = parse_pairs(
            r#"{"prompt":"ab","chosen":"c","rejected":"de<eos>","id":7}"#,
            Path::new("x"),
        )
        .unwrap();
        let (tp, dropped) = tokenize_pairs(&ByteTok, &pairs, 100, Truncation::KeepStart).unwrap();
        assert!(dropped.is_empty());
        let p = &tp[0];
        assert_eq!(
            p.chosen.ids,
            vec![1, 'a' as u32 + 3, 'b' as u32 + 3, 'c' as u32 + 3, 2]
        );
        assert_eq!(p.chosen.prompt_len, 3);
        // EOS already present: not doubled.
        assert_eq!(
            p.rejected.ids,
            vec![1, 100, 101, 'd' as u32 + 3, 'e' as u32 + 3, 2]
        );
    }

    #[test]
    fn chat_completion_is_the_template_suffix() {
        let line = r#"{"prompt":[{"role":"user","content":"q"}],"chosen":"yes","rejected":[{"role":"assistant","content":"no"}]}"#;
        let pairs = parse_pairs(line, Path::new("x")).unwrap();
        let (tp, _) = tokenize_pairs(&ByteTok, &pairs, 100, Truncation::KeepStart).unwrap();
        let prompt = ByteTok
            .encode_ids("[user]q<eos>\n[assistant]", false)
            .unwrap();
        assert_eq!(
            &tp[0].chosen.ids[..tp[0].chosen.prompt_len],
            prompt.as_slice()
        );
        assert_eq!(
            &tp[0].chosen.ids[prompt.len()..],
            ByteTok.encode_ids("yes<eos>\n", false).unwrap().as_slice()
        );
        assert_eq!(
            &tp[0].rejected.ids[prompt.len()..],
            ByteTok.encode_ids("no<eos>\n", false).unwrap().as_slice()
        );
    }

    #[test]
    fn sampled_ids_are_trained_verbatim_without_an_added_eos() {
        let prompt = PairPrompt::Chat(vec![Message {
            role: "user".into(),
            content: "q".into(),
        }]);
        // Chosen ended with EOS (2); rejected was cut by the length limit: no EOS, none added.
        // The ids are not what tokenizing their text would give (one id per byte + 3).
        let pairs = vec![SampledPair {
            prompt: prompt.clone(),
            chosen_ids: vec![500, 501, 2],
            rejected_ids: vec![600, 601, 602],
        }];
        let (tp, dropped) =
            tokenize_sampled_pairs(&ByteTok, &pairs, 100, Truncation::KeepStart).unwrap();
        assert!(dropped.is_empty());
        let p = ByteTok
            .encode_ids("[user]q<eos>\n[assistant]", false)
            .unwrap();
        assert_eq!(tp[0].chosen.prompt_len, p.len());
        assert_eq!(&tp[0].chosen.ids[..p.len()], p.as_slice());
        assert_eq!(&tp[0].chosen.ids[p.len()..], &[500, 501, 2]);
        assert_eq!(&tp[0].rejected.ids[p.len()..], &[600, 601, 602]);
        assert_eq!(count_unended(&pairs, &[2]), 1);
        assert_eq!(count_unended(&pairs, &[7]), 2);
        // Same truncation rule as text pairs: keep-start cuts the completion's end.
        let (tp, _) =
            tokenize_sampled_pairs(&ByteTok, &pairs, p.len() + 2, Truncation::KeepStart).unwrap();
        assert_eq!(&tp[0].chosen.ids[p.len()..], &[500, 501]);
        // A prompt that fills max_length drops the pair; an empty side is an error.
        let (tp, dropped) =
            tokenize_sampled_pairs(&ByteTok, &pairs, p.len(), Truncation::KeepStart).unwrap();
        assert!(tp.is_empty());
        assert_eq!(dropped, vec![0]);
        let empty = vec![SampledPair {
            prompt,
            chosen_ids: vec![],
            rejected_ids: vec![9],
        }];
        let err = tokenize_sampled_pairs(&ByteTok, &empty, 100, Truncation::KeepStart)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no token ids"), "{err}");
    }

    #[test]
    fn truncation_modes_follow_trl() {
        let pairs = vec![
            PreferencePair::text("abcdef", "xyz", "q"),
            PreferencePair::text("abcdefghij", "x", "y"),
        ];
        // prompt = bos + 6 = 7 ids; chosen 4 ids (xyz + eos), rejected 2 ids.
        let (tp, dropped) = tokenize_pairs(&ByteTok, &pairs, 9, Truncation::KeepStart).unwrap();
        assert_eq!(dropped, vec![1]);
        assert_eq!(tp[0].chosen.ids.len(), 9);
        assert_eq!(tp[0].chosen.prompt_len, 7);
        assert_eq!(tp[0].chosen.completion_len(), 2);
        assert_eq!(tp[0].rejected.ids.len(), 9);
        let (tp, dropped) = tokenize_pairs(&ByteTok, &pairs, 9, Truncation::KeepEnd).unwrap();
        assert!(dropped.is_empty());
        assert_eq!(tp[0].chosen.prompt_len, 5);
        assert_eq!(tp[0].chosen.ids[5..], [123, 124, 125, 2]);
        assert_eq!(tp[1].chosen.prompt_len, 7);
    }

    #[test]
    fn collate_layout_and_epoch_batches() {
        let pairs: Vec<PreferencePair> = (0..10)
            .map(|i| PreferencePair::text("p".repeat(i + 1), "c".repeat(10 - i), "r"))
            .collect();
        let (tp, _) = tokenize_pairs(&ByteTok, &pairs, 100, Truncation::KeepStart).unwrap();
        let b = collate(&tp, &[0, 3], 0, Device::Cpu).unwrap();
        assert_eq!(b.input_ids.size(), [4, 13]);
        let comp: Vec<i64> = Vec::try_from(b.completion_mask.get(2)).unwrap();
        assert_eq!(comp[..5], [0, 0, 1, 1, 0]);
        assert_eq!(
            Vec::<i64>::try_from(&b.completion_tokens).unwrap(),
            vec![11, 8, 2, 2]
        );
        assert_eq!(b.real_tokens, 13 + 13 + 4 + 7);
        let e1 = epoch_batches(&tp, 3, 2, 5, 0);
        assert_eq!(e1, epoch_batches(&tp, 3, 2, 5, 0));
        assert_ne!(e1, epoch_batches(&tp, 3, 2, 5, 1));
        let mut all: Vec<usize> = e1.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}
