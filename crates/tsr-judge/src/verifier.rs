//! A judge for tasks with a known numeric answer (GSM8K style).

use std::sync::OnceLock;

use regex::Regex;
use tracing::info;

use crate::error::JudgeError;
use crate::verdict::{Judge, JudgeItem, JudgeSample, JudgeStats, Verdict};

fn number_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?P<neg>[-−])?\$?[\ \t]?(?P<num>[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?)",
        )
        .expect("number regex compiles")
    })
}

/// Every number in `text`, in order: thousands separators dropped (`1,234.50` is 1234.5), a
/// leading `$` ignored, and a minus sign honoured only where it does not join two tokens
/// (`-3` and `= -3` are negative, the `-` of `3-4` is not).
fn numbers(text: &str) -> Vec<f64> {
    number_re()
        .captures_iter(text)
        .filter_map(|c| {
            let num = c.name("num")?;
            let value: f64 = num.as_str().replace(',', "").parse().ok()?;
            let negative = c.name("neg").is_some_and(|m| {
                text[..m.start()]
                    .chars()
                    .next_back()
                    .is_none_or(|p| !p.is_alphanumeric())
            });
            Some(if negative { -value } else { value })
        })
        .collect()
}

/// The contents of the last `\boxed{...}` (braces balanced), if any.
fn last_boxed(text: &str) -> Option<&str> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (i, ch) in text[start..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i]);
                }
            }
            _ => {}
        }
    }
    Some(&text[start..])
}

/// The final answer of a free-form response: the last number inside the last `\boxed{}` if
/// there is one, else the first number after the last `####`, else the last number in the text.
///
/// ```
/// use tsr_judge::final_number;
/// assert_eq!(final_number("She pays $1,234.50 in total."), Some(1234.5));
/// assert_eq!(final_number("so the answer is \\boxed{-7}."), Some(-7.0));
/// assert_eq!(final_number("No idea."), None);
/// ```
pub fn final_number(text: &str) -> Option<f64> {
    if let Some(boxed) = last_boxed(text) {
        return numbers(boxed).last().copied();
    }
    if let Some(i) = text.rfind("####") {
        return numbers(&text[i + 4..]).first().copied();
    }
    numbers(text).last().copied()
}

