//! Win rate of a model's answers against a baseline's, judged pairwise in both orders.
//!
//! For each prompt the judge sees the two answers twice: the model's first (`<id>/model-first`)
//! and the baseline's first (`<id>/baseline-first`), which cancels a judge's preference for a
//! position. Each order gives the model 1 for a win, ½ for a tie and 0 for a loss; the prompt's
//! score is the mean of its two orders, so a prompt is a win (score > ½), a loss (< ½) or a tie
//! (= ½, including the case where the judge picked the same position both times). A prompt with
//! an unread verdict in either order is `unscored` and left out.
//!
//! A `direct` judge reports the probabilities of `A`, `B` and `tie`, and a small judge often
//! prefers one position whatever the answers (`first_position_share` near 0 or 1), which would
//! make every prompt a tie. Its probabilities still move with the answers, so with probabilities
//! the prompt is decided by the [`soft_preference`]: the model's share of the `A`/`B` mass in each
//! order, averaged over the two orders. A position bias adds the same amount to one order and
//! takes it from the other, so it cancels; the prompt is a win when the average is above ½, a loss
//! below, a tie at exactly ½ (two identical answers). Its value is kept in the record.
//!
//! The win rate is the mean prompt score over scored prompts (ties count half). Its 95% interval
//! is a percentile bootstrap over prompts (2000 resamples, seeded), which needs no assumption
//! about the half-integer scores. A model compared with itself scores ½ on every prompt where the
//! judge is consistent, so its win rate is ½.

use serde::{Deserialize, Serialize};

use crate::error::JudgeError;
use crate::pairwise::{PairwiseItem, PairwiseJudge, PairwiseVerdict, Preference};
use crate::rng::SplitMix64;

/// How close to ½ a soft preference counts as a tie (floating-point rounding only).
const SOFT_TIE: f64 = 1e-9;

/// Bootstrap resamples of the interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// One prompt with the two answers to compare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matchup {
    pub id: String,
    pub instruction: String,
    /// The answer of the model under evaluation.
    pub model: String,
    /// The answer of the baseline it is compared with.
    pub baseline: String,
}

/// The per-prompt record of a win-rate evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WinRateRecord {
    pub id: String,
    pub instruction: String,
    pub model: String,
    pub baseline: String,
    /// The verdict with the model's answer as `A`.
    pub model_first: PairwiseVerdict,
    /// The verdict with the baseline's answer as `A`.
    pub baseline_first: PairwiseVerdict,
    /// 1 (won both orders), ¾, ½, ¼ or 0; `None` when a verdict was unread. With verdict
    /// probabilities (direct mode) 1, ½ or 0 by the sign of `soft_preference - ½`.
    pub score: Option<f64>,
    /// Direct mode: the model's probability of being preferred, `A` against `B` only, averaged
    /// over both orders (see the [module docs](self)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_preference: Option<f64>,
}

/// The counts and the win rate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WinRateReport {
    /// Prompts compared.
    pub prompts: usize,
    /// Prompts with both verdicts read.
    pub n: usize,
    pub wins: usize,
    pub losses: usize,
    pub ties: usize,
    pub unscored: usize,
    /// Mean prompt score over the `n` scored prompts (ties half); `None` when `n` is 0.
    pub win_rate: Option<f64>,
    /// 95% percentile-bootstrap interval of `win_rate`.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Of the read verdicts that were not ties, the share that chose position `A`: a judge
    /// without position bias sits near ½ (both orders cancel it either way).
    pub first_position_share: Option<f64>,
    /// Seed of the bootstrap.
    pub bootstrap_seed: u64,
}

