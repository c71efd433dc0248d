use tsr_curate::*;

fn s(v: &[f64]) -> Vec<Option<f64>> {
    v.iter().map(|x| Some(*x)).collect()
}

#[test]
fn sr_picks_best_and_worst() {
    let d = self_rewarding(&s(&[2.0, 4.5, 1.0, 3.0]));
    assert!(d.is_kept());
    let (c, r) = d.pair().unwrap();
    assert_eq!((c.pool, c.index, c.score), (Pool::Current, 1, 4.5));
    assert_eq!((r.pool, r.index, r.score), (Pool::Current, 2, 1.0));
    assert_eq!(d.margin(), Some(3.5));
}

#[test]
fn sr_ties_are_dropped() {
    let d = self_rewarding(&s(&[3.0, 3.0, 3.0]));
    assert_eq!(d.dropped, Some(DropReason::Tie));
    assert!(d.pair().is_none());
    // The candidate is still recorded (first index on both sides).
    assert_eq!(d.chosen.unwrap().index, 0);
    assert_eq!(d.rejected.unwrap().index, 0);
}

#[test]
fn sr_equal_scores_take_first_index() {
    let d = self_rewarding(&s(&[1.0, 5.0, 1.0, 5.0]));
    let (c, r) = d.pair().unwrap();
    assert_eq!(c.index, 1);
    assert_eq!(r.index, 0);
}

#[test]
fn sr_unscored_responses_are_never_picked() {
    let d = self_rewarding(&[None, Some(2.0), None, Some(4.0), None]);
    let (c, r) = d.pair().unwrap();
    assert_eq!((c.index, r.index), (3, 1));
    // An unscored response is not the worst one, even though it "failed".
    let d = self_rewarding(&[Some(3.0), None, Some(1.5)]);
    assert_eq!(d.rejected.unwrap().index, 2);
}

#[test]
fn sr_all_unscored_or_single_scored() {
    assert_eq!(
        self_rewarding(&[None, None]).dropped,
        Some(DropReason::NoScoredCurrent)
    );
    assert_eq!(
        self_rewarding(&[]).dropped,
        Some(DropReason::NoScoredCurrent)
    );
    assert_eq!(
        self_rewarding(&[None, Some(2.0)]).dropped,
        Some(DropReason::SingleScored)
    );
}

#[test]
fn sr_non_finite_scores_count_as_unscored() {
    let d = self_rewarding(&[Some(f64::NAN), Some(1.0), Some(f64::INFINITY), Some(2.0)]);
    let (c, r) = d.pair().unwrap();
    assert_eq!((c.index, r.index), (3, 1));
}

#[test]
fn anchored_takes_rejected_from_p0_when_strictly_lower() {
    let d = anchored_rejection(&s(&[3.0, 4.0, 2.0]), &s(&[2.5, 1.0, 1.0]));
    let (c, r) = d.pair().unwrap();
    assert_eq!((c.pool, c.index, c.score), (Pool::Current, 1, 4.0));
    assert_eq!((r.pool, r.index, r.score), (Pool::Initial, 1, 1.0));
}

#[test]
fn anchored_ties_between_pools_go_to_current() {
    let d = anchored_rejection(&s(&[3.0, 4.0, 2.0]), &s(&[2.0, 5.0]));
    let r = d.pair().unwrap().1;
    assert_eq!((r.pool, r.index), (Pool::Current, 2));
}

#[test]
fn anchored_keeps_current_min_when_p0_is_higher() {
    let d = anchored_rejection(&s(&[3.0, 1.0]), &s(&[2.0, 4.0]));
    let r = d.pair().unwrap().1;
    assert_eq!((r.pool, r.index, r.score), (Pool::Current, 1, 1.0));
}

#[test]
fn anchored_rescues_a_tied_current_pool() {
    // SR would drop this prompt (all equal); the anchor gives it a pair.
    let cur = s(&[3.0, 3.0]);
    assert_eq!(self_rewarding(&cur).dropped, Some(DropReason::Tie));
    let d = anchored_rejection(&cur, &s(&[4.0, 0.0]));
    let (c, r) = d.pair().unwrap();
    assert_eq!((c.pool, c.index), (Pool::Current, 0));
    assert_eq!((r.pool, r.index), (Pool::Initial, 1));
}

#[test]
fn anchored_single_scored_current_can_pair_with_p0() {
    let d = anchored_rejection(&[None, Some(2.0)], &s(&[1.0]));
    let (c, r) = d.pair().unwrap();
    assert_eq!(
        (c.pool, c.index, r.pool, r.index),
        (Pool::Current, 1, Pool::Initial, 0)
    );
}

#[test]
fn anchored_without_margin_is_dropped() {
    let d = anchored_rejection(&s(&[2.0, 2.0]), &s(&[3.0, 2.0]));
    assert_eq!(d.dropped, Some(DropReason::NoMargin));
    // The candidate is recorded for Phase 2.
    assert_eq!(d.rejected.unwrap().pool, Pool::Current);
}

#[test]
fn anchored_needs_a_scored_current_response() {
    let d = anchored_rejection(&[None, None], &s(&[1.0, 5.0]));
    assert_eq!(d.dropped, Some(DropReason::NoScoredCurrent));
    assert!(d.chosen.is_none() && d.rejected.is_none());
}

