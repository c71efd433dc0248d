//! `tsr-curate`: preference-pair curation for Self-Rewarding (SR) and Temporal Self-Rewarding
//! (TSR) language models, as plain functions over judge scores.
//!
//! A *pool* is the list of scores of the K responses one model sampled for one prompt, in
//! sampling order; `None` marks a response whose judge verdicts all failed to parse (it has no
//! score and can be neither chosen nor rejected). Non-finite scores (NaN, ±∞) are treated as
//! `None` too.
//!
//! Three rules, exactly as in `docs/algorithm.md`:
//! - [`self_rewarding`]: chosen = argmax, rejected = argmin of the current pool `P_i`; dropped when
//!   the two scores are equal.
//! - [`anchored_rejection`] (TSR Phase 1): chosen = argmax `P_i`; rejected = argmin `P_0` when
//!   `min s(P_0) < min s(P_i)`, else argmin `P_i` (ties go to `P_i`); kept only when
//!   `s(chosen) > s(rejected)`.
//! - [`future_guided`] (TSR Phase 2): starting from a Phase-1 decision, chosen becomes argmax `P_f`
//!   only when `max s(P_f) > s(Phase-1 chosen)` (which is `max s(P_i)`, or the SR chosen in the
//!   future-only ablation); rejected is unchanged; kept only when `s(chosen) > s(rejected)`.
//!
//! **Tie-breaking** is deterministic: among equal scores inside one pool, argmax and argmin both
//! take the *first* index in sampling order; between pools, a tie keeps the current pool's side
//! (`P_i` for rejection, the Phase-1 chosen for future replacement).
//!
//! Every call returns a [`Decision`]: the picks with their provenance (pool and index), the scores
//! of every pool involved, and a [`DropReason`] when no pair is kept. A decision that is dropped
//! can still carry a candidate chosen/rejected (for instance a tie), which Phase 2 may rescue.
//!
//! The rules see scores only. [`degenerate_pair`] (and [`Decision::check_texts`]) then drops a
//! kept pair whose chosen response is empty or equals the rejected one, with its own
//! [`DropReason`], so such a pair is counted and never trained on.

mod decision;
mod rules;

pub use decision::{Decision, DropReason, Pick, Pool, PoolScores, Rule};
pub use rules::{
    anchored_rejection, argmax, argmin, degenerate_pair, future_guided, self_rewarding, DropCounts,
};
