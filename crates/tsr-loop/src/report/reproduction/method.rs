//! The runs of one method over the seeds, and their values per iteration.

use crate::report::data::{Iteration, RunData};
use std::collections::BTreeMap;

/// The runs of one method, keyed by seed.
pub(super) struct Method<'a> {
    pub(super) name: &'a str,
    pub(super) runs: BTreeMap<u64, &'a RunData>,
    /// [`ReproRun::iterations`](super::ReproRun::iterations) per seed (0: the run's last).
    pub(super) caps: BTreeMap<u64, u32>,
}

impl Method<'_> {
    /// Values of `f` at iteration `it` over the seeds that have it.
    pub(super) fn at(&self, it: u32, f: impl Fn(&Iteration) -> Option<f64>) -> Vec<f64> {
        self.runs
            .values()
            .filter_map(|r| r.iterations.iter().find(|i| i.iteration == it))
            .filter_map(f)
            .collect()
    }

    /// The method's final iteration: the largest every run reached, capped by the runs'
    /// [`ReproRun::iterations`](super::ReproRun::iterations).
    pub(super) fn last(&self) -> u32 {
        self.runs
            .iter()
            .map(|(seed, r)| {
                let reached = r.iterations.last().map_or(0, |i| i.iteration);
                match self.caps.get(seed) {
                    Some(&cap) if cap > 0 => reached.min(cap),
                    _ => reached,
                }
            })
            .min()
            .unwrap_or(0)
    }

    /// The largest iteration any run of the method reached (the per-iteration table's rows).
    pub(super) fn reached(&self) -> u32 {
        self.runs
            .values()
            .map(|r| r.iterations.last().map_or(0, |i| i.iteration))
            .max()
            .unwrap_or(0)
    }

    /// `(first, last)` of `f` per seed, for seeds with both.
    pub(super) fn ends(&self, f: impl Fn(&Iteration) -> Option<f64>, last: u32) -> Vec<(f64, f64)> {
        self.runs
            .values()
            .filter_map(|r| {
                let at = |n: u32| r.iterations.iter().find(|i| i.iteration == n).and_then(&f);
                Some((at(1)?, at(last)?))
            })
            .collect()
    }
}
