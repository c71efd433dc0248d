//! The record of one curation decision.

use serde::{Deserialize, Serialize};

/// Which pool a response came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// `P_i`: sampled from the current model `M_i`.
    Current,
    /// `P_0`: sampled from the initial model `M_0`.
    Initial,
    /// `P_f`: sampled from the temporary future model `M_f`.
    Future,
}

impl Pool {
    /// Short name used in file names and logs: `current`, `initial`, `future`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Current => "current",
            Pool::Initial => "initial",
            Pool::Future => "future",
        }
    }
}

/// Which rule produced a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// SR: best and worst of `P_i`.
    SelfRewarding,
    /// TSR Phase 1: chosen from `P_i`, rejected anchored on `P_0`.
    AnchoredRejection,
    /// TSR Phase 2: chosen possibly replaced from `P_f`.
    FutureGuided,
}

/// One side of a pair: where the response came from and its score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    pub pool: Pool,
    /// Index of the response inside its pool (sampling order).
    pub index: usize,
    pub score: f64,
}

/// The scores of every pool a decision looked at (`None` = unscored).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolScores {
    pub current: Vec<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Vec<Option<f64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future: Option<Vec<Option<f64>>>,
}

impl PoolScores {
    /// The scores of one pool, if it took part.
    pub fn get(&self, pool: Pool) -> Option<&[Option<f64>]> {
        match pool {
            Pool::Current => Some(&self.current),
            Pool::Initial => self.initial.as_deref(),
            Pool::Future => self.future.as_deref(),
        }
    }
}

/// Why a prompt yields no pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// `P_i` has no scored response (every verdict failed to parse, or the pool is empty).
    NoScoredCurrent,
    /// SR: only one response of `P_i` is scored, so chosen and rejected would be the same one.
    SingleScored,
    /// SR: best and worst scores of `P_i` are equal.
    Tie,
    /// Anchored / future-guided: `s(chosen) > s(rejected)` does not hold.
    NoMargin,
    /// Future-guided: the Phase-1 decision had no candidate pair to start from.
    NoPhase1Candidate,
    /// The chosen response is empty or whitespace only (see [`crate::degenerate_pair`]).
    EmptyChosen,
    /// The chosen and the rejected response are the same text (see
    /// [`crate::degenerate_pair`]): DPO would learn nothing from the pair but noise.
    IdenticalTexts,
}

impl DropReason {
    /// Snake-case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoScoredCurrent => "no_scored_current",
            DropReason::SingleScored => "single_scored",
            DropReason::Tie => "tie",
            DropReason::NoMargin => "no_margin",
            DropReason::NoPhase1Candidate => "no_phase1_candidate",
            DropReason::EmptyChosen => "empty_chosen",
            DropReason::IdenticalTexts => "identical_texts",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of curating one prompt.
///
/// `chosen` and `rejected` are the candidates the rule selected (present whenever the rule could
/// select them, even if the pair is then dropped); `dropped` says why no pair is kept, and is
/// `None` exactly when the pair is kept, in which case `chosen.score > rejected.score`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub rule: Rule,
    pub chosen: Option<Pick>,
    pub rejected: Option<Pick>,
    pub dropped: Option<DropReason>,
    /// Future-guided only: the chosen side was replaced by the best of `P_f`.
    #[serde(default)]
    pub replaced_from_future: bool,
    pub scores: PoolScores,
}

impl Decision {
    /// Whether this decision yields a training pair.
    pub fn is_kept(&self) -> bool {
        self.dropped.is_none()
    }

    /// The (chosen, rejected) pair when kept.
    pub fn pair(&self) -> Option<(Pick, Pick)> {
        match (self.dropped, self.chosen, self.rejected) {
            (None, Some(c), Some(r)) => Some((c, r)),
            _ => None,
        }
    }

    /// Drop a kept pair whose texts are degenerate ([`crate::degenerate_pair`] of the chosen
    /// and the rejected response's text); the picks stay recorded. A dropped decision is
    /// returned unchanged.
    pub fn check_texts(mut self, chosen: &str, rejected: &str) -> Decision {
        if self.is_kept() {
            self.dropped = crate::degenerate_pair(chosen, rejected);
        }
        self
    }

    /// The scores gap `s(chosen) - s(rejected)` when kept.
    pub fn margin(&self) -> Option<f64> {
        self.pair().map(|(c, r)| c.score - r.score)
    }
}
