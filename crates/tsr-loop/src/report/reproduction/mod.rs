//! The tables and verdicts of a reproduction of the TSR paper's claims (`cargo xtask reproduce`,
//! `docs/reproduction.md`), computed from run folders and evaluation outputs.
//!
//! Input: the run folders of several methods and seeds ([`ReproRun`]), the per-prompt records of
//! head-to-head comparisons of final models (`records.jsonl` of `tsr eval winrate`,
//! [`HeadToHead`]) and judge-accuracy reports (`tsr judge-eval --out`, [`Accuracy`]). Output:
//! markdown with the claims and their verdicts, per-iteration means and spreads over seeds, the
//! final models' compute and win rates, and the head-to-head results ([`reproduction_report`]).
//!
//! The verdict rules ([`CLAIMS`]) are fixed here, before any run is read, so that a run cannot
//! choose its own criterion. Spread is the sample standard deviation over seeds; pooled win
//! rates tally every per-prompt record of all seeds ([`tsr_judge::winrate::tally`]) with a
//! percentile-bootstrap interval over those records.

mod claims;
mod equal_compute;
mod input;
mod method;
mod stats;
mod winrate;

pub use claims::{Claim, Verdict, CLAIMS};
pub use equal_compute::{cumulative_compute, equal_compute_iteration, EqualCompute, EQUAL_COMPUTE};
pub use input::{Accuracy, HeadToHead, ReproRun, ReproductionInput};

use super::data::{self, Iteration, RunData};
use super::markdown::md_escape;
use crate::error::{LoopError, Result};
use crate::fsio;
use claims::{beats_claim, equal_compute_claim, gap_claim, holds_claim, similarity_claim};
use method::Method;
use serde_json::Value;
use stats::cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use tsr_judge::winrate::{tally, WinRateRecord, WinRateReport};
use winrate::{read_records, win_text};

/// What [`reproduction_report`] made.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReproductionOutput {
    pub markdown: String,
    pub claims: Vec<Claim>,
}

/// One seed's head-to-head result: the seed, the baseline's iteration when it is not its final
/// one, and the tally.
type SeedResult = (u64, Option<u32>, WinRateReport);

