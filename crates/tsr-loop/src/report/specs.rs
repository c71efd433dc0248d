//! The charts of the report: which file shows which per-iteration or per-step series, and the
//! wall time per stage as stacked bars.

use super::chart::{self, Bar, Marker, Panel, Series, XKind};
use super::data::{self, Dpo, Iteration, Match, RunData};
use super::options::XAxis;

pub(super) enum Kind {
    Lines {
        x_label: String,
        x_kind: XKind,
    },
    Bars {
        segments: Vec<String>,
        bars: Vec<Bar>,
    },
}

pub(super) struct Spec {
    pub(super) file: &'static str,
    pub(super) title: String,
    /// What the chart shows (one line in report.md).
    pub(super) about: &'static str,
    /// Why it can be empty.
    pub(super) missing: &'static str,
    pub(super) kind: Kind,
    pub(super) panels: Vec<Panel>,
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

pub(super) fn chart_specs(runs: &[RunData], x: XAxis) -> Vec<Spec> {
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
