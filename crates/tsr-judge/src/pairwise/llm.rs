//! [`LlmPairwiseJudge`]: a judge model over any [`Generator`] comparing two answers, in `direct`
//! mode (the verdict from the next-token probabilities after `Winner:`) or `sampled` mode (the
//! last `Winner:` line of the judge's answer).

use std::fmt;

use serde::{Deserialize, Serialize};
use tracing::debug;

use super::parse::{parse_winner, preference_probs, read_probs};
use super::{PairwiseItem, PairwiseJudge, PairwiseTemplate, PairwiseVerdict};
use crate::error::JudgeError;
use crate::generate::{GenRequest, Generator, ProbeRequest, Prompt, SamplingParams};
use crate::llm::item_seed;

/// The prefill of `direct` mode: the verdict token comes next.
pub const WINNER_PREFILL: &str = "Winner:";

/// How an [`LlmPairwiseJudge`] reaches its verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairwiseMode {
    /// Prefill `Winner:` and read the probabilities of `A`, `B` and `tie` (one forward pass).
    #[default]
    Direct,
    /// Sample the judge's answer and parse its last `Winner:` line.
    Sampled,
}

impl PairwiseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PairwiseMode::Direct => "direct",
            PairwiseMode::Sampled => "sampled",
        }
    }
}

impl std::str::FromStr for PairwiseMode {
    type Err = JudgeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "direct" => Ok(Self::Direct),
            "sampled" => Ok(Self::Sampled),
            other => Err(JudgeError::InvalidConfig {
                field: "mode",
                reason: format!("must be `direct` or `sampled`, not `{other}`"),
            }),
        }
    }
}

/// Settings of an [`LlmPairwiseJudge`].
#[derive(Clone, Debug, PartialEq)]
pub struct PairwiseSettings {
    pub mode: PairwiseMode,
    pub template: PairwiseTemplate,
    /// Sampled mode: how the verdict is sampled (greedy with temperature 0).
    pub params: SamplingParams,
    /// Base seed; item `i` samples with [`item_seed`]`(seed, id)`.
    pub seed: u64,
    /// Direct mode: how many top tokens to read.
    pub top_logprobs: usize,
    /// Direct mode: below this mass on `A`/`B`/`tie` a verdict is unread.
    pub min_mass: f64,
    /// Items per generator call (`None`: all at once).
    pub batch_size: Option<usize>,
}

impl Default for PairwiseSettings {
    fn default() -> Self {
        Self {
            mode: PairwiseMode::Direct,
            template: PairwiseTemplate::default(),
            params: SamplingParams {
                temperature: 0.0,
                top_p: 1.0,
                max_new_tokens: 128,
                ..SamplingParams::default()
            },
            seed: 0,
            top_logprobs: 20,
            min_mass: 0.1,
            batch_size: None,
        }
    }
}

impl PairwiseSettings {
    /// Checks the ranges of the settings.
    pub fn validate(&self) -> Result<(), JudgeError> {
        let invalid = |field, reason: &str| JudgeError::InvalidConfig {
            field,
            reason: reason.to_string(),
        };
        if !(0.0..=1.0).contains(&self.min_mass) {
            return Err(invalid("min_mass", "must be in [0, 1]"));
        }
        if self.top_logprobs == 0 {
            return Err(invalid("top_logprobs", "must be at least 1"));
        }
        if self.batch_size == Some(0) {
            return Err(invalid("batch_size", "must be at least 1"));
        }
        if self.mode == PairwiseMode::Sampled && self.params.max_new_tokens == 0 {
            return Err(invalid("max_new_tokens", "must be at least 1"));
        }
        Ok(())
    }

    /// One line for result files.
    pub fn describe(&self) -> String {
        match self.mode {
            PairwiseMode::Direct => format!(
                "llm pairwise judge, mode direct, template {}, top_logprobs {}, min_mass {}",
                self.template.origin(),
                self.top_logprobs,
                self.min_mass
            ),
            PairwiseMode::Sampled => format!(
                "llm pairwise judge, mode sampled, template {}, temperature {}, max_new_tokens {}, seed {}",
                self.template.origin(),
                self.params.temperature,
                self.params.max_new_tokens,
                self.seed
            ),
        }
    }
}

