use proptest::prelude::*;
use tsr_curate::*;

/// Scores on the judge's half-point grid (many ties) with some unscored responses.
fn pool() -> impl Strategy<Value = Vec<Option<f64>>> {
    prop::collection::vec(
        prop_oneof![1 => Just(None), 4 => (0u8..=10).prop_map(|h| Some(f64::from(h) / 2.0))],
        0..8,
    )
}

fn scored(p: &[Option<f64>]) -> Vec<f64> {
    p.iter().flatten().copied().collect()
}

fn max(p: &[Option<f64>]) -> Option<f64> {
    scored(p).into_iter().reduce(f64::max)
}

fn min(p: &[Option<f64>]) -> Option<f64> {
    scored(p).into_iter().reduce(f64::min)
}

fn score_of(d: &Decision, p: Pick) -> Option<f64> {
    d.scores
        .get(p.pool)
        .and_then(|s| s.get(p.index).copied().flatten())
}

proptest! {
    #[test]
    fn sr_invariants(cur in pool()) {
        let d = self_rewarding(&cur);
        let n = scored(&cur).len();
        match d.pair() {
            Some((c, r)) => {
                prop_assert!(c.score > r.score);
                prop_assert_eq!(c.pool, Pool::Current);
                prop_assert_eq!(r.pool, Pool::Current);
                prop_assert_eq!(Some(c.score), max(&cur));
                prop_assert_eq!(Some(r.score), min(&cur));
                prop_assert_eq!(score_of(&d, c), Some(c.score));
                prop_assert_eq!(score_of(&d, r), Some(r.score));
                // First index among equals.
                prop_assert!(cur[..c.index].iter().all(|s| *s != Some(c.score)));
                prop_assert!(cur[..r.index].iter().all(|s| *s != Some(r.score)));
            }
            None => {
                let reason = d.dropped.unwrap();
                match n {
                    0 => prop_assert_eq!(reason, DropReason::NoScoredCurrent),
                    1 => prop_assert_eq!(reason, DropReason::SingleScored),
                    _ => {
                        prop_assert_eq!(reason, DropReason::Tie);
                        prop_assert_eq!(max(&cur), min(&cur));
                    }
                }
            }
        }
    }

    #[test]
    fn anchored_invariants(cur in pool(), init in pool()) {
        let d = anchored_rejection(&cur, &init);
        prop_assert_eq!(d.is_kept(), d.pair().is_some());
        if let Some((c, r)) = d.pair() {
            prop_assert!(c.score > r.score);
            prop_assert_eq!(c.pool, Pool::Current);
            prop_assert_eq!(Some(c.score), max(&cur));
            prop_assert!(r.pool == Pool::Current || r.pool == Pool::Initial);
            // Rejected is the lowest scored response of both pools.
            let both: Vec<Option<f64>> = cur.iter().chain(init.iter()).copied().collect();
            prop_assert_eq!(Some(r.score), min(&both));
            // Ties go to P_i.
            if r.pool == Pool::Initial {
                prop_assert!(min(&cur).unwrap() > r.score);
            }
            prop_assert_eq!(score_of(&d, r), Some(r.score));
            prop_assert_eq!(score_of(&d, c), Some(c.score));
        } else if max(&cur).is_none() {
            prop_assert_eq!(d.dropped, Some(DropReason::NoScoredCurrent));
        } else {
            prop_assert_eq!(d.dropped, Some(DropReason::NoMargin));
            let both: Vec<Option<f64>> = cur.iter().chain(init.iter()).copied().collect();
            prop_assert_eq!(max(&cur), min(&both));
        }
        // Never worse than SR: every prompt SR keeps, anchoring keeps, with a margin at least as large.
        let sr = self_rewarding(&cur);
        if let Some(m) = sr.margin() {
            prop_assert!(d.margin().unwrap() >= m);
        }
    }

    #[test]
    fn future_invariants(cur in pool(), init in pool(), fut in pool(), anchored in any::<bool>()) {
        let p1 = if anchored { anchored_rejection(&cur, &init) } else { self_rewarding(&cur) };
        let d = future_guided(&p1, &fut);
        prop_assert_eq!(d.rejected, p1.rejected);
        if let Some((c, r)) = d.pair() {
            prop_assert!(c.score > r.score);
            prop_assert!(c.pool == Pool::Current || c.pool == Pool::Future);
            prop_assert!(r.pool == Pool::Current || r.pool == Pool::Initial);
            prop_assert_eq!(score_of(&d, c), Some(c.score));
            prop_assert_eq!(score_of(&d, r), Some(r.score));
        }
        let best_cur = max(&cur);
        match (d.replaced_from_future, p1.chosen) {
            (true, Some(old)) => {
                let c = d.chosen.unwrap();
                prop_assert_eq!(c.pool, Pool::Future);
                prop_assert_eq!(Some(c.score), max(&fut));
                prop_assert!(c.score > old.score);
                prop_assert_eq!(Some(old.score), best_cur);
            }
            (true, None) => prop_assert!(false, "replaced without a phase-1 candidate"),
            (false, Some(old)) => {
                prop_assert_eq!(d.chosen, Some(old));
                prop_assert!(max(&fut).is_none_or(|f| f <= old.score));
            }
            (false, None) => prop_assert_eq!(d.dropped, Some(DropReason::NoPhase1Candidate)),
        }
        // Phase 2 never loses a Phase-1 pair.
        if p1.is_kept() {
            prop_assert!(d.is_kept());
        }
    }
}
