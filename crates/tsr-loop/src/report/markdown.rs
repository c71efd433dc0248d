//! `report.md`: the runs, the key numbers per iteration and the charts.

use super::data::{Dpo, Iteration, Match, RunData};
use super::options::{ReportOptions, XAxis};
use super::output::{ChartFile, SkippedChart};
use std::fmt::Write as _;

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

pub(super) fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn json_text(v: Option<&serde_json::Value>, key: &str) -> String {
    match v.and_then(|v| v.get(key)) {
        Some(serde_json::Value::String(s)) => md_escape(s),
        Some(serde_json::Value::Null) | None => "–".into(),
        Some(other) => md_escape(&other.to_string()),
    }
}

pub(super) fn markdown_report(
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
