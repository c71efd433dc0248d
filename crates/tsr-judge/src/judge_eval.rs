//! Judge accuracy on pairs with a known order: pairwise accuracy (Yuan et al. 2024, table 4)
//! with ties and unscored pairs counted apart, per [`PairKind`] and overall, with a Wilson 95%
//! interval.
//!
//! Each answer of a pair is judged on its own (absolute scoring, as in the self-rewarding loop)
//! as a [`JudgeItem`] with the stable id `<pair id>/better` or `<pair id>/worse`, so an LLM
//! judge's per-item seed, and hence its verdict, does not depend on the other pairs.
//!
//! A pair is
//! * `correct` when the better answer scores strictly higher,
//! * `wrong` when it scores strictly lower,
//! * a `tie` when both score the same,
//! * `unscored` when either answer has no score (no judge sample parsed).
//!
//! `accuracy` is correct / pairs: ties and unscored pairs count against the judge, since a
//! judge that cannot separate two answers cannot make a preference pair of them.
//! `decided_accuracy` is correct / (correct + wrong), the accuracy where the judge committed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::JudgeError;
use crate::pairs::{JudgePair, PairKind};
use crate::verdict::{Judge, JudgeItem, JudgeStats, Verdict};

/// z of a two-sided 95% normal interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// How one pair came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairOutcome {
    Correct,
    Wrong,
    Tie,
    Unscored,
}

/// The outcome of a pair from the two scores (see the [module docs](self)).
pub fn pair_outcome(better: Option<f64>, worse: Option<f64>) -> PairOutcome {
    match (better, worse) {
        (Some(b), Some(w)) if b > w => PairOutcome::Correct,
        (Some(b), Some(w)) if b < w => PairOutcome::Wrong,
        (Some(b), Some(w)) if b == w => PairOutcome::Tie,
        _ => PairOutcome::Unscored,
    }
}

/// The Wilson score interval of `successes` out of `n` at normal quantile `z` (use [`Z_95`]);
/// `(0, 1)` when `n` is 0.
pub fn wilson_interval(successes: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n_f = n as f64;
    let p = successes as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let center = (p + z2 / (2.0 * n_f)) / denom;
    let half = z / denom * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Counts over a set of pairs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Tally {
    pub pairs: usize,
    pub correct: usize,
    pub wrong: usize,
    pub ties: usize,
    pub unscored: usize,
    /// correct / pairs; `None` without pairs.
    pub accuracy: Option<f64>,
    /// Wilson 95% interval of `accuracy`.
    pub accuracy_ci95: Option<(f64, f64)>,
    /// correct / (correct + wrong); `None` when the judge decided no pair.
    pub decided_accuracy: Option<f64>,
}

impl Tally {
    /// The counts of some outcomes.
    pub fn of(outcomes: impl IntoIterator<Item = PairOutcome>) -> Self {
        let mut t = Tally::default();
        for o in outcomes {
            t.pairs += 1;
            match o {
                PairOutcome::Correct => t.correct += 1,
                PairOutcome::Wrong => t.wrong += 1,
                PairOutcome::Tie => t.ties += 1,
                PairOutcome::Unscored => t.unscored += 1,
            }
        }
        if t.pairs > 0 {
            t.accuracy = Some(t.correct as f64 / t.pairs as f64);
            t.accuracy_ci95 = Some(wilson_interval(t.correct, t.pairs, Z_95));
        }
        let decided = t.correct + t.wrong;
        if decided > 0 {
            t.decided_accuracy = Some(t.correct as f64 / decided as f64);
        }
        t
    }
}

/// One judged pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairRecord {
    pub id: String,
    pub kind: PairKind,
    pub score_better: Option<f64>,
    pub score_worse: Option<f64>,
    pub outcome: PairOutcome,
    /// The full verdicts (judge prompt, every sample).
    pub better_verdict: Verdict,
    pub worse_verdict: Verdict,
}

/// The result of [`evaluate_judge`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JudgeEvalReport {
    pub overall: Tally,
    /// Per kind, for the kinds present.
    pub by_kind: BTreeMap<PairKind, Tally>,
    /// Counts over both answers of every pair (parsed and unparsed samples, tokens).
    pub judge_stats: JudgeStats,
    /// One record per pair, in pair order (not serialized with the report; write them apart).
    #[serde(skip)]
    pub records: Vec<PairRecord>,
}

impl JudgeEvalReport {
    /// The report of some records (for example, blocks judged one after another).
    pub fn from_records(records: Vec<PairRecord>, judge_stats: JudgeStats) -> Self {
        let overall = Tally::of(records.iter().map(|r| r.outcome));
        let mut by_kind = BTreeMap::new();
        for kind in PairKind::ALL {
            if records.iter().any(|r| r.kind == kind) {
                let t = Tally::of(records.iter().filter(|r| r.kind == kind).map(|r| r.outcome));
                by_kind.insert(kind, t);
            }
        }
        Self {
            overall,
            by_kind,
            judge_stats,
            records,
        }
    }
}

/// The two judge items of a pair: `<id>/better` and `<id>/worse`.
pub fn pair_items(pair: &JudgePair) -> [JudgeItem; 2] {
    [
        JudgeItem::new(format!("{}/better", pair.id), &pair.prompt, &pair.better),
        JudgeItem::new(format!("{}/worse", pair.id), &pair.prompt, &pair.worse),
    ]
}

/// Judges both answers of every pair (in one `judge` call) and returns the records and the
/// judge's counts.
pub fn score_pairs(
    judge: &mut dyn Judge,
    pairs: &[JudgePair],
) -> Result<(Vec<PairRecord>, JudgeStats), JudgeError> {
    let items: Vec<JudgeItem> = pairs.iter().flat_map(pair_items).collect();
    let verdicts = judge.judge(&items)?;
    if verdicts.len() != items.len() {
        return Err(JudgeError::OutputCount {
            expected: items.len(),
            got: verdicts.len(),
        });
    }
    let stats = JudgeStats::of(&verdicts);
    let mut verdicts = verdicts.into_iter();
    let records = pairs
        .iter()
        .map(|p| {
            let better = verdicts.next().expect("two verdicts per pair");
            let worse = verdicts.next().expect("two verdicts per pair");
            PairRecord {
                id: p.id.clone(),
                kind: p.kind,
                score_better: better.score,
                score_worse: worse.score,
                outcome: pair_outcome(better.score, worse.score),
                better_verdict: better,
                worse_verdict: worse,
            }
        })
        .collect();
    Ok((records, stats))
}

/// Judge accuracy on `pairs` (see the [module docs](self)).
pub fn evaluate_judge(
    judge: &mut dyn Judge,
    pairs: &[JudgePair],
) -> Result<JudgeEvalReport, JudgeError> {
    let (records, stats) = score_pairs(judge, pairs)?;
    Ok(JudgeEvalReport::from_records(records, stats))
}
