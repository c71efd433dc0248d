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
pub mod reproduction;

use crate::error::{LoopError, Result};
use crate::fsio;
use chart::{Bar, Marker, Panel, Series, XKind};
use data::{Dpo, Iteration, Match, RunData};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the x-axis of the per-iteration charts measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum XAxis {
    /// [`XAxis::Iteration`] for one run, [`XAxis::Tokens`] for several.
    #[default]
    Auto,
    /// The iteration number.
    Iteration,
    /// Cumulative tokens generated + judged + trained (the `eval` stage excluded).
    Tokens,
    /// Cumulative wall seconds of the iterations (sum of `compute.wall_s`, `eval` excluded).
    WallSeconds,
}

impl XAxis {
    /// The accepted spellings, for help texts.
    pub const NAMES: &'static str = "auto, iteration, tokens, wall";

    fn resolve(self, runs: usize) -> Self {
        match self {
            Self::Auto if runs > 1 => Self::Tokens,
            Self::Auto => Self::Iteration,
            other => other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Tokens => "cumulative tokens (generated + judged + trained; eval excluded)",
            Self::WallSeconds => "cumulative wall time (s; eval excluded)",
            _ => "iteration",
        }
    }

    fn kind(self) -> XKind {
        match self {
            Self::Tokens => XKind::Count,
            Self::WallSeconds => XKind::Seconds,
            _ => XKind::Integer,
        }
    }

    fn value(self, it: &Iteration) -> Option<f64> {
        match self {
            Self::Tokens => it.cumulative_tokens,
            Self::WallSeconds => it.cumulative_wall_s,
            _ => Some(f64::from(it.iteration)),
        }
    }
}

impl std::str::FromStr for XAxis {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "iteration" | "iterations" => Ok(Self::Iteration),
            "tokens" => Ok(Self::Tokens),
            "wall" | "wall_s" | "seconds" => Ok(Self::WallSeconds),
            _ => Err(format!("unknown x-axis `{s}` (expected {})", Self::NAMES)),
        }
    }
}

/// How the report is drawn.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReportOptions {
    /// The x-axis of the per-iteration charts.
    pub x_axis: XAxis,
    /// Width of every chart, pixels.
    pub width: u32,
    /// Height of one panel, pixels; a chart of `k` stacked panels is `k` times as tall.
    pub panel_height: u32,
    /// Title of `report.md`; default `tsr report: RUN, RUN`.
    pub title: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            x_axis: XAxis::Auto,
            width: 960,
            panel_height: 440,
            title: None,
        }
    }
}

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

/// What [`write_report`] wrote.
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

enum Kind {
    Lines {
        x_label: String,
        x_kind: XKind,
    },
    Bars {
        segments: Vec<String>,
        bars: Vec<Bar>,
    },
}

struct Spec {
    file: &'static str,
    title: String,
    /// What the chart shows (one line in report.md).
    about: &'static str,
    /// Why it can be empty.
    missing: &'static str,
    kind: Kind,
    panels: Vec<Panel>,
}

type Metric<'a> = (&'a str, &'a dyn Fn(&Iteration) -> Option<f64>);

