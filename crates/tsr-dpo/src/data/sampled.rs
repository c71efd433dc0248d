//! Preference pairs whose completions are the token ids a model sampled.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::pairs::PairPrompt;
use super::tokenize::{
    prompt_ids, truncate_pair, warn_dropped, PairTokenizer, TokenizedPair, Truncation,
};
use crate::error::{DpoError, Result};

/// A preference pair whose completions are token ids as a model sampled them (for example the
/// answers of a self-rewarding iteration), not text to re-tokenize.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampledPair {
    /// The shared prompt, tokenized as in [`tokenize_pairs`](super::tokenize_pairs) (for chat
    /// messages: the template with the generation prompt, which is what the sampler saw).
    pub prompt: PairPrompt,
    /// The preferred completion's sampled ids, used verbatim: they end with an EOS id only if
    /// the model generated one (an answer cut by the length limit gets none appended).
    pub chosen_ids: Vec<u32>,
    /// The dispreferred completion's sampled ids, used verbatim.
    pub rejected_ids: Vec<u32>,
}

/// Tokenizes the prompts of sampled pairs and joins them to the sampled completion ids, with
/// the same truncation and dropping rules as [`tokenize_pairs`](super::tokenize_pairs). Training
/// on the ids that were sampled, rather than on their decoded text tokenized again, scores
/// exactly the tokens the model produced (decoding and re-encoding can merge or split pieces
/// differently) and never adds an end-of-sequence the model did not write. A pair with an empty
/// completion is an error (nothing to score).
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
