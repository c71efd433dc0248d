//! What a reproduction reads: the runs of each method and seed, the head-to-head comparisons of
//! final models and the judge-accuracy reports.

use crate::report::output::ChartFile;
use std::path::PathBuf;

/// One run of the reproduction: a method, a seed, its folder.
#[derive(Clone, Debug)]
pub struct ReproRun {
    /// `sr`, `tsr`, `past-only` or `future-only` (any label works; the claims use `sr` and `tsr`).
    pub method: String,
    pub seed: u64,
    pub dir: PathBuf,
    /// The iteration whose model is the method's final one in the claims and the final-model
    /// table (SR: 4, the others: 2). A run may go further: SR is continued until its compute
    /// reaches TSR's for the equal-compute comparison; those iterations appear in the
    /// per-iteration table only. 0: the run's last iteration.
    pub iterations: u32,
}

/// A comparison of two methods' final models for one seed: `records.jsonl` of `tsr eval winrate`.
#[derive(Clone, Debug)]
pub struct HeadToHead {
    pub seed: u64,
    /// The method whose final model is evaluated.
    pub model: String,
    /// The method whose final model is the baseline ([`EQUAL_COMPUTE`](super::EQUAL_COMPUTE)
    /// for SR's model at the iteration nearest in compute to TSR's final model).
    pub baseline: String,
    /// The baseline run's iteration that was compared, when it is not its final one.
    pub baseline_iteration: Option<u32>,
    pub records: PathBuf,
}

/// A judge-accuracy report (`tsr judge-eval --out FILE`) of one model.
#[derive(Clone, Debug)]
pub struct Accuracy {
    /// A method (its final model) or `m0`.
    pub model: String,
    /// `None` for a model shared by all seeds (`M_0`).
    pub seed: Option<u64>,
    pub report: PathBuf,
}

/// Everything [`reproduction_report`](super::reproduction_report) reads.
#[derive(Clone, Debug, Default)]
pub struct ReproductionInput {
    pub title: String,
    /// Markdown placed after the title: how the runs were made (command, settings, models).
    pub intro: String,
    pub runs: Vec<ReproRun>,
    pub head_to_head: Vec<HeadToHead>,
    pub accuracy: Vec<Accuracy>,
    /// Charts to show (from [`super::write_report`](crate::report::write_report)), linked as
    /// `chart_prefix` + file name.
    pub charts: Vec<ChartFile>,
    pub chart_prefix: String,
    /// Markdown placed at the end (before the list of runs): what the results do and do not say.
    pub outro: String,
    /// Run folders are listed relative to this folder when they are inside it.
    pub display_root: Option<PathBuf>,
}
