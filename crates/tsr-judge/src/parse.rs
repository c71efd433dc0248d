//! Parsing the score out of a judge verdict.
//!
//! The paper's prompt asks the judge to "Conclude with the score using the format:
//! "Score: <total points>"". [`parse_score`] finds every *score statement* in a verdict and reads
//! the **last** one. The rules, decided once here and pinned by the table test in
//! `tests/it/parse_table.rs`:
//!
//! * A score statement is the word `score` (any case, a whole word: not `scores`, not `scored`)
//!   followed by a separator: `:` (also the full-width `：`), `=`, or a dash followed by
//!   whitespace (`SCORE - 4`; `Score -4` is not a statement). Markdown emphasis may sit between the
//!   word and the separator and around the value: `**Score:** 4`, `**Score: 4**`, `Score: **4**`,
//!   `Score: [4]`, `Score: `4``. The value may stand alone on a later line (`**Score:**\n4`);
//!   a list after `Score:` (`Score:\n1. Relevance ...`, `Score:\n- 1 point for ...`) is not a
//!   value.
//! * The value is a plain decimal number (`4`, `3.5`, `4.0`; a minus sign counts only when it
//!   touches the digits: `-1`, not the list bullet `- 1`), optionally followed by `/5` or
//!   `out of 5`, and by anything that does not look like a second number (`4 points.`,
//!   `4 (solid answer)`). A trailing period is not a decimal point.
//! * Accepted values lie in **[0, 5]**. Out of range (`6`, `5.5`), negative (`-1`), another scale
//!   (`8/10`, `10/10`: rejected, never rescaled) and ranges or alternatives (`3-4`, `3 or 4`,
//!   `3 to 4`, `3,5`) are failures.
//! * Statements whose value is not a number do not count: the template echo
//!   `Score: <total points>` (the judge repeating the prompt) and prose such as `Score: The
//!   response ...` are skipped, so an echo *after* a real score does not hide it. Among the
//!   statements with a number, the last one decides: if it is invalid the verdict fails, even when
//!   an earlier statement was valid (the judge's final word is the verdict).
//! * Number words (`Score: four`), `Points: 4`, `the score is 4` and `4/5` without the word
//!   `score` are not recognised: the prompt fixes the format, and a lenient reader mostly picks up
//!   numbers from the justification.
//!
//! A failure is data, never a score of 0: see [`ParseFailure`].

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Lowest score the additive 5-point prompt can give.
pub const MIN_SCORE: f64 = 0.0;
/// Highest score the additive 5-point prompt can give.
pub const MAX_SCORE: f64 = 5.0;

/// Why a judge sample yielded no score. Kept in the verdict record and counted in the stats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ParseFailure {
    /// No `Score:` statement at all (for example a verdict cut off before its last line).
    #[error("no score statement")]
    NoScore,
    /// The only score statements repeat the template placeholder (`Score: <total points>`).
    #[error("only the template placeholder `Score: <total points>`")]
    TemplateEcho,
    /// `Score:` statements exist but none is followed by a number.
    #[error("score statement without a number")]
    NoNumber,
    /// The last score is outside [0, 5].
    #[error("score {value} is outside [0, 5]")]
    OutOfRange { value: f64 },
    /// The last score is negative.
    #[error("negative score {value}")]
    Negative { value: f64 },
    /// The last score is given on another scale (`8/10`); it is not rescaled.
    #[error("score {value}/{denominator} is not on the 5-point scale")]
    WrongScale { value: f64, denominator: f64 },
    /// The last score statement names a range or several values (`3-4`, `3 or 4`).
    #[error("ambiguous score statement {statement:?}")]
    Ambiguous { statement: String },
    /// Probability judging: too little of the next-token distribution fell on the digits 0..5.
    #[error("only {mass:.3} of the probability is on the digits 0..5 (threshold {threshold})")]
    LowDigitMass { mass: f64, threshold: f64 },
}

/// The start of a score statement: the word and its separator.
fn statement_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)\bscore\b[*_`\s]*(?:[:：=]|[-–—]\s)").expect("statement regex compiles")
    })
}

/// The value of a statement: opening markdown, an optional sign, the number, and an optional
/// denominator (`/5`, `out of 5`).
fn value_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r#"(?ix)
            ^ [\s*_`"'\[(]*
            (?P<sign> [-−–] )?
            (?P<num> [0-9]+ (?: \.[0-9]+ )? )
            (?: [*_`"'\])\ \t]* (?: / | out\ of ) [\ \t]* [*_`]* [\ \t]*
                (?P<den> [0-9]+ (?: \.[0-9]+ )? ) )?
            "#,
        )
        .expect("value regex compiles")
    })
}

/// A placeholder instead of a value (`<total points>`).
fn echo_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r#"^[\s*_`"'\[(]*<[^>\n]*>"#).expect("echo regex compiles"))
}