/// Judges every matchup in both orders and tallies the win rate of `model` over `baseline`.
pub fn win_rate(
    judge: &mut dyn PairwiseJudge,
    matchups: &[Matchup],
    seed: u64,
) -> Result<(WinRateReport, Vec<WinRateRecord>), JudgeError> {
    let items: Vec<PairwiseItem> = matchups
        .iter()
        .flat_map(|m| {
            [
                PairwiseItem {
                    id: format!("{}/model-first", m.id),
                    instruction: m.instruction.clone(),
                    response_a: m.model.clone(),
                    response_b: m.baseline.clone(),
                },
                PairwiseItem {
                    id: format!("{}/baseline-first", m.id),
                    instruction: m.instruction.clone(),
                    response_a: m.baseline.clone(),
                    response_b: m.model.clone(),
                },
            ]
        })
        .collect();
    let verdicts = judge.compare(&items)?;
    if verdicts.len() != items.len() {
        return Err(JudgeError::OutputCount {
            expected: items.len(),
            got: verdicts.len(),
        });
    }
    let mut verdicts = verdicts.into_iter();
    let records: Vec<WinRateRecord> = matchups
        .iter()
        .map(|m| {
            let model_first = verdicts.next().expect("two verdicts per matchup");
            let baseline_first = verdicts.next().expect("two verdicts per matchup");
            let soft = soft_preference(&model_first, &baseline_first);
            let score = match (soft, model_first.preference, baseline_first.preference) {
                // Within rounding of ½ (two identical answers) is a tie.
                (Some(s), Some(_), Some(_)) => Some(if s > 0.5 + SOFT_TIE {
                    1.0
                } else if s < 0.5 - SOFT_TIE {
                    0.0
                } else {
                    0.5
                }),
                (None, Some(p), Some(q)) => Some((p.credit_a() + (1.0 - q.credit_a())) / 2.0),
                _ => None,
            };
            WinRateRecord {
                id: m.id.clone(),
                instruction: m.instruction.clone(),
                model: m.model.clone(),
                baseline: m.baseline.clone(),
                model_first,
                baseline_first,
                score,
                soft_preference: soft,
            }
        })
        .collect();
    Ok((tally(&records, seed), records))
}

/// The model's probability of being preferred, averaged over both orders, from the verdict
/// probabilities of a `direct` judge: `(a₁/(a₁+b₁) + b₂/(a₂+b₂)) / 2`, where order 1 has the
/// model's answer as `A` and order 2 as `B`. `None` without probabilities (or without mass on
/// `A` and `B` in an order).
pub fn soft_preference(
    model_first: &PairwiseVerdict,
    baseline_first: &PairwiseVerdict,
) -> Option<f64> {
    let (p1, p2) = (model_first.probs.as_ref()?, baseline_first.probs.as_ref()?);
    let (n1, n2) = (p1.a + p1.b, p2.a + p2.b);
    if n1 <= 0.0
        || n2 <= 0.0
        || model_first.preference.is_none()
        || baseline_first.preference.is_none()
    {
        return None;
    }
    Some((p1.a / n1 + p2.b / n2) / 2.0)
}

/// The report of a set of records (see the [module docs](self)).
pub fn tally(records: &[WinRateRecord], seed: u64) -> WinRateReport {
    let scores: Vec<f64> = records.iter().filter_map(|r| r.score).collect();
    let decided: Vec<Preference> = records
        .iter()
        .flat_map(|r| [r.model_first.preference, r.baseline_first.preference])
        .flatten()
        .filter(|p| *p != Preference::Tie)
        .collect();
    let n = scores.len();
    let win_rate = (n > 0).then(|| scores.iter().sum::<f64>() / n as f64);
    let (ci_low, ci_high) = match bootstrap_interval(&scores, seed) {
        Some((lo, hi)) => (Some(lo), Some(hi)),
        None => (None, None),
    };
    WinRateReport {
        prompts: records.len(),
        n,
        wins: scores.iter().filter(|s| **s > 0.5).count(),
        losses: scores.iter().filter(|s| **s < 0.5).count(),
        ties: scores.iter().filter(|s| **s == 0.5).count(),
        unscored: records.len() - n,
        win_rate,
        ci_low,
        ci_high,
        first_position_share: (!decided.is_empty()).then(|| {
            decided.iter().filter(|p| **p == Preference::A).count() as f64 / decided.len() as f64
        }),
        bootstrap_seed: seed,
    }
}

