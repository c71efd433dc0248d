//! Pairwise judge accuracy: outcomes, tallies, the Wilson interval, and a whole evaluation with a
//! fake judge that scores by length.

use tsr_judge::judge_eval::{pair_outcome, wilson_interval, Z_95};
use tsr_judge::{
    build_pair_set, evaluate_judge, Judge, JudgeError, JudgeItem, PairKind, PairOutcome,
    PairSetOptions, Tally, Verdict,
};

use crate::pairs::{alpaca, gsm};

#[test]
fn outcomes() {
    assert_eq!(pair_outcome(Some(4.0), Some(3.0)), PairOutcome::Correct);
    assert_eq!(pair_outcome(Some(2.0), Some(3.5)), PairOutcome::Wrong);
    assert_eq!(pair_outcome(Some(3.0), Some(3.0)), PairOutcome::Tie);
    assert_eq!(pair_outcome(None, Some(3.0)), PairOutcome::Unscored);
    assert_eq!(pair_outcome(Some(3.0), None), PairOutcome::Unscored);
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn wilson_intervals_match_hand_computed_values() {
    // Computed by hand from the formula (center (p + z²/2n)/(1 + z²/n), half-width
    // z/(1 + z²/n) * sqrt(p(1-p)/n + z²/4n²)) with z = 1.959963984540054.
    for (k, n, lo, hi) in [
        (31, 40, 0.624_969_032_576_899_8, 0.876_839_086_764_592_7),
        (19, 40, 0.329_354_701_126_789, 0.625_026_378_933_075_3),
        (5, 12, 0.193_260_313_658_756_68, 0.680_488_687_450_450_3),
        (0, 10, 0.0, 0.277_532_799_862_889_2),
        (10, 10, 0.722_467_200_137_110_7, 1.0),
    ] {
        let (l, h) = wilson_interval(k, n, Z_95);
        assert!(close(l, lo) && close(h, hi), "{k}/{n}: ({l}, {h})");
    }
    assert_eq!(wilson_interval(0, 0, Z_95), (0.0, 1.0));
}

#[test]
fn tallies_count_ties_and_unscored_apart() {
    let outcomes = std::iter::repeat_n(PairOutcome::Correct, 31)
        .chain(std::iter::repeat_n(PairOutcome::Wrong, 5))
        .chain(std::iter::repeat_n(PairOutcome::Tie, 3))
        .chain([PairOutcome::Unscored]);
    let t = Tally::of(outcomes);
    assert_eq!(
        (t.pairs, t.correct, t.wrong, t.ties, t.unscored),
        (40, 31, 5, 3, 1)
    );
    assert!(close(t.accuracy.unwrap(), 0.775));
    assert!(close(t.decided_accuracy.unwrap(), 31.0 / 36.0));
    let (lo, hi) = t.accuracy_ci95.unwrap();
    assert!(close(lo, 0.624_969_032_576_899_8) && close(hi, 0.876_839_086_764_592_7));
    let empty = Tally::of([]);
    assert_eq!((empty.accuracy, empty.decided_accuracy), (None, None));
    let ties = Tally::of([PairOutcome::Tie, PairOutcome::Tie]);
    assert_eq!((ties.accuracy, ties.decided_accuracy), (Some(0.0), None));
}

/// Scores a response by its length in characters; records the item ids it saw.
#[derive(Default)]
struct LengthJudge {
    seen: Vec<String>,
}

impl Judge for LengthJudge {
    fn judge(&mut self, items: &[JudgeItem]) -> Result<Vec<Verdict>, JudgeError> {
        self.seen.extend(items.iter().map(|i| i.id.clone()));
        Ok(items
            .iter()
            .map(|i| Verdict {
                id: i.id.clone(),
                judge_prompt: None,
                samples: Vec::new(),
                // No score for empty responses, to exercise `unscored`.
                score: (!i.response.is_empty()).then_some(i.response.chars().count() as f64),
            })
            .collect())
    }
}

#[test]
fn a_length_judge_wins_truncation_and_guesses_relevance() {
    let pairs = build_pair_set(
        &alpaca(300),
        &gsm(60),
        &PairSetOptions {
            per_kind: 50,
            seed: 2,
            ..PairSetOptions::default()
        },
    );
    let mut judge = LengthJudge::default();
    let report = evaluate_judge(&mut judge, &pairs).unwrap();

    // Both answers of every pair, with stable ids.
    assert_eq!(judge.seen.len(), 2 * pairs.len());
    assert_eq!(judge.seen[0], format!("{}/better", pairs[0].id));
    assert_eq!(judge.seen[1], format!("{}/worse", pairs[0].id));

    let trunc = &report.by_kind[&PairKind::Truncation];
    assert_eq!(
        (trunc.pairs, trunc.correct, trunc.wrong, trunc.ties),
        (50, 50, 0, 0)
    );
    assert_eq!(trunc.accuracy, Some(1.0));

    // Relevance: the answer lengths are unrelated to the instruction, so the length judge is
    // right when the own answer happens to be longer: count that directly from the pairs.
    let rel = &report.by_kind[&PairKind::Relevance];
    let longer = |k: PairKind, f: fn(usize, usize) -> bool| {
        pairs
            .iter()
            .filter(|p| p.kind == k && f(p.better.chars().count(), p.worse.chars().count()))
            .count()
    };
    assert_eq!(rel.correct, longer(PairKind::Relevance, |b, w| b > w));
    assert_eq!(rel.wrong, longer(PairKind::Relevance, |b, w| b < w));
    assert_eq!(rel.ties, longer(PairKind::Relevance, |b, w| b == w));
    assert_eq!(rel.pairs, 50);
    // At chance: the 95% interval holds one half.
    let (lo, hi) = rel.accuracy_ci95.unwrap();
    assert!(lo < 0.5 && 0.5 < hi, "{rel:?}");

    // Wrong answers differ only in the final number: the judge is right, wrong or tied by the
    // digit count alone.
    let gsm = &report.by_kind[&PairKind::Gsm8kWrongAnswer];
    assert_eq!(
        gsm.correct,
        longer(PairKind::Gsm8kWrongAnswer, |b, w| b > w)
    );
    assert_eq!(gsm.ties, longer(PairKind::Gsm8kWrongAnswer, |b, w| b == w));
    assert_eq!(gsm.correct + gsm.wrong + gsm.ties, 50);

    let all = &report.overall;
    assert_eq!(all.pairs, 150);
    assert_eq!(all.correct, trunc.correct + rel.correct + gsm.correct);
    assert_eq!(report.judge_stats.items, 300);
    assert_eq!(report.records.len(), 150);
    assert_eq!(report.records[0].id, pairs[0].id);

    // An empty answer has no score: the pair is unscored, not a tie or a loss.
    let mut one = pairs[..1].to_vec();
    one[0].worse = String::new();
    let r = evaluate_judge(&mut LengthJudge::default(), &one).unwrap();
    assert_eq!((r.overall.unscored, r.overall.accuracy), (1, Some(0.0)));
    assert_eq!(r.records[0].outcome, PairOutcome::Unscored);

    // The report serializes without its records; kinds are keyed by name.
    let v = serde_json::to_value(&report).unwrap();
    assert!(v.get("records").is_none());
    assert_eq!(v["by_kind"]["truncation"]["correct"], 50);
}
