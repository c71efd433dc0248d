//! The built-in judge-accuracy pair set: (prompt, better answer, worse answer) triples whose
//! order is known by construction, to measure whether a judge ranks answers the right way.
//!
//! Built deterministically (a seed picks the items) from the offline evaluation data
//! ([`crate::evalsets`]), [`PairSetOptions::per_kind`] pairs of each [`PairKind`]:
//! * `relevance`: an AlpacaEval instruction with its own reference output (better) and the
//!   output of a different instruction (worse);
//! * `truncation`: an AlpacaEval output of at least [`PairSetOptions::truncation_min_chars`]
//!   characters (better) and its first sixth, cut back to a word boundary (worse);
//! * `gsm8k-wrong-answer`: a GSM8K problem's reference solution (better) and the same solution
//!   with the number after its final `####` changed to a wrong one (worse). The calculator
//!   annotations of GSM8K solutions (`<<6*2=12>>`) are removed from both.
//!
//! These are evaluation pairs: the instructions and problems must never become training data
//! (see [`crate::evalsets`]).

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::JudgeError;
use crate::evalsets::{AlpacaItem, GsmProblem};
use crate::rng::SplitMix64;
use crate::verifier::reference_number;

/// What a pair tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairKind {
    /// The instruction's own answer vs another instruction's answer.
    Relevance,
    /// A full answer vs its first sixth.
    Truncation,
    /// A worked solution vs the same solution with a wrong final answer.
    Gsm8kWrongAnswer,
}

impl PairKind {
    /// Every kind, in report order.
    pub const ALL: [PairKind; 3] = [
        PairKind::Relevance,
        PairKind::Truncation,
        PairKind::Gsm8kWrongAnswer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PairKind::Relevance => "relevance",
            PairKind::Truncation => "truncation",
            PairKind::Gsm8kWrongAnswer => "gsm8k-wrong-answer",
        }
    }
}

impl fmt::Display for PairKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PairKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PairKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown pair kind `{s}` (expected relevance, truncation or gsm8k-wrong-answer)")
            })
    }
}

/// One judge-accuracy pair: `better` should score higher than `worse` as an answer to
/// `prompt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgePair {
    /// Unique within a set; names the judge items (`<id>/better`, `<id>/worse`).
    pub id: String,
    pub kind: PairKind,
    pub prompt: String,
    pub better: String,
    pub worse: String,
}

/// How [`build_pair_set`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairSetOptions {
    /// Pairs per kind (fewer when the data has fewer eligible items). Default 50.
    pub per_kind: usize,
    /// Chooses the items. Default 0.
    pub seed: u64,
    /// Shortest output (in characters) a truncation pair is made from. Default 240.
    pub truncation_min_chars: usize,
}

impl Default for PairSetOptions {
    fn default() -> Self {
        Self {
            per_kind: 50,
            seed: 0,
            truncation_min_chars: 240,
        }
    }
}

/// The pair set: every kind in [`PairKind::ALL`] order, each from its own seeded stream.
pub fn build_pair_set(
    alpaca: &[AlpacaItem],
    gsm8k: &[GsmProblem],
    options: &PairSetOptions,
) -> Vec<JudgePair> {
    let mut pairs = relevance_pairs(alpaca, options.per_kind, options.seed);
    pairs.extend(truncation_pairs(
        alpaca,
        options.per_kind,
        options.seed,
        options.truncation_min_chars,
    ));
    pairs.extend(gsm8k_wrong_answer_pairs(
        gsm8k,
        options.per_kind,
        options.seed,
    ));
    pairs
}

/// `n` indices of `0..len` in a seeded random order, those failing `eligible` skipped.
fn pick(
    len: usize,
    n: usize,
    rng: &mut SplitMix64,
    eligible: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    rng.shuffle(&mut order);
    order.into_iter().filter(|&i| eligible(i)).take(n).collect()
}

/// Relevance pairs: instruction `i`'s output vs the output of a randomly drawn other instruction
/// (with a different output text). Ids `relevance-<i>`, `i` the 0-based AlpacaEval index.
pub fn relevance_pairs(alpaca: &[AlpacaItem], n: usize, seed: u64) -> Vec<JudgePair> {
    if alpaca.len() < 2 {
        return Vec::new();
    }
    let mut rng = SplitMix64::for_stream(seed, "relevance");
    let chosen = pick(alpaca.len(), n, &mut rng, |i| {
        !alpaca[i].output.trim().is_empty()
    });
    chosen
        .into_iter()
        .filter_map(|i| {
            // A few draws; outputs are nearly all distinct, so the first almost always serves.
            (0..16).find_map(|_| {
                let j = (i + 1 + rng.below(alpaca.len() - 1)) % alpaca.len();
                let other = alpaca[j].output.trim();
                (!other.is_empty() && other != alpaca[i].output.trim()).then(|| JudgePair {
                    id: format!("relevance-{i:03}"),
                    kind: PairKind::Relevance,
                    prompt: alpaca[i].instruction.clone(),
                    better: alpaca[i].output.clone(),
                    worse: alpaca[j].output.clone(),
                })
            })
        })
        .collect()
}

