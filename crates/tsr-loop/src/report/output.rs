//! What [`write_report`](super::write_report) wrote: the charts, the charts left out and why, and
//! `report.md`.

use std::path::PathBuf;

/// One chart written.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChartFile {
    /// File name inside the output folder, e.g. `scores.png`.
    pub file: String,
    pub path: PathBuf,
    pub title: String,
    /// What the chart shows (one sentence, as in `report.md`).
    pub description: String,
    pub width: u32,
    pub height: u32,
}

/// A chart not drawn, and why (e.g. no run has `eval`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SkippedChart {
    pub file: String,
    pub reason: String,
}

/// What [`write_report`](super::write_report) wrote.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReportOutput {
    /// `OUT/report.md`.
    pub markdown: PathBuf,
    pub charts: Vec<ChartFile>,
    pub skipped: Vec<SkippedChart>,
    /// False when any run used test doubles or says `results_are_real: false`.
    pub results_are_real: bool,
}
