//! The LLM judge: the judge prompt through any [`Generator`], several samples, averaged.

use std::fmt;

use tracing::{debug, info, warn};

use crate::config::{JudgeConfig, JudgeMode, JudgeSettings};
use crate::error::JudgeError;
use crate::generate::{
    Completion, GenRequest, Generator, ProbeRequest, ProbeResult, Prompt, SamplingParams,
};
use crate::parse::{mean_score, parse_score, ParseFailure};
use crate::probs::DigitDistribution;
use crate::verdict::{Judge, JudgeItem, JudgeSample, JudgeStats, Verdict};

pub use crate::seed::item_seed;

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
        match self.settings.mode() {
            JudgeMode::Sampled => self.judge_sampled(items),
            JudgeMode::Expected => self.judge_expected(items),
            JudgeMode::Direct => self.judge_direct(items),
        }
    }

    /// Samples `samples` completions per item with `params`; checks the counts.
    fn sample_verdicts(
        &mut self,
        items: &[JudgeItem],
        rendered: &[String],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, JudgeError> {
        let requests: Vec<GenRequest> = items
            .iter()
            .zip(rendered)
            .map(|(item, text)| self.request_for(item, text.clone()))
            .collect();
        let outputs = one_per_request(requests.len(), self.generator.generate(&requests, params))?;
        let expected = self.settings.samples();
        for (item, completions) in items.iter().zip(&outputs) {
            if completions.len() != expected {
                return Err(JudgeError::SampleCount {
                    id: item.id.clone(),
                    expected,
                    got: completions.len(),
                });
            }
        }
        Ok(outputs)
    }

    /// Reads the next-token distribution after each prefilled judge prompt.
    fn probe(&mut self, requests: &[ProbeRequest]) -> Result<Vec<ProbeResult>, JudgeError> {
        let mode = self.settings.mode().as_str();
        let top_k = self.settings.top_logprobs();
        let probe = self
            .generator
            .as_probe()
            .ok_or(JudgeError::NoProbe { mode })?;
        one_per_request(requests.len(), probe.next_token_logprobs(requests, top_k))
    }

    fn judge_sampled(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError> {
        let rendered: Vec<String> = items.iter().map(|i| self.render(i)).collect();
        let params = self.settings.params().clone();
        let outputs = self.sample_verdicts(items, &rendered, &params)?;
        Ok(items
            .iter()
            .zip(rendered)
            .zip(outputs)
            .map(|((item, judge_prompt), completions)| {
                let samples = completions
                    .into_iter()
                    .map(|c| to_sample(&item.id, c))
                    .collect();
                verdict(item, judge_prompt, samples)
            })
            .collect())
    }

    fn judge_direct(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError> {
        let rendered: Vec<String> = items.iter().map(|i| self.render(i)).collect();
        let requests: Vec<ProbeRequest> = rendered
            .iter()
            .map(|text| ProbeRequest {
                prompt: Prompt::user(text.clone()),
                prefill: SCORE_PREFILL.into(),
            })
            .collect();
        let results = self.probe(&requests)?;
        let threshold = self.settings.min_digit_mass();
        Ok(items
            .iter()
            .zip(rendered)
            .zip(results)
            .map(|((item, judge_prompt), r)| {
                let sample = probed_sample(&item.id, SCORE_PREFILL.into(), None, 0, &r, threshold);
                verdict(item, judge_prompt, vec![sample])
            })
            .collect())
    }

    fn judge_expected(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError> {
        let rendered: Vec<String> = items.iter().map(|i| self.render(i)).collect();
        let mut params = self.settings.params().clone();
        params.stop.push(SCORE_STOP.into());
        let outputs = self.sample_verdicts(items, &rendered, &params)?;
        let requests: Vec<ProbeRequest> = rendered
            .iter()
            .zip(&outputs)
            .flat_map(|(text, completions)| {
                completions.iter().map(move |c| ProbeRequest {
                    prompt: Prompt::user(text.clone()),
                    prefill: score_prefill(&c.text),
                })
            })
            .collect();
        let mut results = self.probe(&requests)?.into_iter();
        let threshold = self.settings.min_digit_mass();
        Ok(items
            .iter()
            .zip(rendered)
            .zip(outputs)
            .map(|((item, judge_prompt), completions)| {
                let samples = completions
                    .into_iter()
                    .zip(results.by_ref())
                    .map(|(c, r)| {
                        probed_sample(
                            &item.id,
                            c.text,
                            Some(c.finish_reason),
                            c.token_ids.len(),
                            &r,
                            threshold,
                        )
                    })
                    .collect();
                verdict(item, judge_prompt, samples)
            })
            .collect())
    }
}

/// A generator's or probe's answer to `requests` requests: its error wrapped, and exactly one
/// output per request.
pub(crate) fn one_per_request<T>(
    requests: usize,
    result: Result<Vec<T>, crate::generate::GenerateError>,
) -> Result<Vec<T>, JudgeError> {
    let outputs = result.map_err(|source| JudgeError::Generator { requests, source })?;
    if outputs.len() != requests {
        return Err(JudgeError::OutputCount {
            expected: requests,
            got: outputs.len(),
        });
    }
    Ok(outputs)
}

/// The start of the judge's answer in `direct` mode, and what `expected` mode appends to a
/// justification: the score digit comes next.
pub const SCORE_PREFILL: &str = "Score: ";
/// Where `expected` mode cuts a sampled justification.
const SCORE_STOP: &str = "Score:";

/// The answer prefill of `expected` mode: the justification, then a `Score: ` line.
pub fn score_prefill(justification: &str) -> String {
    let j = justification.trim_end();
    if j.is_empty() {
        SCORE_PREFILL.to_string()
    } else {
        format!("{j}\n{SCORE_PREFILL}")
    }
}

fn verdict(item: &JudgeItem, judge_prompt: String, samples: Vec<JudgeSample>) -> Verdict {
    let score = mean_score(samples.iter().map(|s| &s.score));
    Verdict {
        id: item.id.clone(),
        judge_prompt: Some(judge_prompt),
        samples,
        score,
    }
}

/// A sample scored from the digit probabilities of `r`.
fn probed_sample(
    id: &str,
    text: String,
    finish_reason: Option<crate::generate::FinishReason>,
    completion_tokens: usize,
    r: &ProbeResult,
    threshold: f64,
) -> JudgeSample {
    let dist = DigitDistribution::from_top(&r.top);
    let parsed = match dist.expected() {
        Some(e) if dist.mass >= threshold => Ok(e),
        _ => Err(ParseFailure::LowDigitMass {
            mass: dist.mass,
            threshold,
        }),
    };
    if let Err(failure) = &parsed {
        debug!(id, %failure, "judge verdict has too little mass on the digits");
    }
    JudgeSample {
        text,
        finish_reason,
        score: parsed.as_ref().ok().copied(),
        failure: parsed.err(),
        prompt_tokens: r.prompt_tokens,
        completion_tokens,
        digit_probs: Some(dist.probs),
        digit_mass: Some(dist.mass),
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
        digit_probs: None,
        digit_mass: None,
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
    fn item_seed_uses_both_inputs() {
        assert_eq!(item_seed(1, "a"), item_seed(1, "a"));
        assert_ne!(item_seed(1, "a"), item_seed(2, "a"));
        assert_ne!(item_seed(1, "a"), item_seed(1, "b"));
    }
}
