//! [`Stage`]: the steps of one iteration, and the plan of each method.

use crate::config::Method;

/// One step of an iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    GenCurrent,
    GenInitial,
    JudgeCurrent,
    JudgeInitial,
    Curate1,
    TrainFuture,
    GenFuture,
    JudgeFuture,
    Curate2,
    Similarity,
    Train,
    /// Win rates of `M_{i+1}` against `M_i` and `M_0` (only with `[eval]`).
    Eval,
    Summary,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::GenCurrent => "gen-current",
            Stage::GenInitial => "gen-initial",
            Stage::JudgeCurrent => "judge-current",
            Stage::JudgeInitial => "judge-initial",
            Stage::Curate1 => "curate-1",
            Stage::TrainFuture => "train-future",
            Stage::GenFuture => "gen-future",
            Stage::JudgeFuture => "judge-future",
            Stage::Curate2 => "curate-2",
            Stage::Similarity => "similarity",
            Stage::Train => "train",
            Stage::Eval => "eval",
            Stage::Summary => "summary",
        }
    }

    /// The stages of one iteration of `method`, in order; `eval` adds [`Stage::Eval`] before
    /// the summary.
    pub fn plan_with(method: Method, eval: bool) -> Vec<Stage> {
        let mut v = Self::plan(method).to_vec();
        if eval {
            v.insert(v.len() - 1, Stage::Eval);
        }
        v
    }

    /// The stages of one iteration of `method` without evaluation, in order.
    pub fn plan(method: Method) -> &'static [Stage] {
        use Stage::*;
        match method {
            Method::Sr => &[
                GenCurrent,
                JudgeCurrent,
                Curate1,
                Similarity,
                Train,
                Summary,
            ],
            Method::Tsr => &[
                GenCurrent,
                GenInitial,
                JudgeCurrent,
                JudgeInitial,
                Curate1,
                TrainFuture,
                GenFuture,
                JudgeFuture,
                Curate2,
                Similarity,
                Train,
                Summary,
            ],
            Method::PastOnly => &[
                GenCurrent,
                GenInitial,
                JudgeCurrent,
                JudgeInitial,
                Curate1,
                Similarity,
                Train,
                Summary,
            ],
            Method::FutureOnly => &[
                GenCurrent,
                JudgeCurrent,
                Curate1,
                TrainFuture,
                GenFuture,
                JudgeFuture,
                Curate2,
                Similarity,
                Train,
                Summary,
            ],
        }
    }
}
