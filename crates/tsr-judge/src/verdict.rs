//! The judge abstraction: items in, verdicts out.

use serde::{Deserialize, Serialize};

use crate::error::JudgeError;
use crate::generate::FinishReason;
use crate::parse::ParseFailure;

/// One (prompt, response) pair to score.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeItem {
    /// Identifies the item in records and derives its sampling seed, so a verdict does not
    /// depend on which other items share the batch. Keep ids unique within a run.
    pub id: String,
    /// The user instruction the response answers.
    pub prompt: String,
    /// The response to score.
    pub response: String,
    /// A known answer, for judges that check correctness ([`VerifierJudge`](crate::VerifierJudge)).
    /// LLM judges ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl JudgeItem {
    pub fn new(
        id: impl Into<String>,
        prompt: impl Into<String>,
        response: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            prompt: prompt.into(),
            response: response.into(),
            reference: None,
        }
    }

    /// The same item with a reference answer.
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }
}

/// One judge sample: the raw text and what was read from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeSample {
    /// The judge's raw output (for a verifier, a one-line explanation).
    pub text: String,
    /// Why generation ended; `None` for judges that do not generate.
    pub finish_reason: Option<FinishReason>,
    /// The parsed score, `None` when parsing failed.
    pub score: Option<f64>,
    /// Why parsing failed, `None` when it succeeded.
    pub failure: Option<ParseFailure>,
    /// Prompt tokens the generator reported (after templating); 0 for judges that do not generate.
    #[serde(default)]
    pub prompt_tokens: usize,
    /// Generated tokens; 0 for judges that do not generate.
    #[serde(default)]
    pub completion_tokens: usize,
    /// Probability judging (`expected`, `direct`): the probability of each score digit 0..5 at
    /// the score position, summed over the token ids of the digit (not normalised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digit_probs: Option<[f64; crate::probs::DIGITS]>,
    /// Probability judging: the sum of `digit_probs`, the share of the distribution on a score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digit_mass: Option<f64>,
}

impl JudgeSample {
    /// Did generation stop at `max_new_tokens` (an unfinished verdict)?
    pub fn is_unfinished(&self) -> bool {
        self.finish_reason == Some(FinishReason::Length)
    }
}

/// A judge's verdict on one item: everything needed to audit the score later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The item's id.
    pub id: String,
    /// The rendered judge prompt (the user message, before the judge model's chat template);
    /// `None` for judges without a prompt.
    pub judge_prompt: Option<String>,
    /// Every sample, parsed or not, in generation order.
    pub samples: Vec<JudgeSample>,
    /// Mean of the samples that parsed; `None` when none did. Never a stand-in 0.
    pub score: Option<f64>,
}

impl Verdict {
    /// The per-sample scores, `None` where parsing failed.
    pub fn sample_scores(&self) -> Vec<Option<f64>> {
        self.samples.iter().map(|s| s.score).collect()
    }

    /// Number of samples that did not parse.
    pub fn unparsed(&self) -> usize {
        self.samples.iter().filter(|s| s.score.is_none()).count()
    }
}

/// Counts over verdicts, for logs and `metrics.jsonl`. Add batches with [`JudgeStats::add`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeStats {
    /// Items judged.
    pub items: usize,
    /// Items with a score (at least one sample parsed).
    pub scored_items: usize,
    /// Items without a score (no sample parsed): they cannot be chosen or rejected.
    pub unscored_items: usize,
    /// Judge samples in all.
    pub samples: usize,
    /// Samples that parsed.
    pub parsed_samples: usize,
    /// Samples that did not parse.
    pub unparsed_samples: usize,
    /// Samples that ended at `max_new_tokens` (unfinished verdicts), parsed or not.
    pub unfinished_samples: usize,
    /// Unfinished samples that also did not parse (the score line was cut off).
    pub unfinished_unparsed_samples: usize,
    /// Prompt tokens over all samples (each sample counts its prompt once).
    pub prompt_tokens: usize,
    /// Generated tokens over all samples.
    pub completion_tokens: usize,
    /// Samples scored from probabilities (they carry a `digit_mass`).
    #[serde(default)]
    pub probed_samples: usize,
    /// Sum of `digit_mass` over probed samples (the mean is [`JudgeStats::digit_mass_mean`]).
    #[serde(default)]
    pub digit_mass_sum: f64,
    /// Smallest `digit_mass` of a probed sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digit_mass_min: Option<f64>,
}

impl JudgeStats {
    /// The counts of a batch of verdicts.
    pub fn of(verdicts: &[Verdict]) -> Self {
        let mut s = Self::default();
        for v in verdicts {
            s.items += 1;
            if v.score.is_some() {
                s.scored_items += 1;
            } else {
                s.unscored_items += 1;
            }
            for x in &v.samples {
                s.samples += 1;
                let parsed = x.score.is_some();
                if parsed {
                    s.parsed_samples += 1;
                } else {
                    s.unparsed_samples += 1;
                }
                if x.is_unfinished() {
                    s.unfinished_samples += 1;
                    if !parsed {
                        s.unfinished_unparsed_samples += 1;
                    }
                }
                s.prompt_tokens += x.prompt_tokens;
                s.completion_tokens += x.completion_tokens;
                if let Some(m) = x.digit_mass {
                    s.probed_samples += 1;
                    s.digit_mass_sum += m;
                    s.digit_mass_min = Some(s.digit_mass_min.map_or(m, |v| v.min(m)));
                }
            }
        }
        s
    }

    /// Adds another batch's counts.
    pub fn add(&mut self, other: &JudgeStats) {
        self.items += other.items;
        self.scored_items += other.scored_items;
        self.unscored_items += other.unscored_items;
        self.samples += other.samples;
        self.parsed_samples += other.parsed_samples;
        self.unparsed_samples += other.unparsed_samples;
        self.unfinished_samples += other.unfinished_samples;
        self.unfinished_unparsed_samples += other.unfinished_unparsed_samples;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.probed_samples += other.probed_samples;
        self.digit_mass_sum += other.digit_mass_sum;
        self.digit_mass_min = match (self.digit_mass_min, other.digit_mass_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Mean `digit_mass` of the probed samples; `None` when there were none.
    pub fn digit_mass_mean(&self) -> Option<f64> {
        (self.probed_samples > 0).then(|| self.digit_mass_sum / self.probed_samples as f64)
    }
}

/// Something that scores (prompt, response) pairs.
///
/// Implementations take the whole batch at once so they can batch their work (an LLM judge
/// sends every judge prompt to its generator together). The result has one verdict per item, in
/// item order.
pub trait Judge {
    fn judge(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError>;
}

impl<J: Judge + ?Sized> Judge for &mut J {
    fn judge(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError> {
        (**self).judge(items)
    }
}

impl<J: Judge + ?Sized> Judge for Box<J> {
    fn judge(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError> {
        (**self).judge(items)
    }
}
