//! [`RuleJudge`]: prefers the answer with a recognisable trait ([`StyleRule`]); it checks a style,
//! not quality.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{PairwiseItem, PairwiseJudge, PairwiseVerdict, Preference};
use crate::error::JudgeError;

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