/// A judge model comparing two answers (see the [module docs](super)).
pub struct LlmPairwiseJudge<G> {
    generator: G,
    settings: PairwiseSettings,
}

impl<G> fmt::Debug for LlmPairwiseJudge<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmPairwiseJudge")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<G: Generator> LlmPairwiseJudge<G> {
    pub fn new(generator: G, settings: PairwiseSettings) -> Result<Self, JudgeError> {
        settings.validate()?;
        Ok(Self {
            generator,
            settings,
        })
    }

    pub fn settings(&self) -> &PairwiseSettings {
        &self.settings
    }

    pub fn into_generator(self) -> G {
        self.generator
    }

    fn compare_chunk(
        &mut self,
        items: &[PairwiseItem],
    ) -> Result<Vec<PairwiseVerdict>, JudgeError> {
        let prompts: Vec<Prompt> = items
            .iter()
            .map(|i| Prompt::user(self.settings.template.render(i)))
            .collect();
        match self.settings.mode {
            PairwiseMode::Direct => {
                let requests: Vec<ProbeRequest> = prompts
                    .into_iter()
                    .map(|prompt| ProbeRequest {
                        prompt,
                        prefill: WINNER_PREFILL.into(),
                    })
                    .collect();
                let probe = self
                    .generator
                    .as_probe()
                    .ok_or(JudgeError::NoProbe { mode: "direct" })?;
                let results = crate::llm::one_per_request(
                    requests.len(),
                    probe.next_token_logprobs(&requests, self.settings.top_logprobs),
                )?;
                let min_mass = self.settings.min_mass;
                Ok(items
                    .iter()
                    .zip(results)
                    .map(|(item, r)| {
                        let probs = preference_probs(&r.top);
                        let mut v = read_probs(&item.id, probs, min_mass);
                        v.prompt_tokens = r.prompt_tokens;
                        v
                    })
                    .collect())
            }
            PairwiseMode::Sampled => {
                let requests: Vec<GenRequest> = items
                    .iter()
                    .zip(prompts)
                    .map(|(item, prompt)| GenRequest {
                        prompt,
                        n: 1,
                        seed: item_seed(self.settings.seed, &item.id),
                    })
                    .collect();
                let outputs = crate::llm::one_per_request(
                    requests.len(),
                    self.generator.generate(&requests, &self.settings.params),
                )?;
                items
                    .iter()
                    .zip(outputs)
                    .map(|(item, completions)| {
                        let c = match <[_; 1]>::try_from(completions) {
                            Ok([c]) => c,
                            Err(v) => {
                                return Err(JudgeError::SampleCount {
                                    id: item.id.clone(),
                                    expected: 1,
                                    got: v.len(),
                                })
                            }
                        };
                        let preference = parse_winner(&c.text);
                        if preference.is_none() {
                            debug!(
                                id = item.id,
                                text = c.text,
                                "pairwise verdict did not parse"
                            );
                        }
                        Ok(PairwiseVerdict {
                            id: item.id.clone(),
                            preference,
                            failure: preference
                                .is_none()
                                .then(|| "no `Winner: A|B|tie` line".to_string()),
                            text: Some(c.text),
                            probs: None,
                            prompt_tokens: c.prompt_tokens,
                            completion_tokens: c.token_ids.len(),
                        })
                    })
                    .collect()
            }
        }
    }
}

impl<G: Generator> PairwiseJudge for LlmPairwiseJudge<G> {
    fn compare(&mut self, items: &[PairwiseItem]) -> Result<Vec<PairwiseVerdict>, JudgeError> {
        let chunk = self.settings.batch_size.unwrap_or(items.len()).max(1);
        let mut out = Vec::with_capacity(items.len());
        for part in items.chunks(chunk) {
            out.extend(self.compare_chunk(part)?);
        }
        Ok(out)
    }
    fn describe(&self) -> String {
        self.settings.describe()
    }
}