#[test]
fn anchored_with_unscored_p0_behaves_like_sr() {
    let cur = s(&[1.0, 4.0, 2.0]);
    let a = anchored_rejection(&cur, &[None, None]);
    let b = self_rewarding(&cur);
    assert_eq!(a.pair(), b.pair());
}

#[test]
fn future_replaces_chosen_only_when_strictly_better() {
    let p1 = anchored_rejection(&s(&[3.0, 4.0]), &s(&[1.0]));
    let d = future_guided(&p1, &s(&[4.0, 4.5, 4.5]));
    let (c, r) = d.pair().unwrap();
    assert!(d.replaced_from_future);
    assert_eq!((c.pool, c.index, c.score), (Pool::Future, 1, 4.5));
    assert_eq!(r, p1.rejected.unwrap());

    let d = future_guided(&p1, &s(&[4.0, 3.0]));
    assert!(!d.replaced_from_future);
    assert_eq!(d.pair().unwrap().0, p1.chosen.unwrap());
}

#[test]
fn future_can_rescue_a_phase1_drop() {
    let p1 = anchored_rejection(&s(&[2.0, 2.0]), &s(&[3.0]));
    assert_eq!(p1.dropped, Some(DropReason::NoMargin));
    let d = future_guided(&p1, &s(&[1.0, 2.5]));
    assert!(d.is_kept());
    assert_eq!(d.chosen.unwrap().pool, Pool::Future);
}

#[test]
fn future_without_improvement_keeps_phase1_drop() {
    let p1 = self_rewarding(&s(&[2.0, 2.0]));
    let d = future_guided(&p1, &s(&[2.0, 1.0]));
    assert_eq!(d.dropped, Some(DropReason::NoMargin));
    assert!(!d.replaced_from_future);
}

#[test]
fn future_with_unscored_pool_changes_nothing() {
    let p1 = self_rewarding(&s(&[1.0, 3.0]));
    let d = future_guided(&p1, &[None, None, None]);
    assert_eq!(d.pair(), p1.pair());
    assert_eq!(d.rule, Rule::FutureGuided);
    assert_eq!(d.scores.future.as_ref().unwrap().len(), 3);
}

#[test]
fn future_without_phase1_candidate_is_dropped() {
    let p1 = anchored_rejection(&[None], &s(&[1.0]));
    let d = future_guided(&p1, &s(&[5.0]));
    assert_eq!(d.dropped, Some(DropReason::NoPhase1Candidate));
}

#[test]
fn decision_round_trips_through_json() {
    let p1 = anchored_rejection(&[Some(1.0), None], &s(&[0.5]));
    let d = future_guided(&p1, &s(&[2.0]));
    let j = serde_json::to_string(&d).unwrap();
    assert!(j.contains("\"pool\":\"future\""), "{j}");
    let back: Decision = serde_json::from_str(&j).unwrap();
    assert_eq!(back, d);
}

#[test]
fn degenerate_texts_are_named() {
    assert_eq!(degenerate_pair("", "a"), Some(DropReason::EmptyChosen));
    assert_eq!(degenerate_pair(" \n\t", "a"), Some(DropReason::EmptyChosen));
    // Empty on both sides is an empty chosen first.
    assert_eq!(degenerate_pair("  ", " "), Some(DropReason::EmptyChosen));
    assert_eq!(
        degenerate_pair("same answer", "same answer"),
        Some(DropReason::IdenticalTexts)
    );
    assert_eq!(
        degenerate_pair("same answer\n", "  same answer"),
        Some(DropReason::IdenticalTexts)
    );
    assert_eq!(degenerate_pair("an answer", "another answer"), None);
    // An empty rejected response is a real preference (an answer over none).
    assert_eq!(degenerate_pair("an answer", ""), None);
    assert_eq!(DropReason::EmptyChosen.as_str(), "empty_chosen");
    assert_eq!(DropReason::IdenticalTexts.as_str(), "identical_texts");
    assert_eq!(
        serde_json::to_string(&DropReason::IdenticalTexts).unwrap(),
        "\"identical_texts\""
    );
}

#[test]
fn check_texts_drops_a_kept_pair_with_degenerate_texts() {
    let kept = self_rewarding(&s(&[2.0, 4.5, 1.0]));
    let d = kept.clone().check_texts("same", "same");
    assert_eq!(d.dropped, Some(DropReason::IdenticalTexts));
    assert!(d.pair().is_none() && !d.is_kept());
    // The picks stay recorded, so the decision file shows what was dropped.
    assert_eq!((d.chosen, d.rejected), (kept.chosen, kept.rejected));
    let d = kept.clone().check_texts("   ", "worst");
    assert_eq!(d.dropped, Some(DropReason::EmptyChosen));
    assert_eq!(kept.clone().check_texts("good", "bad"), kept);
    // A decision dropped for its scores keeps its reason.
    let tie = self_rewarding(&s(&[3.0, 3.0]));
    assert_eq!(
        tie.clone().check_texts("same", "same").dropped,
        Some(DropReason::Tie)
    );
}