/// The 2.5% and 97.5% percentiles of the mean of `scores` over [`BOOTSTRAP_RESAMPLES`]
/// resamples with replacement; `None` for no scores.
pub fn bootstrap_interval(scores: &[f64], seed: u64) -> Option<(f64, f64)> {
    if scores.is_empty() {
        return None;
    }
    let mut rng = SplitMix64::for_stream(seed, "winrate-bootstrap");
    let n = scores.len();
    let mut means: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| (0..n).map(|_| scores[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| {
        means
            [((q * (BOOTSTRAP_RESAMPLES - 1) as f64).round() as usize).min(BOOTSTRAP_RESAMPLES - 1)]
    };
    Some((at(0.025), at(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairwise::{RuleJudge, StyleRule};

    fn matchup(id: usize, model: &str, baseline: &str) -> Matchup {
        Matchup {
            id: format!("p{id}"),
            instruction: format!("question {id}"),
            model: model.into(),
            baseline: baseline.into(),
        }
    }

    /// Always prefers position A: a maximally position-biased judge.
    struct FirstAlways;
    impl PairwiseJudge for FirstAlways {
        fn compare(&mut self, items: &[PairwiseItem]) -> Result<Vec<PairwiseVerdict>, JudgeError> {
            Ok(items
                .iter()
                .map(|i| PairwiseVerdict {
                    id: i.id.clone(),
                    preference: Some(Preference::A),
                    text: None,
                    probs: None,
                    failure: None,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                })
                .collect())
        }
        fn describe(&self) -> String {
            "first".into()
        }
    }

    #[test]
    fn both_orders_cancel_position_bias() {
        let m: Vec<_> = (0..20).map(|i| matchup(i, "good", "bad")).collect();
        let (r, records) = win_rate(&mut FirstAlways, &m, 1).unwrap();
        assert_eq!((r.n, r.ties, r.wins, r.losses), (20, 20, 0, 0));
        assert_eq!(r.win_rate, Some(0.5));
        assert_eq!((r.ci_low, r.ci_high), (Some(0.5), Some(0.5)));
        assert_eq!(r.first_position_share, Some(1.0));
        assert_eq!(records[3].model_first.id, "p3/model-first");
    }

    #[test]
    fn a_judge_that_checks_the_style_finds_it() {
        let mut judge = RuleJudge {
            rule: StyleRule::parse("ends-with:!").unwrap(),
        };
        // 15 prompts where only the model has the style, 3 where both have it, 2 where only
        // the baseline does.
        let m: Vec<_> = (0..20)
            .map(|i| match i {
                0..15 => matchup(i, "yes!", "yes"),
                15..18 => matchup(i, "yes!", "no!"),
                _ => matchup(i, "yes", "no!"),
            })
            .collect();
        let (r, _) = win_rate(&mut judge, &m, 7).unwrap();
        assert_eq!((r.wins, r.ties, r.losses, r.unscored), (15, 3, 2, 0));
        assert!((r.win_rate.unwrap() - 16.5 / 20.0).abs() < 1e-12);
        let (lo, hi) = (r.ci_low.unwrap(), r.ci_high.unwrap());
        assert!(
            lo > 0.5 && lo < 0.825 && hi > 0.825 && hi <= 1.0,
            "{lo} {hi}"
        );
        assert_eq!(r.first_position_share, Some(0.5));
    }

    fn probed(id: &str, a: f64, b: f64) -> PairwiseVerdict {
        PairwiseVerdict {
            id: id.into(),
            preference: Some(if a >= b { Preference::A } else { Preference::B }),
            text: None,
            probs: Some(crate::pairwise::PreferenceProbs {
                a,
                b,
                tie: 0.0,
                mass: a + b,
            }),
            failure: None,
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }

    /// Prefers position A strongly, and the answer "good" a little.
    struct BiasedProbs;
    impl PairwiseJudge for BiasedProbs {
        fn compare(&mut self, items: &[PairwiseItem]) -> Result<Vec<PairwiseVerdict>, JudgeError> {
            Ok(items
                .iter()
                .map(|i| {
                    let a = 0.9 + if i.response_a == "good" { 0.05 } else { 0.0 }
                        - if i.response_b == "good" { 0.05 } else { 0.0 };
                    probed(&i.id, a, 1.0 - a)
                })
                .collect())
        }
        fn describe(&self) -> String {
            "biased".into()
        }
    }

    #[test]
    fn verdict_probabilities_see_through_a_position_bias() {
        let m: Vec<_> = (0..10)
            .map(|i| match i {
                0..6 => matchup(i, "good", "bad"),
                6..8 => matchup(i, "bad", "good"),
                _ => matchup(i, "same", "same"),
            })
            .collect();
        let (r, records) = win_rate(&mut BiasedProbs, &m, 1).unwrap();
        // Every argmax verdict is A, yet the probabilities decide 6 wins, 2 losses, 2 ties.
        assert_eq!(r.first_position_share, Some(1.0));
        assert_eq!((r.wins, r.losses, r.ties), (6, 2, 2));
        assert!((r.win_rate.unwrap() - 0.7).abs() < 1e-12);
        assert!((records[0].soft_preference.unwrap() - 0.55).abs() < 1e-12);
        assert_eq!(records[9].soft_preference, Some(0.5));
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let scores: Vec<f64> = (0..50).map(|i| f64::from(i % 3) / 2.0).collect();
        let a = bootstrap_interval(&scores, 3).unwrap();
        assert_eq!(a, bootstrap_interval(&scores, 3).unwrap());
        let mean = scores.iter().sum::<f64>() / 50.0;
        assert!(a.0 < mean && mean < a.1);
        assert_eq!(bootstrap_interval(&[], 3), None);
    }
}
