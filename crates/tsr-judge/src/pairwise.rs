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

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::error::JudgeError;
use crate::generate::{GenRequest, Generator, ProbeRequest, Prompt, SamplingParams, TokenLogprob};
use crate::llm::item_seed;

/// tsr's pairwise judge prompt (tsr's own wording).
pub const PAIRWISE: &str = include_str!("prompts/pairwise.txt");

/// The prefill of `direct` mode: the verdict token comes next.
pub const WINNER_PREFILL: &str = "Winner:";

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

/// A pairwise judge prompt with `{instruction}`, `{response_a}` and `{response_b}`, filled
/// literally in one pass (text inside an answer that looks like a placeholder stays as it is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairwiseTemplate {
    origin: String,
    text: String,
}

const PLACEHOLDERS: [&str; 3] = ["{instruction}", "{response_a}", "{response_b}"];

impl Default for PairwiseTemplate {
    fn default() -> Self {
        Self::new("pairwise (built in)", PAIRWISE).expect("the built-in template is complete")
    }
}

impl PairwiseTemplate {
    /// A template from text; every placeholder must occur.
    pub fn new(origin: impl Into<String>, text: impl Into<String>) -> Result<Self, JudgeError> {
        let (origin, text) = (origin.into(), text.into());
        for placeholder in PLACEHOLDERS {
            if !text.contains(placeholder) {
                return Err(JudgeError::TemplatePlaceholder {
                    origin,
                    placeholder,
                });
            }
        }
        Ok(Self { origin, text })
    }

    /// A template read from a UTF-8 file.
    pub fn from_file(path: &Path) -> Result<Self, JudgeError> {
        let text = crate::template::read_template_file(path)?;
        Self::new(path.display().to_string(), text)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The template with the item filled in.
    pub fn render(&self, item: &PairwiseItem) -> String {
        let values = [&item.instruction, &item.response_a, &item.response_b];
        let mut out =
            String::with_capacity(self.text.len() + values.iter().map(|v| v.len()).sum::<usize>());
        let mut rest = self.text.as_str();
        'outer: while !rest.is_empty() {
            for (placeholder, value) in PLACEHOLDERS.iter().zip(values) {
                if let Some(after) = rest.strip_prefix(placeholder) {
                    out.push_str(value);
                    rest = after;
                    continue 'outer;
                }
            }
            let c = rest.chars().next().expect("rest is not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
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

/// A judge model comparing two answers (see the [module docs](self)).
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

/// The verdict a token spells: `A`, `B` or `tie` (case-insensitive for `tie`), ignoring
/// surrounding whitespace and word-start markers (`▁`, `Ġ`).
pub fn preference_of(token: &str) -> Option<Preference> {
    let t = token.trim_matches(|c: char| c.is_whitespace() || c == '\u{2581}' || c == '\u{120}');
    match t {
        "A" => Some(Preference::A),
        "B" => Some(Preference::B),
        _ if t.eq_ignore_ascii_case("tie") => Some(Preference::Tie),
        _ => None,
    }
}

/// Sums the probabilities of the verdict tokens among `top`.
pub fn preference_probs(top: &[TokenLogprob]) -> PreferenceProbs {
    let (mut a, mut b, mut tie) = (0.0, 0.0, 0.0);
    for t in top.iter().filter(|t| t.logprob.is_finite()) {
        match preference_of(&t.token) {
            Some(Preference::A) => a += t.logprob.exp(),
            Some(Preference::B) => b += t.logprob.exp(),
            Some(Preference::Tie) => tie += t.logprob.exp(),
            None => {}
        }
    }
    PreferenceProbs {
        a,
        b,
        tie,
        mass: a + b + tie,
    }
}

/// The most probable verdict, or none when the mass on verdicts is below `min_mass`.
fn read_probs(id: &str, probs: PreferenceProbs, min_mass: f64) -> PairwiseVerdict {
    let preference = if probs.mass < min_mass || probs.mass <= 0.0 {
        None
    } else if probs.tie >= probs.a && probs.tie >= probs.b || probs.a == probs.b {
        Some(Preference::Tie)
    } else if probs.a > probs.b {
        Some(Preference::A)
    } else {
        Some(Preference::B)
    };
    PairwiseVerdict {
        id: id.to_string(),
        preference,
        text: None,
        failure: preference
            .is_none()
            .then(|| format!("verdict mass {:.3} below min_mass {min_mass}", probs.mass)),
        probs: Some(probs),
        prompt_tokens: 0,
        completion_tokens: 0,
    }
}

/// The last `Winner: A|B|tie` statement of a sampled verdict (markdown emphasis and brackets
/// around the value tolerated).
pub fn parse_winner(text: &str) -> Option<Preference> {
    let lower = text.to_ascii_lowercase();
    let mut found = None;
    let mut from = 0;
    while let Some(i) = lower[from..].find("winner") {
        let start = from + i + "winner".len();
        from = start;
        let rest = text[start..].trim_start_matches(['*', '_', ' ']);
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let value: String = rest
            .trim_start_matches(|c: char| c.is_whitespace() || "*_[(\"'".contains(c))
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let p = match value.as_str() {
            "A" => Some(Preference::A),
            "B" => Some(Preference::B),
            v if v.eq_ignore_ascii_case("tie") => Some(Preference::Tie),
            _ => None,
        };
        if p.is_some() {
            found = p;
        }
    }
    found
}

/// What a [`RuleJudge`] looks for in an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "phrase")]
pub enum StyleRule {
    StartsWith(String),
    EndsWith(String),
    Contains(String),
}

impl StyleRule {
    /// Parses `starts-with:TEXT`, `ends-with:TEXT` or `contains:TEXT`.
    pub fn parse(spec: &str) -> Result<Self, JudgeError> {
        let bad = || JudgeError::InvalidConfig {
            field: "rule",
            reason: format!(
                "`{spec}` is not `starts-with:TEXT`, `ends-with:TEXT` or `contains:TEXT`"
            ),
        };
        let (kind, phrase) = spec.split_once(':').ok_or_else(bad)?;
        if phrase.is_empty() {
            return Err(bad());
        }
        let phrase = phrase.to_string();
        match kind {
            "starts-with" => Ok(Self::StartsWith(phrase)),
            "ends-with" => Ok(Self::EndsWith(phrase)),
            "contains" => Ok(Self::Contains(phrase)),
            _ => Err(bad()),
        }
    }

    /// Whether `answer` (surrounding whitespace ignored) has the trait.
    pub fn matches(&self, answer: &str) -> bool {
        let a = answer.trim();
        match self {
            StyleRule::StartsWith(p) => a.starts_with(p.as_str()),
            StyleRule::EndsWith(p) => a.ends_with(p.as_str()),
            StyleRule::Contains(p) => a.contains(p.as_str()),
        }
    }
}

impl fmt::Display for StyleRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StyleRule::StartsWith(p) => write!(f, "starts-with:{p}"),
            StyleRule::EndsWith(p) => write!(f, "ends-with:{p}"),
            StyleRule::Contains(p) => write!(f, "contains:{p}"),
        }
    }
}

/// Prefers the answer that has a [`StyleRule`]'s trait; a tie when both or neither have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleJudge {
    pub rule: StyleRule,
}