/// What right after the value makes it ambiguous: a second number joined by a dash, `to`, `or`,
/// `and`, a comma or a slash.
/// What may follow a value that stands on a line of its own after `Score:` (`**Score:**\n4`).
fn lone_value_rest_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"(?i)^[*_`"'\])\ \t]*(?:points?)?[*_`"'\])\ \t]*\.?[*_`\ \t]*(?:\n|$)"#)
            .expect("lone value regex compiles")
    })
}

fn ambiguous_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r#"(?ix)
            ^ [*_`"'\])\ \t]*
            (?: [-–—~,/] | \bto\b | \bor\b | \band\b )
            [\ \t]* [*_`"'\[(]* [\ \t]* [-−–]? [0-9]
            "#,
        )
        .expect("ambiguity regex compiles")
    })
}

/// What one statement holds.
enum Statement {
    /// A number, valid or not.
    Numeric(Result<f64, ParseFailure>),
    /// The template placeholder.
    Echo,
    /// Something that is not a number.
    Other,
}

fn read_statement(after: &str) -> Statement {
    let Some(caps) = value_re().captures(after) else {
        return if echo_re().is_match(after) {
            Statement::Echo
        } else {
            Statement::Other
        };
    };
    let whole = caps.get(0).expect("group 0 always exists");
    let num = caps.name("num").expect("num is not optional");
    let value: f64 = num
        .as_str()
        .parse()
        .expect("digits with an optional fraction parse");
    let rest = &after[whole.end()..];
    // A value on a later line must stand alone there: `Score:` followed by a numbered list
    // (`1. Relevance ...`) is not a score of 1.
    if after[..num.start()].contains('\n') && !lone_value_rest_re().is_match(rest) {
        return Statement::Other;
    }
    if ambiguous_re().is_match(rest) {
        let line_end = after[whole.end()..]
            .find('\n')
            .map_or(after.len(), |i| whole.end() + i);
        let statement = after[..line_end].trim().to_string();
        return Statement::Numeric(Err(ParseFailure::Ambiguous { statement }));
    }
    if caps.name("sign").is_some() && value != 0.0 {
        return Statement::Numeric(Err(ParseFailure::Negative { value: -value }));
    }
    if let Some(den) = caps.name("den") {
        let denominator: f64 = den
            .as_str()
            .parse()
            .expect("digits with an optional fraction parse");
        if denominator != MAX_SCORE {
            return Statement::Numeric(Err(ParseFailure::WrongScale { value, denominator }));
        }
    }
    if !(MIN_SCORE..=MAX_SCORE).contains(&value) {
        return Statement::Numeric(Err(ParseFailure::OutOfRange { value }));
    }
    Statement::Numeric(Ok(value))
}

/// The score of one judge verdict, by the rules in the [module docs](self): the last
/// `Score: X` statement with a number decides; X must lie in [0, 5].
///
/// ```
/// use tsr_judge::{parse_score, ParseFailure};
/// assert_eq!(parse_score("Relevant and complete.\n**Score:** 4"), Ok(4.0));
/// assert_eq!(parse_score("Score: 3\nOn reflection... Score: 3.5/5."), Ok(3.5));
/// assert_eq!(parse_score("I would give it 4 points."), Err(ParseFailure::NoScore));
/// assert!(matches!(parse_score("Score: 3-4"), Err(ParseFailure::Ambiguous { .. })));
/// ```
pub fn parse_score(text: &str) -> Result<f64, ParseFailure> {
    let mut last_numeric = None;
    let mut saw_echo = false;
    let mut saw_statement = false;
    for m in statement_re().find_iter(text) {
        saw_statement = true;
        match read_statement(&text[m.end()..]) {
            Statement::Numeric(r) => last_numeric = Some(r),
            Statement::Echo => saw_echo = true,
            Statement::Other => {}
        }
    }
    match last_numeric {
        Some(r) => r,
        None if saw_echo => Err(ParseFailure::TemplateEcho),
        None if saw_statement => Err(ParseFailure::NoNumber),
        None => Err(ParseFailure::NoScore),
    }
}

/// The mean of the parsed scores, ignoring failures; `None` when no sample parsed.
///
/// Plain floating-point mean: scores 3 and 4 average to 3.5 (a floored or integer mean would
/// manufacture ties between responses).
pub fn mean_score<'a>(scores: impl IntoIterator<Item = &'a Option<f64>>) -> Option<f64> {
    let (sum, n) = scores
        .into_iter()
        .flatten()
        .fold((0.0_f64, 0_usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_forms() {
        assert_eq!(parse_score("Score: 4"), Ok(4.0));
        assert_eq!(parse_score("score:0"), Ok(0.0));
        assert_eq!(parse_score("Score: 5."), Ok(5.0));
        assert_eq!(parse_score("Score: 2.25"), Ok(2.25));
    }

    #[test]
    fn last_numeric_statement_wins_over_earlier_and_echo() {
        assert_eq!(parse_score("Score: 2\nScore: 4"), Ok(4.0));
        assert_eq!(
            parse_score("Score: 4\nFormat: \"Score: <total points>\""),
            Ok(4.0)
        );
        assert_eq!(
            parse_score("Score: 4\nScore: 7"),
            Err(ParseFailure::OutOfRange { value: 7.0 })
        );
    }

    #[test]
    fn minus_zero_is_zero() {
        assert_eq!(parse_score("Score: -0"), Ok(0.0));
    }

    #[test]
    fn mean_is_not_floored() {
        assert_eq!(mean_score(&[Some(3.0), Some(4.0)]), Some(3.5));
        assert_eq!(mean_score(&[Some(3.0), None, Some(4.0)]), Some(3.5));
        assert_eq!(mean_score(&[None, None]), None);
        assert_eq!(mean_score(&[]), None);
    }

    #[test]
    fn failure_serializes_with_kind() {
        let j = serde_json::to_value(ParseFailure::OutOfRange { value: 6.0 }).unwrap();
        assert_eq!(j, serde_json::json!({"kind": "out_of_range", "value": 6.0}));
        let back: ParseFailure = serde_json::from_value(j).unwrap();
        assert_eq!(back, ParseFailure::OutOfRange { value: 6.0 });
    }
}