/// Per-iteration series: one per run and metric; colours by (run, metric), markers by run.
fn iteration_series(runs: &[RunData], x: XAxis, metrics: &[Metric<'_>]) -> Vec<Series> {
    let mut out = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        for (m, (name, f)) in metrics.iter().enumerate() {
            let points: Vec<(f64, f64)> = run
                .iterations
                .iter()
                .filter_map(|it| Some((x.value(it)?, f(it)?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            out.push(Series {
                label: series_label(runs, run, name),
                color: chart::color(r * metrics.len() + m),
                marker: Marker::for_run(r),
                points,
                err: None,
            });
        }
    }
    out
}

fn series_label(runs: &[RunData], run: &RunData, name: &str) -> String {
    if runs.len() == 1 {
        name.to_string()
    } else {
        format!("{}: {name}", run.label)
    }
}

fn panel(title: &str, y_label: &str, series: Vec<Series>) -> Panel {
    Panel {
        title: title.into(),
        y_label: y_label.into(),
        series,
        reference: None,
        y_range: None,
    }
}

/// Shares, accuracies and win rates: 0 to 1, with room above for the legend (no tick labels
/// there).
const UNIT: Option<(f64, f64)> = Some((-0.03, 1.4));

fn dpo_metric(f: fn(&Dpo) -> Option<f64>, future: bool) -> impl Fn(&Iteration) -> Option<f64> {
    move |it: &Iteration| {
        let d = if future { &it.dpo_future } else { &it.dpo };
        d.as_ref().and_then(f)
    }
}

/// Per-step series of the step logs: one per run and model.
fn step_series(runs: &[RunData], f: fn(&data::Step) -> Option<f64>) -> Vec<Series> {
    let mut out = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        for (m, (name, steps)) in [
            ("model (M_i+1)", &run.steps_model),
            ("future model (M_f)", &run.steps_future),
        ]
        .into_iter()
        .enumerate()
        {
            let points: Vec<(f64, f64)> = steps
                .iter()
                .filter_map(|s| Some((s.global_step, f(s)?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            out.push(Series {
                label: series_label(runs, run, name),
                color: chart::color(r * 2 + m),
                marker: Marker::for_run(r),
                points,
                err: None,
            });
        }
    }
    out
}

fn win_rate_series(runs: &[RunData], x: XAxis) -> Vec<Series> {
    type Pick = fn(&data::Eval) -> Option<&Match>;
    let which: [(&str, Pick); 2] = [
        ("vs previous model", |e| e.vs_previous.as_ref()),
        ("vs initial model", |e| e.vs_initial.as_ref()),
    ];
    let mut out = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        for (m, (name, pick)) in which.iter().enumerate() {
            let mut points = Vec::new();
            let mut err = Vec::new();
            for it in &run.iterations {
                let Some(mt) = it.eval.as_ref().and_then(pick) else {
                    continue;
                };
                let (Some(xv), Some(wr)) = (x.value(it), mt.win_rate) else {
                    continue;
                };
                points.push((xv, wr));
                err.push((mt.ci_low.unwrap_or(wr), mt.ci_high.unwrap_or(wr)));
            }
            if points.is_empty() {
                continue;
            }
            out.push(Series {
                label: series_label(runs, run, name),
                color: chart::color(r * 2 + m),
                marker: Marker::for_run(r),
                points,
                err: Some(err),
            });
        }
    }
    out
}

/// Stages in loop order; names this list lacks follow in the order met.
const STAGE_ORDER: [&str; 12] = [
    "gen-current",
    "gen-initial",
    "judge-current",
    "judge-initial",
    "curate-1",
    "train-future",
    "gen-future",
    "judge-future",
    "curate-2",
    "similarity",
    "train",
    "summary",
];

fn compute_bars(runs: &[RunData]) -> (Vec<String>, Vec<Bar>) {
    let mut segments: Vec<String> = Vec::new();
    let mut bars = Vec::new();
    for run in runs {
        for it in &run.iterations {
            if it.stage_wall.is_empty() {
                continue;
            }
            for (s, _) in &it.stage_wall {
                if !segments.contains(s) {
                    segments.push(s.clone());
                }
            }
            bars.push(Bar {
                label: if runs.len() == 1 {
                    it.iteration.to_string()
                } else {
                    format!("{} #{}", run.label, it.iteration)
                },
                segments: it.stage_wall.clone(),
            });
        }
    }
    let rank = |s: &String| {
        STAGE_ORDER
            .iter()
            .position(|o| o == s)
            .unwrap_or(STAGE_ORDER.len())
    };
    segments.sort_by_key(rank);
    (segments, bars)
}

fn chart_specs(runs: &[RunData], x: XAxis) -> Vec<Spec> {
    let lines = || Kind::Lines {
        x_label: x.label().into(),
        x_kind: x.kind(),
    };
    let chosen = |i: &Iteration| i.chosen;
    let rejected = |i: &Iteration| i.rejected;
    let gap = |i: &Iteration| i.gap;
    let cosine = |i: &Iteration| i.similarity;
    let anchored = |i: &Iteration| i.anchored_share;
    let future = |i: &Iteration| i.future_share;
    let margin = dpo_metric(|d| d.reward_margin, false);
    let margin_f = dpo_metric(|d| d.reward_margin, true);
    let acc = dpo_metric(|d| d.reward_accuracy, false);
    let acc_f = dpo_metric(|d| d.reward_accuracy, true);

    let mut shares = panel(
        "Share of final pairs taken from the past / future pools",
        "share of pairs",
        iteration_series(
            runs,
            x,
            &[
                ("anchored: rejected from initial model", &anchored),
                ("future-guided: chosen from future model", &future),
            ],
        ),
    );
    shares.y_range = UNIT;
    let mut dpo_acc = panel(
        "DPO reward accuracy (mean over the last epoch's steps)",
        "reward accuracy",
        iteration_series(
            runs,
            x,
            &[("model (M_i+1)", &acc), ("future model (M_f)", &acc_f)],
        ),
    );
    dpo_acc.y_range = UNIT;
    let mut step_acc = panel(
        "rewards/accuracies per step",
        "reward accuracy",
        step_series(runs, |s| s.accuracy),
    );
    step_acc.y_range = UNIT;
    let mut wins = panel(
        "Win rate of the trained model (judge verdicts, with confidence interval)",
        "win rate",
        win_rate_series(runs, x),
    );
    wins.y_range = UNIT;
    wins.reference = Some((0.5, "0.5: no better than the opponent".into()));
    let (segments, bars) = compute_bars(runs);

    vec![
        Spec {
            file: "scores.png",
            title: "Judge scores of the training pairs".into(),
            about: "Mean judge score of the chosen and the rejected responses of the final \
                    training pairs, and their gap (chosen − rejected).",
            missing: "no iteration has chosen/rejected score means",
            kind: lines(),
            panels: vec![
                panel(
                    "Chosen and rejected score (mean over pairs)",
                    "judge score",
                    iteration_series(runs, x, &[("chosen", &chosen), ("rejected", &rejected)]),
                ),
                panel(
                    "Score gap (chosen − rejected)",
                    "score gap",
                    iteration_series(runs, x, &[("gap", &gap)]),
                ),
            ],
        },
        Spec {
            file: "similarity.png",
            title: "Hidden-state cosine of chosen vs rejected".into(),
            about: "Mean cosine similarity of the chosen and the rejected response's hidden \
                    states under the current model: near 1, the pairs are hard to tell apart \
                    (the gradient-collapse the temporal method counters).",
            missing: "no iteration has `similarity_mean`",
            kind: lines(),
            panels: vec![panel(
                "Mean cosine(h_chosen, h_rejected)",
                "cosine similarity",
                iteration_series(runs, x, &[("cosine", &cosine)]),
            )],
        },
        Spec {
            file: "dpo.png",
            title: "DPO training, per iteration".into(),
            about: "The DPO trainer's reward margin and reward accuracy of each iteration \
                    (`dpo`, `dpo_future`: means over the last epoch's steps), for the trained model \
                    and (TSR) the future model.",
            missing: "no iteration has `dpo` or `dpo_future` numbers",
            kind: lines(),
            panels: vec![
                panel(
                    "DPO reward margin (mean over the last epoch's steps)",
                    "reward margin",
                    iteration_series(
                        runs,
                        x,
                        &[
                            ("model (M_i+1)", &margin),
                            ("future model (M_f)", &margin_f),
                        ],
                    ),
                ),
                dpo_acc,
            ],
        },
        Spec {
            file: "dpo-steps.png",
            title: "DPO training, per step".into(),
            about: "rewards/margins, rewards/accuracies and loss of every DPO step \
                    (train-model.jsonl, train-model-future.jsonl), steps numbered on across \
                    iterations.",
            missing: "no iteration has train-model.jsonl or train-model-future.jsonl",
            kind: Kind::Lines {
                x_label: "DPO step (continuing across iterations)".into(),
                x_kind: XKind::Integer,
            },
            panels: vec![
                panel(
                    "rewards/margins per step",
                    "reward margin",
                    step_series(runs, |s| s.margin),
                ),
                step_acc,
                panel("loss per step", "DPO loss", step_series(runs, |s| s.loss)),
            ],
        },
        Spec {
            file: "shares.png",
            title: "Anchored and future-guided shares".into(),
            about: "Share of final pairs whose rejected response came from the initial model \
                    (anchored rejection) and whose chosen response came from the future model \
                    (future-guided chosen). SR runs have neither.",
            missing: "no iteration has an anchored or future-guided share (SR runs have none)",
            kind: lines(),
            panels: vec![shares],
        },
        Spec {
            file: "win-rates.png",
            title: "Head-to-head win rates".into(),
            about: "Win rate of each iteration's trained model against the previous and the \
                    initial model (ties count half), with its confidence interval; above the \
                    dashed 0.5 line the model is preferred.",
            missing: "no iteration has an `eval` object",
            kind: lines(),
            panels: vec![wins],
        },
        Spec {
            file: "compute.png",
            title: "Wall time per stage".into(),
            about: "Wall seconds of each stage of each iteration, stacked.",
            missing: "no iteration has `compute.stages`",
            kind: Kind::Bars { segments, bars },
            panels: Vec::new(),
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// report.md

fn f3(v: Option<f64>) -> Option<String> {
    v.map(|v| format!("{v:.3}"))
}

fn win_cell(m: Option<&Match>) -> Option<String> {
    let m = m?;
    let wr = m.win_rate?;
    let mut s = format!("{wr:.3}");
    if let (Some(lo), Some(hi)) = (m.ci_low, m.ci_high) {
        let _ = write!(s, " [{lo:.2}, {hi:.2}]");
    }
    if let (Some(w), Some(l)) = (m.wins, m.losses) {
        let _ = write!(s, " ({w}-{l}-{}", m.ties.unwrap_or(0.0));
        if let Some(n) = m.n {
            let _ = write!(s, " of {n}");
        }
        s.push(')');
    }
    if let Some(o) = &m.opponent {
        let _ = write!(s, " vs {o}");
    }
    Some(s)
}

type Column<'a> = (&'a str, Box<dyn Fn(&Iteration) -> Option<String> + 'a>);

fn columns<'a>() -> Vec<Column<'a>> {
    let dpo = |f: fn(&Dpo) -> Option<f64>, fut: bool| {
        Box::new(move |i: &Iteration| {
            f3((if fut { &i.dpo_future } else { &i.dpo })
                .as_ref()
                .and_then(f))
        }) as Box<dyn Fn(&Iteration) -> Option<String>>
    };
    vec![
        (
            "iteration",
            Box::new(|i: &Iteration| Some(i.iteration.to_string())),
        ),
        (
            "pairs",
            Box::new(|i: &Iteration| i.pairs.map(|p| p.to_string())),
        ),
        ("chosen", Box::new(|i: &Iteration| f3(i.chosen))),
        ("rejected", Box::new(|i: &Iteration| f3(i.rejected))),
        ("gap", Box::new(|i: &Iteration| f3(i.gap))),
        ("cosine", Box::new(|i: &Iteration| f3(i.similarity))),
        (
            "anchored share",
            Box::new(|i: &Iteration| f3(i.anchored_share)),
        ),
        (
            "future-guided share",
            Box::new(|i: &Iteration| f3(i.future_share)),
        ),
        ("DPO margin", dpo(|d| d.reward_margin, false)),
        ("DPO accuracy", dpo(|d| d.reward_accuracy, false)),
        ("DPO loss", dpo(|d| d.final_loss, false)),
        ("future DPO margin", dpo(|d| d.reward_margin, true)),
        ("future DPO accuracy", dpo(|d| d.reward_accuracy, true)),
        (
            "win rate vs previous",
            Box::new(|i: &Iteration| {
                win_cell(i.eval.as_ref().and_then(|e| e.vs_previous.as_ref()))
            }),
        ),
        (
            "win rate vs initial",
            Box::new(|i: &Iteration| win_cell(i.eval.as_ref().and_then(|e| e.vs_initial.as_ref()))),
        ),
        (
            "wall s",
            Box::new(|i: &Iteration| i.wall_s.map(|w| format!("{w:.1}"))),
        ),
        (
            "tokens (cumulative, eval excluded)",
            Box::new(|i: &Iteration| i.cumulative_tokens.map(|t| format!("{t:.0}"))),
        ),
    ]
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn json_text(v: Option<&serde_json::Value>, key: &str) -> String {
    match v.and_then(|v| v.get(key)) {
        Some(serde_json::Value::String(s)) => md_escape(s),
        Some(serde_json::Value::Null) | None => "–".into(),
        Some(other) => md_escape(&other.to_string()),
    }
}

fn markdown_report(
    runs: &[RunData],
    x: XAxis,
    charts: &[ChartFile],
    skipped: &[SkippedChart],
    opts: &ReportOptions,
) -> String {
    let mut md = String::new();
    let names: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    let title = opts
        .title
        .clone()
        .unwrap_or_else(|| format!("tsr report: {}", names.join(", ")));
    let _ = writeln!(md, "# {}\n", md_escape(&title));

    let fake: Vec<&RunData> = runs.iter().filter(|r| !r.results_are_real()).collect();
    if !fake.is_empty() {
        let _ = writeln!(
            md,
            "> **WARNING: NOT REAL RESULTS.** The following run(s) were made with test doubles \
             (or say `results_are_real: false`); their numbers test the pipeline, not the \
             method:\n>"
        );
        for r in &fake {
            let doubles = r.test_doubles();
            let _ = writeln!(
                md,
                "> - `{}`: {}",
                r.label,
                if doubles.is_empty() {
                    "`results_are_real: false`".to_string()
                } else {
                    md_escape(&doubles.join("; "))
                }
            );
        }
        md.push('\n');
    }

    md.push_str("## Runs\n\n");
    md.push_str(
        "| run | folder | method | iterations | backend | judge | tsr version | real results |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} |",
            md_escape(&r.label),
            md_escape(&r.dir.display().to_string()),
            r.method.as_deref().unwrap_or("–"),
            r.iterations.len(),
            json_text(r.provenance.as_ref(), "backend"),
            json_text(r.provenance.as_ref(), "judge"),
            json_text(r.run_json.as_ref(), "tsr_version"),
            if r.results_are_real() {
                "yes"
            } else {
                "**NO (test doubles)**"
            },
        );
    }
    md.push('\n');
    let _ = writeln!(md, "x-axis of the per-iteration charts: {}.\n", x.label());

    md.push_str("## Key numbers per iteration\n\n");
    md.push_str(
        "Scores are the judge's means over the final training pairs; DPO margin and accuracy \
         are the trainer's means over the last epoch's steps, DPO loss that of the last step",
    );
    if runs
        .iter()
        .flat_map(|r| &r.iterations)
        .any(|i| i.eval.is_some())
    {
        md.push_str("; win rates show the confidence interval and (wins-losses-ties of n)");
    }
    md.push_str(".\n\n");
    let cols = columns();
    for r in runs {
        if runs.len() > 1 {
            let _ = writeln!(
                md,
                "### {} ({})\n",
                md_escape(&r.label),
                r.method.as_deref().unwrap_or("?")
            );
        }
        let cells: Vec<Vec<Option<String>>> = r
            .iterations
            .iter()
            .map(|it| cols.iter().map(|(_, f)| f(it)).collect())
            .collect();
        let keep: Vec<usize> = (0..cols.len())
            .filter(|&c| cells.iter().any(|row| row[c].is_some()))
            .collect();
        let header: Vec<&str> = keep.iter().map(|&c| cols[c].0).collect();
        let _ = writeln!(md, "| {} |", header.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(keep.len()));
        for row in &cells {
            let line: Vec<String> = keep
                .iter()
                .map(|&c| {
                    row[c]
                        .as_deref()
                        .map(md_escape)
                        .unwrap_or_else(|| "–".into())
                })
                .collect();
            let _ = writeln!(md, "| {} |", line.join(" | "));
        }
        md.push('\n');
        for it in &r.iterations {
            if let Some(e) = &it.eval {
                let _ = writeln!(
                    md,
                    "Iteration {} evaluated on {} prompt(s), judge {}.",
                    it.iteration,
                    e.prompts.map_or("?".into(), |p| p.to_string()),
                    e.judge.as_deref().map_or("?".into(), md_escape)
                );
            }
        }
        if r.iterations.iter().any(|it| it.eval.is_some()) {
            md.push('\n');
        }
    }

    md.push_str("## Charts\n\n");
    for c in charts {
        let _ = writeln!(
            md,
            "### {}\n\n{}\n\n![{}]({})\n",
            c.title, c.description, c.title, c.file
        );
    }
    if !skipped.is_empty() {
        md.push_str("Not drawn:\n\n");
        for s in skipped {
            let _ = writeln!(md, "- `{}`: {}", s.file, s.reason);
        }
        md.push('\n');
    }
    md
}