/// Read the inputs and write the report (see the [module docs](self)).
pub fn reproduction_report(input: &ReproductionInput) -> Result<ReproductionOutput> {
    if input.runs.is_empty() {
        return Err(LoopError::Config(
            "reproduction: no run folder given".into(),
        ));
    }
    let loaded: Vec<RunData> = input
        .runs
        .iter()
        .map(|r| data::load_run(&r.dir))
        .collect::<Result<_>>()?;
    let seeds: Vec<u64> = {
        let mut s: Vec<u64> = input.runs.iter().map(|r| r.seed).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    // Methods in the order they first appear.
    let mut methods: Vec<Method<'_>> = Vec::new();
    for (spec, run) in input.runs.iter().zip(&loaded) {
        match methods.iter_mut().find(|m| m.name == spec.method) {
            Some(m) => {
                m.runs.insert(spec.seed, run);
                m.caps.insert(spec.seed, spec.iterations);
            }
            None => methods.push(Method {
                name: &spec.method,
                runs: BTreeMap::from([(spec.seed, run)]),
                caps: BTreeMap::from([(spec.seed, spec.iterations)]),
            }),
        }
    }
    let find = |name: &str| methods.iter().find(|m| m.name == name);

    // Pooled head-to-head results (every seed's records together).
    let mut records: BTreeMap<(String, String), Vec<WinRateRecord>> = BTreeMap::new();
    let mut per_seed: BTreeMap<(String, String), Vec<SeedResult>> = BTreeMap::new();
    let mut matched = Vec::new();
    for h in &input.head_to_head {
        let r = read_records(&h.records)?;
        let key = (h.model.clone(), h.baseline.clone());
        if h.model == "tsr" && h.baseline == EQUAL_COMPUTE {
            matched.push((h.seed, h.baseline_iteration));
        }
        per_seed.entry(key.clone()).or_default().push((
            h.seed,
            h.baseline_iteration,
            tally(&r, h.seed),
        ));
        records.entry(key).or_default().extend(r);
    }
    let pooled: BTreeMap<(String, String), WinRateReport> = records
        .iter()
        .map(|(k, r)| (k.clone(), tally(r, 0)))
        .collect();

    let (sr, tsr) = (find("sr"), find("tsr"));
    let results = [
        gap_claim(sr),
        similarity_claim(sr),
        holds_claim(sr, tsr),
        beats_claim(&pooled, sr, tsr),
        equal_compute_claim(&pooled, &matched, sr, tsr),
    ];
    let claims: Vec<Claim> = CLAIMS
        .iter()
        .zip(results)
        .map(|((claim, criterion), (measured, verdict))| Claim {
            claim,
            criterion,
            measured,
            verdict,
        })
        .collect();

    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", md_escape(&input.title));
    let fake: Vec<&RunData> = loaded.iter().filter(|r| !r.results_are_real()).collect();
    if !fake.is_empty() {
        let _ = writeln!(
            md,
            "> **WARNING: NOT REAL RESULTS.** {} of the runs were made with test doubles; the \
             numbers below test the pipeline, not the method.\n",
            fake.len()
        );
    }
    md.push_str(&input.intro);
    if !input.intro.ends_with("\n\n") {
        md.push_str("\n\n");
    }

    md.push_str("## The claims\n\n");
    md.push_str(
        "Each claim is decided by the rule beside it, fixed in the code \
         (`tsr_loop::report::reproduction::CLAIMS`) before any run was read.\n\n",
    );
    md.push_str("| claim | rule | measured | verdict |\n|---|---|---|---|\n");
    for c in &claims {
        let _ = writeln!(
            md,
            "| {} | {} | {} | **{}** |",
            md_escape(c.claim),
            md_escape(c.criterion),
            md_escape(&c.measured),
            c.verdict.as_str()
        );
    }
    md.push('\n');

    // Final models.
    let acc: Vec<(String, Option<u64>, f64)> = input
        .accuracy
        .iter()
        .map(|a| {
            let v: Value = fsio::read_json(&a.report)?;
            let accuracy = v
                .pointer("/overall/accuracy")
                .or_else(|| v.pointer("/report/overall/accuracy"))
                .and_then(Value::as_f64)
                .ok_or_else(|| LoopError::Record {
                    path: a.report.clone(),
                    message: "no overall.accuracy".into(),
                })?;
            Ok((a.model.clone(), a.seed, accuracy))
        })
        .collect::<Result<_>>()?;
    let n = seeds.len();
    let _ = writeln!(
        md,
        "## Final models (mean ± standard deviation over {n} seed{})\n",
        if n == 1 { "" } else { "s" }
    );
    md.push_str(
        "Compute is what the method spent (tokens generated, judged and trained, wall seconds); \
         the evaluation stages are left out. Win rates against `M_0` pool the per-prompt \
         records of all seeds (fixed judge, both orders; 95% bootstrap interval; wins-losses-ties \
         of n). Judge accuracy: pairwise accuracy of the model as a judge on labelled pairs \
         (`tsr judge-eval`).\n\n",
    );
    md.push_str(
        "| method | iterations | tokens generated | tokens judged | tokens trained | tokens total \
         | wall s | win rate vs M_0 (per seed) | win rate vs M_0 (pooled) | judge accuracy |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    if let Some(m0) = acc.iter().find(|a| a.0 == "m0") {
        let _ = writeln!(
            md,
            "| M_0 (seed model) | 0 | – | – | – | – | – | – | – | {:.3} |",
            m0.2
        );
    }
    for m in &methods {
        let last = m.last();
        let sums = |f: fn(&data::Tokens) -> f64| -> Vec<f64> {
            m.runs
                .values()
                .map(|r| {
                    r.iterations
                        .iter()
                        .filter(|i| i.iteration <= last)
                        .filter_map(|i| i.tokens.as_ref().map(f))
                        .sum()
                })
                .collect()
        };
        let wins_initial: Vec<f64> = m.at(last, |i| i.eval.as_ref()?.vs_initial.as_ref()?.win_rate);
        let mut pooled_initial = Vec::new();
        for r in m.runs.values() {
            // In iteration 1 `M_i` is `M_0`: the comparison is written once, as vs-previous.
            let iter = r.dir.join(format!("iter-{last:03}"));
            let path = [
                iter.join("eval-vs-initial.jsonl"),
                iter.join("eval-vs-previous.jsonl"),
            ]
            .into_iter()
            .find(|p| p.is_file() && (last == 1 || p.ends_with("eval-vs-initial.jsonl")));
            if let Some(path) = path {
                pooled_initial.extend(read_records(&path)?);
            }
        }
        let accs: Vec<f64> = acc.iter().filter(|a| a.0 == m.name).map(|a| a.2).collect();
        let _ = writeln!(
            md,
            "| {} | {last} | {} | {} | {} | {} | {} | {} | {} | {} |",
            md_escape(m.name),
            cell(&sums(|t| t.generated), 0, n),
            cell(&sums(|t| t.judged), 0, n),
            cell(&sums(|t| t.trained), 0, n),
            cell(&sums(data::Tokens::total), 0, n),
            cell(&m.at(last, |i| i.cumulative_wall_s), 0, n),
            cell(&wins_initial, 3, n),
            if pooled_initial.is_empty() {
                "–".into()
            } else {
                win_text(&tally(&pooled_initial, 0))
            },
            cell(&accs, 3, n),
        );
    }
    md.push('\n');

    if !pooled.is_empty() {
        md.push_str("## Head to head (final models, fixed judge, both orders)\n\n");
        md.push_str(
            "| model | baseline | win rate per seed | pooled win rate [95% CI] (W-L-T of n) |\n",
        );
        md.push_str("|---|---|---|---|\n");
        for (key, r) in &pooled {
            let seeds_text: Vec<String> = per_seed[key]
                .iter()
                .map(|(s, it, r)| {
                    let it = it.map_or(String::new(), |it| format!(" (iteration {it})"));
                    match r.win_rate {
                        Some(w) => format!("{s}: {w:.3}{it}"),
                        None => format!("{s}: –{it}"),
                    }
                })
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                md_escape(&key.0),
                md_escape(&key.1),
                seeds_text.join(", "),
                win_text(r)
            );
        }
        md.push('\n');
    }

    let _ = writeln!(
        md,
        "## Per iteration (mean ± standard deviation over seeds)\n\n\
         Scores are the judge's (`M_i`'s) means over the final training pairs; the gap is chosen \
         minus rejected; cosine is the similarity of chosen and rejected hidden states under \
         `M_i`; the DPO margin is the mean over the last epoch's steps of training `M_{{i+1}}`; \
         tokens and wall seconds are cumulative, evaluation excluded. Rows marked \
         *continued* are iterations past the method's final one, run only for the equal-compute \
         comparison.\n"
    );
    md.push_str(
        "| method | iteration | pairs | chosen | rejected | gap | cosine | DPO margin | anchored \
         share | future-guided share | win rate vs M_0 | tokens (cumulative) | wall s \
         (cumulative) |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for m in &methods {
        for it in 1..=m.reached() {
            let c = |f: fn(&Iteration) -> Option<f64>, d: usize| cell(&m.at(it, f), d, n);
            let name = if it > m.last() {
                format!("{} (continued)", m.name)
            } else {
                m.name.to_string()
            };
            let _ = writeln!(
                md,
                "| {} | {it} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                md_escape(&name),
                c(|i| i.pairs, 1),
                c(|i| i.chosen, 3),
                c(|i| i.rejected, 3),
                c(|i| i.gap, 3),
                c(|i| i.similarity, 4),
                c(|i| i.dpo.as_ref()?.reward_margin, 3),
                c(|i| i.anchored_share, 2),
                c(|i| i.future_share, 2),
                c(|i| i.eval.as_ref()?.vs_initial.as_ref()?.win_rate, 3),
                c(|i| i.cumulative_tokens, 0),
                c(|i| i.cumulative_wall_s, 0),
            );
        }
    }
    md.push('\n');

    if !input.charts.is_empty() {
        md.push_str("## Charts\n\n");
        for c in &input.charts {
            let _ = writeln!(
                md,
                "### {}\n\n{}\n\n![{}]({}{})\n",
                md_escape(&c.title),
                c.description,
                md_escape(&c.title),
                input.chart_prefix,
                c.file
            );
        }
    }

    if !input.outro.is_empty() {
        md.push_str(&input.outro);
        if !input.outro.ends_with("\n\n") {
            md.push_str("\n\n");
        }
    }
    md.push_str("## Runs\n\n| method | seed | folder | iterations | real results |\n|---|---|---|---|---|\n");
    for (spec, run) in input.runs.iter().zip(&loaded) {
        let _ = writeln!(
            md,
            "| {} | {} | `{}` | {} | {} |",
            md_escape(&spec.method),
            spec.seed,
            md_escape(
                &input
                    .display_root
                    .as_deref()
                    .and_then(|root| spec.dir.strip_prefix(root).ok())
                    .unwrap_or(&spec.dir)
                    .display()
                    .to_string()
            ),
            run.iterations.len(),
            if run.results_are_real() {
                "yes"
            } else {
                "**NO (test doubles)**"
            }
        );
    }
    Ok(ReproductionOutput {
        markdown: md,
        claims,
    })
}
