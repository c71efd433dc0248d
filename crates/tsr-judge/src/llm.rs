//! The LLM judge: the judge prompt through any [`Generator`], several samples, averaged.

use std::fmt;

use tracing::{debug, info, warn};

use crate::config::{JudgeConfig, JudgeSettings};
use crate::error::JudgeError;
use crate::generate::{Completion, GenRequest, Generator, Prompt};
use crate::parse::{mean_score, parse_score};
use crate::verdict::{Judge, JudgeItem, JudgeSample, JudgeStats, Verdict};

/// The sampling seed of one item: a stable 64-bit hash of `(seed, id)` (FNV-1a, then the
/// SplitMix64 finaliser). It depends on nothing else, so an item's judge samples do not change
/// with the batch it is judged in, and it is the same on every platform and Rust version.
pub fn item_seed(seed: u64, id: &str) -> u64 {
    let mut bytes = seed.to_le_bytes().to_vec();
    bytes.extend_from_slice(id.as_bytes());
    splitmix64_mix(fnv1a64(&bytes))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The SplitMix64 output function: spreads nearby hashes over the whole range.
fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// LLM-as-a-judge over a [`Generator`]: the policy itself (self-rewarding) or any other model.
///
/// For each item the template is filled with the prompt and response and sent as one user chat
/// message ([`Prompt::Chat`]), so the generator applies the judge model's chat template. All
/// items of a [`judge`](Judge::judge) call go to the generator in one call (or in chunks of
/// `batch_size`), each request asking for `samples` completions with the seed
/// [`item_seed`]`(seed, item.id)`. Each completion is parsed with
/// [`parse_score`](crate::parse_score); the item's score is the mean of those that parse.
pub struct LlmJudge<G> {
    generator: G,
    settings: JudgeSettings,
    stats: JudgeStats,
}

impl<G> fmt::Debug for LlmJudge<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmJudge")
            .field("settings", &self.settings)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<G: Generator> LlmJudge<G> {
    pub fn new(generator: G, settings: JudgeSettings) -> Self {
        Self {
            generator,
            settings,
            stats: JudgeStats::default(),
        }
    }

    /// Validates `config` (and loads its template) and builds the judge.
    pub fn from_config(generator: G, config: &JudgeConfig) -> Result<Self, JudgeError> {
        Ok(Self::new(generator, config.validate()?))
    }

    pub fn settings(&self) -> &JudgeSettings {
        &self.settings
    }

    /// Counts over every item this judge has scored so far.
    pub fn stats(&self) -> &JudgeStats {
        &self.stats
    }

    pub fn generator(&self) -> &G {
        &self.generator
    }

    pub fn generator_mut(&mut self) -> &mut G {
        &mut self.generator
    }

    pub fn into_generator(self) -> G {
        self.generator
    }

    /// The judge prompt for an item (the user message content, before any chat template).
    pub fn render(&self, item: &JudgeItem) -> String {
        self.settings
            .template()
            .render(&item.prompt, &item.response)
    }

    /// The generation request for an item: its judge prompt as one user chat message,
    /// `samples` completions, seed [`item_seed`]`(seed, item.id)`.
    pub fn request(&self, item: &JudgeItem) -> GenRequest {
        self.request_for(item, self.render(item))
    }

    fn request_for(&self, item: &JudgeItem, judge_prompt: String) -> GenRequest {
        GenRequest {
            prompt: Prompt::user(judge_prompt),
            n: self.settings.samples(),
            seed: item_seed(self.settings.seed(), &item.id),
        }
    }

    fn judge_chunk(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError> {
        let rendered: Vec<String> = items.iter().map(|i| self.render(i)).collect();
        let requests: Vec<GenRequest> = items
            .iter()
            .zip(&rendered)
            .map(|(item, text)| self.request_for(item, text.clone()))
            .collect();
        let outputs = self
            .generator
            .generate(&requests, self.settings.params())
            .map_err(|source| JudgeError::Generator {
                requests: requests.len(),
                source,
            })?;
        if outputs.len() != requests.len() {
            return Err(JudgeError::OutputCount {
                expected: requests.len(),
                got: outputs.len(),
            });
        }
        let expected = self.settings.samples();
        items
            .iter()
            .zip(rendered)
            .zip(outputs)
            .map(|((item, judge_prompt), completions)| {
                if completions.len() != expected {
                    return Err(JudgeError::SampleCount {
                        id: item.id.clone(),
                        expected,
                        got: completions.len(),
                    });
                }
                let samples: Vec<JudgeSample> = completions
                    .into_iter()
                    .map(|c| to_sample(&item.id, c))
                    .collect();
                let score = mean_score(samples.iter().map(|s| &s.score));
                Ok(Verdict {
                    id: item.id.clone(),
                    judge_prompt: Some(judge_prompt),
                    samples,
                    score,
                })
            })
            .collect()
    }
}

fn to_sample(id: &str, c: Completion) -> JudgeSample {
    let parsed = parse_score(&c.text);
    if let Err(failure) = &parsed {
        debug!(id, %failure, finish_reason = ?c.finish_reason, "judge sample did not parse");
    }
    JudgeSample {
        finish_reason: Some(c.finish_reason),
        score: parsed.as_ref().ok().copied(),
        failure: parsed.err(),
        prompt_tokens: c.prompt_tokens,
        completion_tokens: c.token_ids.len(),
        text: c.text,
    }
}

impl<G: Generator> Judge for LlmJudge<G> {
    fn judge(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let chunk = self.settings.batch_size().unwrap_or(items.len());
        let mut verdicts = Vec::with_capacity(items.len());
        for part in items.chunks(chunk) {
            verdicts.extend(self.judge_chunk(part)?);
        }
        let s = JudgeStats::of(&verdicts);
        info!(
            items = s.items,
            samples = s.samples,
            unparsed = s.unparsed_samples,
            unfinished = s.unfinished_samples,
            unscored_items = s.unscored_items,
            completion_tokens = s.completion_tokens,
            "judged batch"
        );
        if s.unfinished_samples > 0 {
            warn!(
                unfinished = s.unfinished_samples,
                unfinished_unparsed = s.unfinished_unparsed_samples,
                samples = s.samples,
                max_new_tokens = self.settings.params().max_new_tokens,
                "judge verdicts hit max_new_tokens"
            );
        }
        self.stats.add(&s);
        Ok(verdicts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_parts_match_published_vectors() {
        // FNV-1a 64-bit test vectors (Fowler/Noll/Vo reference test suite).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // SplitMix64 seeded with 0: the first output mixes state 0 + the golden gamma.
        assert_eq!(splitmix64_mix(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn item_seed_uses_both_inputs() {
        assert_eq!(item_seed(1, "a"), item_seed(1, "a"));
        assert_ne!(item_seed(1, "a"), item_seed(2, "a"));
        assert_ne!(item_seed(1, "a"), item_seed(1, "b"));
    }
}