impl PairwiseJudge for RuleJudge {
    fn compare(&mut self, items: &[PairwiseItem]) -> Result<Vec<PairwiseVerdict>, JudgeError> {
        Ok(items
            .iter()
            .map(|item| {
                let (a, b) = (
                    self.rule.matches(&item.response_a),
                    self.rule.matches(&item.response_b),
                );
                let preference = match (a, b) {
                    (true, false) => Preference::A,
                    (false, true) => Preference::B,
                    _ => Preference::Tie,
                };
                PairwiseVerdict::decided(
                    &item.id,
                    preference,
                    format!("A {}, B {} `{}`", has(a), has(b), self.rule),
                )
            })
            .collect())
    }
    fn describe(&self) -> String {
        format!("rule judge `{}` (checks a style, not quality)", self.rule)
    }
}

fn has(yes: bool) -> &'static str {
    if yes {
        "matches"
    } else {
        "does not match"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_winner_line() {
        assert_eq!(parse_winner("Winner: A"), Some(Preference::A));
        assert_eq!(parse_winner("**Winner:** [[B]]"), Some(Preference::B));
        assert_eq!(parse_winner("winner: Tie."), Some(Preference::Tie));
        assert_eq!(
            parse_winner("Winner: A\nOn reflection... Winner: B"),
            Some(Preference::B)
        );
        assert_eq!(parse_winner("Winner: Answer"), None);
        assert_eq!(parse_winner("The winner is clear"), None);
        assert_eq!(parse_winner(""), None);
    }

    #[test]
    fn verdict_tokens_are_summed_over_spellings() {
        let lp = |token: &str, p: f64| TokenLogprob {
            token: token.into(),
            logprob: p.ln(),
            id: None,
        };
        let probs = preference_probs(&[
            lp(" A", 0.3),
            lp("A", 0.1),
            lp("\u{2581}B", 0.35),
            lp(" tie", 0.05),
            lp(" The", 0.2),
        ]);
        assert!((probs.a - 0.4).abs() < 1e-12);
        assert!((probs.b - 0.35).abs() < 1e-12);
        assert!((probs.mass - 0.8).abs() < 1e-12);
        assert_eq!(read_probs("x", probs, 0.1).preference, Some(Preference::A));
        let low = preference_probs(&[lp(" A", 0.05), lp(" The", 0.9)]);
        let v = read_probs("x", low, 0.1);
        assert_eq!(v.preference, None);
        assert!(v.failure.unwrap().contains("below min_mass"));
    }

    #[test]
    fn template_fills_literally_once() {
        let t =
            PairwiseTemplate::new("t", "Q={instruction} A={response_a} B={response_b}").unwrap();
        let item = PairwiseItem {
            id: "i".into(),
            instruction: "{response_b}".into(),
            response_a: "x".into(),
            response_b: "y".into(),
        };
        assert_eq!(t.render(&item), "Q={response_b} A=x B=y");
        assert!(matches!(
            PairwiseTemplate::new("t", "{instruction} {response_a}"),
            Err(JudgeError::TemplatePlaceholder {
                placeholder: "{response_b}",
                ..
            })
        ));
    }

    #[test]
    fn rule_judge_prefers_the_styled_answer() {
        let mut j = RuleJudge {
            rule: StyleRule::parse("ends-with:Hope this helps!").unwrap(),
        };
        let item = |a: &str, b: &str| PairwiseItem {
            id: "i".into(),
            instruction: "q".into(),
            response_a: a.into(),
            response_b: b.into(),
        };
        let v = j
            .compare(&[
                item("Yes. Hope this helps!\n", "Yes."),
                item("Yes.", "No. Hope this helps!"),
                item("Yes.", "No."),
            ])
            .unwrap();
        let prefs: Vec<_> = v.iter().map(|v| v.preference.unwrap()).collect();
        assert_eq!(prefs, [Preference::A, Preference::B, Preference::Tie]);
        assert!(StyleRule::parse("ends-with:").is_err());
        assert!(StyleRule::parse("suffix:x").is_err());
    }
}
