//! `tsr report`: PNG charts of run folders' per-iteration diagnostics and a `report.md` that
//! shows them with the key numbers.
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use tsr_loop::report::{write_report, ReportOptions};
//!
//! let runs = [PathBuf::from("runs/sr"), PathBuf::from("runs/tsr")];
//! let out = write_report(&runs, Path::new("runs/report"), &ReportOptions::default())?;
//! for chart in &out.charts {
//!     println!("{}", chart.path.display());
//! }
//! # Ok::<(), tsr_loop::LoopError>(())
//! ```
//!
//! Inputs, per run folder: `summary.json` (else the `kind: "iteration"` lines of
//! `metrics.jsonl`), `iter-NNN/train-model.jsonl` and `train-model-future.jsonl` (per-step DPO
//! metrics), `provenance.json` and `run.json` (both optional). Fields a run lacks (an SR run has no
//! future model; older runs have no `eval`) drop their series, or the whole chart when nothing is
//! left; a file that exists but does not parse is an error naming it.
//!
//! With one run the x-axis is the iteration; with several it is cumulative compute (tokens
//! generated + judged + trained by default), so an SR and a TSR run compare at equal cost. See
//! `docs/report.md`.

mod chart;
mod data;
mod markdown;
mod options;
mod output;
pub mod reproduction;
mod specs;

pub use options::{ReportOptions, XAxis};
pub use output::{ChartFile, ReportOutput, SkippedChart};

use crate::error::{LoopError, Result};
use crate::fsio;
use chart::Panel;
use data::RunData;
use markdown::markdown_report;
use specs::{chart_specs, Kind};
use std::path::{Path, PathBuf};

/// Read the run folders, write one PNG per chart and `report.md` into `out` (created if needed;
/// files of the same names are replaced).
pub fn write_report(runs: &[PathBuf], out: &Path, opts: &ReportOptions) -> Result<ReportOutput> {
    if runs.is_empty() {
        return Err(LoopError::Config("report: no run folder given".into()));
    }
    if opts.width < 200 || opts.panel_height < 150 {
        return Err(LoopError::Config(format!(
            "report: charts of {}x{} pixels per panel are too small (at least 200x150)",
            opts.width, opts.panel_height
        )));
    }
    let mut data = runs
        .iter()
        .map(|r| data::load_run(r))
        .collect::<Result<Vec<_>>>()?;
    data::label_runs(&mut data);
    fsio::create_dir(out)?;
    let x = opts.x_axis.resolve(data.len());
    let mut charts = Vec::new();
    let mut skipped = Vec::new();
    for spec in chart_specs(&data, x) {
        let path = out.join(spec.file);
        let panels: Vec<Panel> = spec.panels.into_iter().filter(Panel::has_points).collect();
        let (width, height) = match spec.kind {
            Kind::Lines { .. } if panels.is_empty() => {
                skipped.push(SkippedChart {
                    file: spec.file.into(),
                    reason: spec.missing.into(),
                });
                continue;
            }
            Kind::Lines { x_label, x_kind } => {
                let title = titled(&spec.title, &data);
                chart::line_chart(
                    &path,
                    &title,
                    &x_label,
                    x_kind,
                    &panels,
                    opts.width,
                    opts.panel_height,
                )?;
                (opts.width, opts.panel_height * panels.len() as u32)
            }
            Kind::Bars { ref bars, .. } if bars.is_empty() => {
                skipped.push(SkippedChart {
                    file: spec.file.into(),
                    reason: spec.missing.into(),
                });
                continue;
            }
            Kind::Bars { segments, bars } => {
                let title = titled(&spec.title, &data);
                let width = opts.width.max(240 + 70 * bars.len() as u32);
                chart::stacked_bars(
                    &path,
                    &title,
                    "wall time (s)",
                    &segments,
                    &bars,
                    width,
                    opts.panel_height,
                )?;
                (width, opts.panel_height)
            }
        };
        tracing::info!(path = %path.display(), "chart written");
        charts.push(ChartFile {
            file: spec.file.into(),
            path,
            title: spec.title,
            description: spec.about.into(),
            width,
            height,
        });
    }
    let markdown = out.join("report.md");
    let text = markdown_report(&data, x, &charts, &skipped, opts);
    fsio::write_bytes(&markdown, text.as_bytes())?;
    tracing::info!(path = %markdown.display(), "report written");
    Ok(ReportOutput {
        markdown,
        charts,
        skipped,
        results_are_real: data.iter().all(RunData::results_are_real),
    })
}

fn titled(title: &str, runs: &[RunData]) -> String {
    if runs.iter().all(RunData::results_are_real) {
        title.to_string()
    } else {
        format!("{title} [TEST DOUBLES: not real results]")
    }
}
