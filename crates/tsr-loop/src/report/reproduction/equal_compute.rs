//! The equal-compute comparison: which iteration of a baseline run matches a target's compute,
//! and whether the baseline must run on to get there.

use crate::error::Result;
use crate::report::data::load_run;
use std::path::Path;

/// The baseline label of the head-to-head of TSR's final model against SR's model at the
/// iteration whose cumulative compute is nearest TSR's ([`equal_compute_iteration`]).
pub const EQUAL_COMPUTE: &str = "sr (equal compute)";

/// Cumulative compute (tokens generated + judged + trained, evaluation excluded) after each
/// finished iteration of a run folder: `(iteration, tokens)`, in order.
pub fn cumulative_compute(dir: &Path) -> Result<Vec<(u32, f64)>> {
    let run = load_run(dir)?;
    Ok(run
        .iterations
        .iter()
        .filter_map(|i| Some((i.iteration, i.cumulative_tokens?)))
        .collect())
}

/// What the equal-compute comparison needs of a baseline run whose cumulative compute per
/// iteration is `baseline` (from [`cumulative_compute`]) against a target compute `target`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EqualCompute {
    /// Run one more iteration: the next one is expected (from the last iteration's cost) to land
    /// nearer the target than any finished one.
    Continue,
    /// Compare with this iteration: its compute is the nearest to the target.
    Use(u32),
}

/// The rule of the equal-compute comparison, fixed before any run is read: continue the
/// baseline while its compute plus half its last iteration's cost is below the target (so the
/// next iteration would probably be nearer), then take the finished iteration whose compute is
/// nearest the target (the later one on a tie). `max_iterations` caps the continuation.
pub fn equal_compute_iteration(
    baseline: &[(u32, f64)],
    target: f64,
    max_iterations: u32,
) -> Option<EqualCompute> {
    let &(last, total) = baseline.last()?;
    let before = baseline.len().checked_sub(2).map_or(0.0, |i| baseline[i].1);
    let step = total - before;
    if last < max_iterations && step > 0.0 && total + step / 2.0 < target {
        return Some(EqualCompute::Continue);
    }
    baseline
        .iter()
        .rev()
        .min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()))
        .map(|&(it, _)| EqualCompute::Use(it))
}
