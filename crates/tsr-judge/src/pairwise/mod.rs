//! Pairwise judging: which of two answers to one instruction is better.
//!
//! Win rates (see [`crate::winrate`]) compare two models' answers side by side rather than
//! scoring each alone. A [`PairwiseJudge`] takes [`PairwiseItem`]s (an instruction and answers
//! `A` and `B`) and returns one [`PairwiseVerdict`] per item: a [`Preference`] for `A`, `B` or a
//! tie, or none when the judge's output could not be read (kept as data, with the reason).
//!
//! Two judges come with the crate:
//! * [`LlmPairwiseJudge`]: a judge model over any [`Generator`], prompted with tsr's pairwise
//!   template ([`PAIRWISE`], overridable by a file of yours with the placeholders
//!   `{instruction}`, `{response_a}` and `{response_b}`). In `direct` mode (the default) the
//!   judge's answer is prefilled with `Winner:` and the verdict is read from the next-token
//!   probabilities of `A`, `B` and `tie` (one batched forward pass, no sampling: the verdict of
//!   a small model that would not finish a sentence is still readable). In `sampled` mode the
//!   judge writes its answer and the last `Winner: A|B|tie` line is parsed.
//! * [`RuleJudge`]: prefers the answer that has a recognisable trait (starts with, ends with or
//!   contains a phrase). It checks a style, not quality: use it to verify that training on
//!   pairs with that style moved a model towards it.

mod llm;
mod parse;
mod rule;
mod template;

use serde::{Deserialize, Serialize};

use crate::error::JudgeError;
#[cfg(doc)]
use crate::{generate::Generator, llm::item_seed};

pub use llm::{LlmPairwiseJudge, PairwiseMode, PairwiseSettings, WINNER_PREFILL};
pub use parse::{parse_winner, preference_of, preference_probs};
pub use rule::{RuleJudge, StyleRule};
pub use template::{PairwiseTemplate, PAIRWISE};

/// Which answer a judge prefers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preference {
    A,
    B,
    Tie,
}

impl Preference {
    /// The credit answer `A` gets: 1 for a win, ½ for a tie, 0 for a loss.
    pub fn credit_a(self) -> f64 {
        match self {
            Preference::A => 1.0,
            Preference::B => 0.0,
            Preference::Tie => 0.5,
        }
    }
}

/// One comparison: an instruction and two answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairwiseItem {
    /// Identifies the item in records and seeds a sampled judge (as [`item_seed`]).
    pub id: String,
    pub instruction: String,
    pub response_a: String,
    pub response_b: String,
}

/// Probabilities a `direct` judge put on each verdict (summed over the tokens that spell it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreferenceProbs {
    pub a: f64,
    pub b: f64,
    pub tie: f64,
    /// `a + b + tie`: how much of the next-token distribution fell on a verdict.
    pub mass: f64,
}

/// A judge's answer for one [`PairwiseItem`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairwiseVerdict {
    pub id: String,
    /// `None` when the judge's output could not be read (see `failure`).
    pub preference: Option<Preference>,
    /// What the judge wrote (sampled mode), or why a rule decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The verdict probabilities (direct mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probs: Option<PreferenceProbs>,
    /// Why there is no preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Judge prompt tokens (after templating) and generated tokens, for compute accounting.
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub completion_tokens: usize,
}

impl PairwiseVerdict {
    fn decided(id: &str, preference: Preference, text: String) -> Self {
        Self {
            id: id.to_string(),
            preference: Some(preference),
            text: Some(text),
            probs: None,
            failure: None,
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }
}

/// Compares two answers to one instruction.
pub trait PairwiseJudge {
    /// One verdict per item, in order. An item's verdict must not depend on the other items.
    fn compare(&mut self, items: &[PairwiseItem]) -> Result<Vec<PairwiseVerdict>, JudgeError>;

    /// What judges, with the settings that change verdicts (for result files).
    fn describe(&self) -> String;
}

impl<J: PairwiseJudge + ?Sized> PairwiseJudge for &mut J {
    fn compare(&mut self, items: &[PairwiseItem]) -> Result<Vec<PairwiseVerdict>, JudgeError> {
        (**self).compare(items)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}
