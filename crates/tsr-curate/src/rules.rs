//! The three curation rules.

use crate::decision::{Decision, DropReason, Pick, Pool, PoolScores, Rule};
use std::collections::BTreeMap;

fn usable(s: Option<f64>) -> Option<f64> {
    s.filter(|v| v.is_finite())
}

/// Index and score of the highest-scored response (first index among equals); `None` when the
/// pool has no scored response.
pub fn argmax(scores: &[Option<f64>]) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for (i, s) in scores.iter().enumerate() {
        if let Some(v) = usable(*s) {
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
    }
    best
}

/// Index and score of the lowest-scored response (first index among equals); `None` when the
/// pool has no scored response.
pub fn argmin(scores: &[Option<f64>]) -> Option<(usize, f64)> {
    let mut worst: Option<(usize, f64)> = None;
    for (i, s) in scores.iter().enumerate() {
        if let Some(v) = usable(*s) {
            if worst.is_none_or(|(_, w)| v < w) {
                worst = Some((i, v));
            }
        }
    }
    worst
}

fn pick(pool: Pool, (index, score): (usize, f64)) -> Pick {
    Pick { pool, index, score }
}

/// SR: chosen = argmax `P_i`, rejected = argmin `P_i`; dropped when their scores are equal.
pub fn self_rewarding(current: &[Option<f64>]) -> Decision {
    let scores = PoolScores {
        current: current.to_vec(),
        initial: None,
        future: None,
    };
    let scored = current.iter().filter(|s| usable(**s).is_some()).count();
    let (chosen, rejected) = match (argmax(current), argmin(current)) {
        (Some(c), Some(r)) => (Some(pick(Pool::Current, c)), Some(pick(Pool::Current, r))),
        _ => (None, None),
    };
    let dropped = match (chosen, rejected) {
        (None, _) | (_, None) => Some(DropReason::NoScoredCurrent),
        _ if scored < 2 => Some(DropReason::SingleScored),
        (Some(c), Some(r)) if c.score > r.score => None,
        _ => Some(DropReason::Tie),
    };
    Decision {
        rule: Rule::SelfRewarding,
        chosen,
        rejected,
        dropped,
        replaced_from_future: false,
        scores,
    }
}

/// TSR Phase 1 (Anchored Rejection): chosen = argmax `P_i`; rejected = argmin `P_0` if
/// `min s(P_0) < min s(P_i)`, else argmin `P_i`; kept only if `s(chosen) > s(rejected)`.
pub fn anchored_rejection(current: &[Option<f64>], initial: &[Option<f64>]) -> Decision {
    let scores = PoolScores {
        current: current.to_vec(),
        initial: Some(initial.to_vec()),
        future: None,
    };
    let chosen = argmax(current).map(|c| pick(Pool::Current, c));
    let rejected = chosen.and_then(|_| {
        let cur = argmin(current).map(|r| pick(Pool::Current, r));
        let init = argmin(initial).map(|r| pick(Pool::Initial, r));
        match (cur, init) {
            (Some(c), Some(i)) if i.score < c.score => Some(i),
            (c, _) => c,
        }
    });
    let dropped = match (chosen, rejected) {
        (Some(c), Some(r)) if c.score > r.score => None,
        (Some(_), Some(_)) => Some(DropReason::NoMargin),
        _ => Some(DropReason::NoScoredCurrent),
    };
    Decision {
        rule: Rule::AnchoredRejection,
        chosen,
        rejected,
        dropped,
        replaced_from_future: false,
        scores,
    }
}

/// TSR Phase 2 (Future-Guided Chosen), applied to a Phase-1 decision (anchored, or SR in the
/// future-only ablation), kept or not: chosen becomes argmax `P_f` only when
/// `max s(P_f) > s(Phase-1 chosen)`; rejected stays; kept only if `s(chosen) > s(rejected)`.
pub fn future_guided(phase1: &Decision, future: &[Option<f64>]) -> Decision {
    let mut scores = phase1.scores.clone();
    scores.future = Some(future.to_vec());
    let (Some(old), Some(rejected)) = (phase1.chosen, phase1.rejected) else {
        return Decision {
            rule: Rule::FutureGuided,
            chosen: phase1.chosen,
            rejected: phase1.rejected,
            dropped: Some(DropReason::NoPhase1Candidate),
            replaced_from_future: false,
            scores,
        };
    };
    let (chosen, replaced) = match argmax(future) {
        Some(f) if f.1 > old.score => (pick(Pool::Future, f), true),
        _ => (old, false),
    };
    let dropped = if chosen.score > rejected.score {
        None
    } else {
        Some(DropReason::NoMargin)
    };
    Decision {
        rule: Rule::FutureGuided,
        chosen: Some(chosen),
        rejected: Some(rejected),
        dropped,
        replaced_from_future: replaced,
        scores,
    }
}

/// Why a pair of response texts must not be trained on, if it must not: an empty
/// (whitespace-only) chosen response ([`DropReason::EmptyChosen`]), or a chosen response equal to
/// the rejected one once leading and trailing whitespace is ignored
/// ([`DropReason::IdenticalTexts`]). The score rules cannot see this (two samples can have the
/// same text and different judge scores), so curation checks the texts of every kept pair.
pub fn degenerate_pair(chosen: &str, rejected: &str) -> Option<DropReason> {
    let chosen = chosen.trim();
    if chosen.is_empty() {
        Some(DropReason::EmptyChosen)
    } else if chosen == rejected.trim() {
        Some(DropReason::IdenticalTexts)
    } else {
        None
    }
}

/// How many prompts were dropped for each reason (ordered for stable output).
pub type DropCounts = BTreeMap<DropReason, usize>;
