//! `tsr report RUN_DIR [RUN_DIR ...] --out DIR`: PNG charts of run folders' per-iteration
//! diagnostics and a `report.md` showing them with the key numbers (tsr-loop's `report`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use tsr_loop::report::{write_report, ReportOptions, XAxis};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run folders (from `tsr iterate`); several are drawn as series of one chart each.
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Where to write the charts and report.md (created if needed; same-named files replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// x-axis of the per-iteration charts: auto (iteration for one run, tokens for several),
    /// iteration, tokens (cumulative generated + judged + trained) or wall (cumulative seconds).
    #[arg(long, default_value = "auto")]
    x_axis: XAxis,
    /// Chart width in pixels.
    #[arg(long, default_value_t = 960)]
    width: u32,
    /// Height of one chart panel in pixels (charts with k panels are k times as tall).
    #[arg(long, default_value_t = 440)]
    panel_height: u32,
    /// Title of report.md (default: "tsr report: " and the run folder names).
    #[arg(long)]
    title: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut opts = ReportOptions::default();
    opts.x_axis = args.x_axis;
    opts.width = args.width;
    opts.panel_height = args.panel_height;
    opts.title = args.title;
    let out = write_report(&args.runs, &args.out, &opts).with_context(|| {
        format!(
            "writing the report of {} run folder(s) to {}",
            args.runs.len(),
            args.out.display()
        )
    })?;
    for c in &out.charts {
        println!("{}", c.path.display());
    }
    println!("{}", out.markdown.display());
    for s in &out.skipped {
        eprintln!("tsr report: {} not drawn: {}", s.file, s.reason);
    }
    if !out.results_are_real {
        eprintln!(
            "tsr report: WARNING: test doubles were used in at least one run; these are not real results"
        );
    }
    eprintln!(
        "tsr report: {} chart(s) and report.md in {}",
        out.charts.len(),
        args.out.display()
    );
    Ok(())
}