/// The first sixth of `text` (by characters), cut back to the last whitespace inside it when
/// there is one, trailing whitespace removed.
pub fn first_sixth(text: &str) -> &str {
    let chars = text.chars().count();
    let end = text
        .char_indices()
        .nth(chars / 6)
        .map_or(text.len(), |(i, _)| i);
    let head = &text[..end];
    let cut = match head.rfind(char::is_whitespace) {
        Some(i) if !head[..i].trim().is_empty() => &head[..i],
        _ => head,
    };
    cut.trim_end()
}

/// Truncation pairs: outputs of at least `min_chars` characters vs their [`first_sixth`]. Ids
/// `truncation-<i>`.
pub fn truncation_pairs(
    alpaca: &[AlpacaItem],
    n: usize,
    seed: u64,
    min_chars: usize,
) -> Vec<JudgePair> {
    let mut rng = SplitMix64::for_stream(seed, "truncation");
    let eligible = |i: usize| {
        let out = alpaca[i].output.trim();
        out.chars().count() >= min_chars.max(6) && !first_sixth(out).is_empty()
    };
    pick(alpaca.len(), n, &mut rng, eligible)
        .into_iter()
        .map(|i| JudgePair {
            id: format!("truncation-{i:03}"),
            kind: PairKind::Truncation,
            prompt: alpaca[i].instruction.clone(),
            better: alpaca[i].output.trim().to_string(),
            worse: first_sixth(alpaca[i].output.trim()).to_string(),
        })
        .collect()
}

/// A GSM8K solution without its calculator annotations: `<<6*2=12>>12` becomes `12`.
pub fn strip_calculator(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        match rest[start..].find(">>") {
            Some(len) => {
                out.push_str(&rest[..start]);
                rest = &rest[start + len + 2..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// `answer` with everything after its last `####` replaced by ` <wrong>`; `None` without `####`.
pub fn with_final_answer(answer: &str, wrong: &str) -> Option<String> {
    let i = answer.rfind("####")?;
    Some(format!("{}#### {wrong}", &answer[..i]))
}

/// A wrong final answer near `right`: `right ± d`, `d` drawn from `1..=max(3, |right|/4)`
/// (rounded down), never negative when `right` is not, formatted without a fraction when
/// `right` is whole.
fn wrong_number(right: f64, rng: &mut SplitMix64) -> String {
    let span = ((right.abs() / 4.0).floor() as usize).max(3);
    let d = (1 + rng.below(span)) as f64;
    let up = rng.below(2) == 0 || (right >= 0.0 && right - d < 0.0);
    let wrong = if up { right + d } else { right - d };
    if wrong.fract() == 0.0 {
        format!("{}", wrong as i64)
    } else {
        format!("{wrong}")
    }
}

/// Wrong-answer pairs: a problem's solution vs the same solution with another final number
/// (see the [module docs](self)). Ids `gsm8k-wrong-answer-<problem id>`.
pub fn gsm8k_wrong_answer_pairs(gsm8k: &[GsmProblem], n: usize, seed: u64) -> Vec<JudgePair> {
    let mut rng = SplitMix64::for_stream(seed, "gsm8k-wrong-answer");
    let eligible =
        |i: usize| gsm8k[i].answer.contains("####") && reference_number(&gsm8k[i].answer).is_some();
    pick(gsm8k.len(), n, &mut rng, eligible)
        .into_iter()
        .filter_map(|i| {
            let p = &gsm8k[i];
            let right = reference_number(&p.answer)?;
            let better = strip_calculator(&p.answer);
            let worse = with_final_answer(&better, &wrong_number(right, &mut rng))?;
            Some(JudgePair {
                id: format!("gsm8k-wrong-answer-{}", p.id),
                kind: PairKind::Gsm8kWrongAnswer,
                prompt: p.question.clone(),
                better,
                worse,
            })
        })
        .collect()
}

/// Writes pairs as JSON lines.
pub fn write_pairs(mut w: impl Write, pairs: &[JudgePair]) -> std::io::Result<()> {
    for p in pairs {
        serde_json::to_writer(&mut w, p)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads pairs written by [`write_pairs`] (or by hand): `{id, kind, prompt, better, worse}`
/// per line, ids unique.
pub fn read_pairs(path: &Path) -> Result<Vec<JudgePair>, JudgeError> {
    let records = crate::jsonl::read_jsonl_file(path)?;
    let mut ids = HashSet::new();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let err = |message: String| JudgeError::Jsonl {
            path: path.to_path_buf(),
            line: r.line,
            message,
        };
        let value = serde_json::to_value(&r.fields).expect("objects serialize");
        let pair: JudgePair = serde_json::from_value(value)
            .map_err(|e| err(format!("expected {{id, kind, prompt, better, worse}}: {e}")))?;
        if !ids.insert(pair.id.clone()) {
            return Err(err(format!("duplicate pair id {}", pair.id)));
        }
        out.push(pair);
    }
    Ok(out)
}