/// The answer of a GSM8K-style reference: the number after the last `#### `, or the last number
/// when there is no `####` (a bare `"42"` works).
pub fn reference_number(reference: &str) -> Option<f64> {
    match reference.rfind("####") {
        Some(i) => numbers(&reference[i + 4..]).first().copied(),
        None => numbers(reference).last().copied(),
    }
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

/// Scores a response by comparing its [`final_number`] with the item's
/// [`reference`](JudgeItem::reference) answer ([`reference_number`]).
///
/// Correct answers score `correct` (default 1.0), wrong ones `incorrect` (default 0.0), so the
/// mean over items is the accuracy; [`VerifierJudge::five_point`] uses 5/0 to sit on the LLM
/// judge's scale. A response without any number is wrong (scored, not unparsed: unlike an LLM
/// verdict, there is nothing left to interpret). Every verdict has one sample whose text says
/// what was compared. An item without a reference, or with a reference without a number, is an
/// error ([`JudgeError::MissingReference`], [`JudgeError::BadReference`]).
#[derive(Clone, Debug, PartialEq)]
pub struct VerifierJudge {
    pub correct: f64,
    pub incorrect: f64,
}

impl Default for VerifierJudge {
    fn default() -> Self {
        Self {
            correct: 1.0,
            incorrect: 0.0,
        }
    }
}

impl VerifierJudge {
    /// Correct = 5, incorrect = 0: the range of the additive 5-point prompt.
    pub fn five_point() -> Self {
        Self {
            correct: 5.0,
            incorrect: 0.0,
        }
    }

    fn verdict(&self, item: &JudgeItem) -> Result<Verdict, JudgeError> {
        let reference = item
            .reference
            .as_deref()
            .ok_or_else(|| JudgeError::MissingReference {
                id: item.id.clone(),
            })?;
        let expected = reference_number(reference).ok_or_else(|| JudgeError::BadReference {
            id: item.id.clone(),
            reference: reference.to_string(),
        })?;
        let (text, score) = match final_number(&item.response) {
            Some(got) if same(got, expected) => (
                format!("expected {expected}, found {got}: correct"),
                self.correct,
            ),
            Some(got) => (
                format!("expected {expected}, found {got}: incorrect"),
                self.incorrect,
            ),
            None => (
                format!("expected {expected}, found no number: incorrect"),
                self.incorrect,
            ),
        };
        let sample = JudgeSample {
            text,
            finish_reason: None,
            score: Some(score),
            failure: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            digit_probs: None,
            digit_mass: None,
        };
        Ok(Verdict {
            id: item.id.clone(),
            judge_prompt: None,
            samples: vec![sample],
            score: Some(score),
        })
    }
}

impl Judge for VerifierJudge {
    fn judge(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError> {
        let verdicts = items
            .iter()
            .map(|i| self.verdict(i))
            .collect::<Result<Vec<_>, _>>()?;
        let correct = verdicts
            .iter()
            .filter(|v| v.score == Some(self.correct))
            .count();
        info!(
            items = JudgeStats::of(&verdicts).items,
            correct, "verified batch"
        );
        Ok(verdicts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_numbers() {
        let cases: &[(&str, Option<f64>)] = &[
            ("The answer is 18.", Some(18.0)),
            ("Total: $1,234.50", Some(1234.5)),
            ("It costs $1,234,567 overall", Some(1_234_567.0)),
            ("The temperature drops to -5 degrees", Some(-5.0)),
            ("x = −3", Some(-3.0)),
            ("pages 3-4", Some(4.0)),
            ("First 5, then 1, 2", Some(2.0)),
            ("\\boxed{42} and later 7", Some(42.0)),
            ("answer \\boxed{1,000}.", Some(1000.0)),
            ("Step 1: 3*4=12\n#### 12\nThanks, 2 steps", Some(12.0)),
            ("no digits here", None),
            ("\\boxed{}", None),
            ("50% of 80 is 40.", Some(40.0)),
        ];
        for (text, want) in cases {
            assert_eq!(final_number(text), *want, "{text:?}");
        }
    }

    #[test]
    fn reference_numbers() {
        assert_eq!(
            reference_number("She has 3+4=<<3+4=7>>7 apples.\n#### 7"),
            Some(7.0)
        );
        assert_eq!(reference_number("#### 1,080"), Some(1080.0));
        assert_eq!(reference_number("#### -12"), Some(-12.0));
        assert_eq!(reference_number("42"), Some(42.0));
        assert_eq!(reference_number("#### none"), None);
    }

    #[test]
    fn verifier_scores_and_errors() {
        let mut j = VerifierJudge::default();
        let items = [
            JudgeItem::new("a", "q", "It is $1,080.00.").with_reference("... #### 1,080"),
            JudgeItem::new("b", "q", "It is 1081").with_reference("#### 1080"),
            JudgeItem::new("c", "q", "I don't know").with_reference("#### 1080"),
        ];
        let v = j.judge(&items).unwrap();
        assert_eq!(
            v.iter().map(|v| v.score).collect::<Vec<_>>(),
            [Some(1.0), Some(0.0), Some(0.0)]
        );
        assert_eq!(
            v[2].samples[0].text,
            "expected 1080, found no number: incorrect"
        );
        let mut five = VerifierJudge::five_point();
        assert_eq!(five.judge(&items[..1]).unwrap()[0].score, Some(5.0));
        let e = j.judge(&[JudgeItem::new("d", "q", "1")]).unwrap_err();
        assert!(matches!(e, JudgeError::MissingReference { ref id } if id == "d"));
        let e = j
            .judge(&[JudgeItem::new("e", "q", "1").with_reference("n/a")])
            .unwrap_err();
        assert!(matches!(e, JudgeError::BadReference { .. }));
    }
}
