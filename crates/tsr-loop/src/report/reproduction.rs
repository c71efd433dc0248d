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

use super::data::{self, Iteration, RunData};
use super::{md_escape, ChartFile};
use crate::error::{LoopError, Result};
use crate::fsio;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tsr_judge::winrate::{tally, WinRateRecord, WinRateReport};

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
    /// The method whose final model is the baseline ([`EQUAL_COMPUTE`] for SR's model at the
    /// iteration nearest in compute to TSR's final model).
    pub baseline: String,
    /// The baseline run's iteration that was compared, when it is not its final one.
    pub baseline_iteration: Option<u32>,
    pub records: PathBuf,
}

/// The baseline label of the head-to-head of TSR's final model against SR's model at the
/// iteration whose cumulative compute is nearest TSR's ([`equal_compute_iteration`]).
pub const EQUAL_COMPUTE: &str = "sr (equal compute)";

/// Cumulative compute (tokens generated + judged + trained, evaluation excluded) after each
/// finished iteration of a run folder: `(iteration, tokens)`, in order.
pub fn cumulative_compute(dir: &Path) -> Result<Vec<(u32, f64)>> {
    let run = data::load_run(dir)?;
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

/// A judge-accuracy report (`tsr judge-eval --out FILE`) of one model.
#[derive(Clone, Debug)]
pub struct Accuracy {
    /// A method (its final model) or `m0`.
    pub model: String,
    /// `None` for a model shared by all seeds (`M_0`).
    pub seed: Option<u64>,
    pub report: PathBuf,
}

/// Everything [`reproduction_report`] reads.
#[derive(Clone, Debug, Default)]
pub struct ReproductionInput {
    pub title: String,
    /// Markdown placed after the title: how the runs were made (command, settings, models).
    pub intro: String,
    pub runs: Vec<ReproRun>,
    pub head_to_head: Vec<HeadToHead>,
    pub accuracy: Vec<Accuracy>,
    /// Charts to show (from [`super::write_report`]), linked as `chart_prefix` + file name.
    pub charts: Vec<ChartFile>,
    pub chart_prefix: String,
    /// Markdown placed at the end (before the list of runs): what the results do and do not say.
    pub outro: String,
    /// Run folders are listed relative to this folder when they are inside it.
    pub display_root: Option<PathBuf>,
}

/// The outcome of one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The criterion held.
    Reproduced,
    /// The criterion did not hold.
    NotReproduced,
    /// The data show the opposite of the claim (a significant difference the other way).
    Contradicted,
    /// The runs lack what the criterion needs (e.g. no SR run with two iterations).
    NoData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reproduced => "reproduced",
            Self::NotReproduced => "not reproduced",
            Self::Contradicted => "contradicted",
            Self::NoData => "no data",
        }
    }
}

/// One claim of the paper, the rule that decides it here, and what was measured.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Claim {
    pub claim: &'static str,
    pub criterion: &'static str,
    pub measured: String,
    pub verdict: Verdict,
}

/// The claims and their fixed criteria, in the order of the report.
pub const CLAIMS: [(&str, &str); 5] = [
    (
        "(a1) Under SR the score gap between chosen and rejected collapses over iterations",
        "SR's mean gap at its last iteration is at most half its mean gap at iteration 1, and \
         it fell in every seed",
    ),
    (
        "(a2) Under SR the chosen and rejected hidden states grow more similar",
        "SR's mean cosine at its last iteration is above iteration 1's, and it rose in every \
         seed",
    ),
    (
        "(a3) Under TSR the gap holds",
        "TSR's mean gap at iteration 2 is at least 0.8 x its iteration-1 gap and at least SR's \
         mean gap at iteration 2",
    ),
    (
        "(b) TSR after 2 iterations beats SR after 4 at about the same compute",
        "the pooled head-to-head win rate of TSR's final model over SR's (fixed judge, both \
         orders, every seed) is above 0.5 with its 95% interval above 0.5 (below 0.5 with the \
         interval below 0.5: contradicted); the compute ratio is reported beside it",
    ),
    (
        "(b2) TSR's final model beats SR's at equal measured compute",
        "as (b), against SR's model at the iteration whose cumulative compute (tokens generated \
         + judged + trained) is nearest TSR's final model's, per seed (SR continued past 4 \
         iterations while its next iteration would land nearer)",
    ),
];

/// What [`reproduction_report`] made.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReproductionOutput {
    pub markdown: String,
    pub claims: Vec<Claim>,
}

/// Mean and sample standard deviation (0 for one value); `None` for no values.
fn mean_sd(values: &[f64]) -> Option<(f64, f64, usize)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some((mean, sd, n))
}

fn cell(values: &[f64], decimals: usize, seeds: usize) -> String {
    match mean_sd(values) {
        None => "–".into(),
        Some((m, sd, n)) => {
            let missing = if n < seeds {
                format!(" (n={n})")
            } else {
                String::new()
            };
            format!("{m:.decimals$} ± {sd:.decimals$}{missing}")
        }
    }
}

/// One seed's head-to-head result: the seed, the baseline's iteration when it is not its final
/// one, and the tally.
type SeedResult = (u64, Option<u32>, WinRateReport);

/// The runs of one method, keyed by seed.
struct Method<'a> {
    name: &'a str,
    runs: BTreeMap<u64, &'a RunData>,
    /// [`ReproRun::iterations`] per seed (0: the run's last).
    caps: BTreeMap<u64, u32>,
}

impl Method<'_> {
    /// Values of `f` at iteration `it` over the seeds that have it.
    fn at(&self, it: u32, f: impl Fn(&Iteration) -> Option<f64>) -> Vec<f64> {
        self.runs
            .values()
            .filter_map(|r| r.iterations.iter().find(|i| i.iteration == it))
            .filter_map(f)
            .collect()
    }

    /// The method's final iteration: the largest every run reached, capped by the runs'
    /// [`ReproRun::iterations`].
    fn last(&self) -> u32 {
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
    fn reached(&self) -> u32 {
        self.runs
            .values()
            .map(|r| r.iterations.last().map_or(0, |i| i.iteration))
            .max()
            .unwrap_or(0)
    }

    /// `(first, last)` of `f` per seed, for seeds with both.
    fn ends(&self, f: impl Fn(&Iteration) -> Option<f64>, last: u32) -> Vec<(f64, f64)> {
        self.runs
            .values()
            .filter_map(|r| {
                let at = |n: u32| r.iterations.iter().find(|i| i.iteration == n).and_then(&f);
                Some((at(1)?, at(last)?))
            })
            .collect()
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    mean_sd(v).map(|(m, _, _)| m)
}

fn read_records(path: &Path) -> Result<Vec<WinRateRecord>> {
    let rows: Vec<Value> = fsio::read_jsonl(path)?;
    rows.into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| LoopError::Record {
                path: path.to_path_buf(),
                message: format!("record {}: {e}", i + 1),
            })
        })
        .collect()
}

fn win_text(r: &WinRateReport) -> String {
    match (r.win_rate, r.ci_low, r.ci_high) {
        (Some(w), Some(lo), Some(hi)) => format!(
            "{w:.3} [{lo:.3}, {hi:.3}] ({}-{}-{} of {})",
            r.wins, r.losses, r.ties, r.n
        ),
        _ => format!("– (0 of {} scored)", r.prompts),
    }
}

fn gap_claim(sr: Option<&Method<'_>>) -> (String, Verdict) {
    let Some(sr) = sr.filter(|m| m.last() >= 2) else {
        return ("no SR run with two iterations".into(), Verdict::NoData);
    };
    let last = sr.last();
    let ends = sr.ends(|i| i.gap, last);
    let (first, end): (Vec<f64>, Vec<f64>) = ends.iter().copied().unzip();
    let (Some(f), Some(e)) = (mean(&first), mean(&end)) else {
        return ("SR runs without score gaps".into(), Verdict::NoData);
    };
    let per_seed: Vec<String> = ends.iter().map(|(a, b)| format!("{a:.3}→{b:.3}")).collect();
    let every = ends.iter().all(|(a, b)| b < a);
    let text = format!(
        "mean gap {f:.3} at iteration 1, {e:.3} at iteration {last} (ratio {}); per seed {}",
        ratio(e, f),
        per_seed.join(", ")
    );
    let ok = f > 0.0 && e <= 0.5 * f && every;
    (
        text,
        if ok {
            Verdict::Reproduced
        } else {
            Verdict::NotReproduced
        },
    )
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "undefined".into()
    } else {
        format!("{:.2}", a / b)
    }
}

fn similarity_claim(sr: Option<&Method<'_>>) -> (String, Verdict) {
    let Some(sr) = sr.filter(|m| m.last() >= 2) else {
        return ("no SR run with two iterations".into(), Verdict::NoData);
    };
    let last = sr.last();
    let ends = sr.ends(|i| i.similarity, last);
    let (first, end): (Vec<f64>, Vec<f64>) = ends.iter().copied().unzip();
    let (Some(f), Some(e)) = (mean(&first), mean(&end)) else {
        return ("SR runs without similarity".into(), Verdict::NoData);
    };
    let per_seed: Vec<String> = ends.iter().map(|(a, b)| format!("{a:.4}→{b:.4}")).collect();
    let ok = e > f && ends.iter().all(|(a, b)| b > a);
    (
        format!(
            "mean cosine {f:.4} at iteration 1, {e:.4} at iteration {last}; per seed {}",
            per_seed.join(", ")
        ),
        if ok {
            Verdict::Reproduced
        } else {
            Verdict::NotReproduced
        },
    )
}

fn holds_claim(sr: Option<&Method<'_>>, tsr: Option<&Method<'_>>) -> (String, Verdict) {
    let (Some(sr), Some(tsr)) = (sr, tsr) else {
        return ("needs SR and TSR runs".into(), Verdict::NoData);
    };
    if sr.last() < 2 || tsr.last() < 2 {
        return (
            "needs SR and TSR runs with two iterations".into(),
            Verdict::NoData,
        );
    }
    let (Some(t1), Some(t2), Some(s2)) = (
        mean(&tsr.at(1, |i| i.gap)),
        mean(&tsr.at(2, |i| i.gap)),
        mean(&sr.at(2, |i| i.gap)),
    ) else {
        return ("runs without score gaps".into(), Verdict::NoData);
    };
    let ok = t2 >= 0.8 * t1 && t2 >= s2;
    (
        format!(
            "TSR mean gap {t1:.3} at iteration 1, {t2:.3} at iteration 2 (ratio {}); SR's at \
             iteration 2: {s2:.3}",
            ratio(t2, t1)
        ),
        if ok {
            Verdict::Reproduced
        } else {
            Verdict::NotReproduced
        },
    )
}

fn total_tokens(m: &Method<'_>) -> Vec<f64> {
    let last = m.last();
    m.at(last, |i| i.cumulative_tokens)
}

fn win_verdict(r: &WinRateReport) -> Verdict {
    match (r.win_rate, r.ci_low, r.ci_high) {
        (Some(w), Some(lo), _) if w > 0.5 && lo > 0.5 => Verdict::Reproduced,
        (Some(w), _, Some(hi)) if w < 0.5 && hi < 0.5 => Verdict::Contradicted,
        (Some(_), _, _) => Verdict::NotReproduced,
        _ => Verdict::NoData,
    }
}

fn beats_claim(
    pooled: &BTreeMap<(String, String), WinRateReport>,
    sr: Option<&Method<'_>>,
    tsr: Option<&Method<'_>>,
) -> (String, Verdict) {
    let Some(r) = pooled.get(&("tsr".to_string(), "sr".to_string())) else {
        return ("no head-to-head of TSR against SR".into(), Verdict::NoData);
    };
    let compute = match (sr.map(total_tokens), tsr.map(total_tokens)) {
        (Some(s), Some(t)) => match (mean(&s), mean(&t)) {
            (Some(s), Some(t)) => format!(
                "; compute (tokens generated + judged + trained): TSR {t:.0}, SR {s:.0}, ratio {}",
                ratio(t, s)
            ),
            _ => String::new(),
        },
        _ => String::new(),
    };
    (
        format!("TSR over SR: {}{compute}", win_text(r)),
        win_verdict(r),
    )
}

fn equal_compute_claim(
    pooled: &BTreeMap<(String, String), WinRateReport>,
    matched: &[(u64, Option<u32>)],
    sr: Option<&Method<'_>>,
    tsr: Option<&Method<'_>>,
) -> (String, Verdict) {
    let key = ("tsr".to_string(), EQUAL_COMPUTE.to_string());
    let Some(r) = pooled.get(&key) else {
        return (
            "no head-to-head of TSR against SR at equal compute".into(),
            Verdict::NoData,
        );
    };
    let mut per_seed = Vec::new();
    for &(seed, it) in matched {
        let of = |m: Option<&Method<'_>>, it: u32| {
            m.and_then(|m| m.runs.get(&seed))
                .and_then(|r| r.iterations.iter().find(|i| i.iteration == it))
                .and_then(|i| i.cumulative_tokens)
        };
        let t_last = tsr.map_or(0, Method::last);
        match (it, of(tsr, t_last)) {
            (Some(it), Some(t)) => match of(sr, it) {
                Some(s) => per_seed.push(format!(
                    "seed {seed}: SR iteration {it}, TSR/SR compute {}",
                    ratio(t, s)
                )),
                None => per_seed.push(format!("seed {seed}: SR iteration {it}")),
            },
            _ => per_seed.push(format!("seed {seed}: –")),
        }
    }
    (
        format!("TSR over SR: {}; {}", win_text(r), per_seed.join(", ")),
        win_verdict(r),
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let (m, sd, n) = mean_sd(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((m, n), (2.0, 3));
        assert!((sd - 1.0).abs() < 1e-12);
        assert_eq!(mean_sd(&[5.0]), Some((5.0, 0.0, 1)));
        assert_eq!(mean_sd(&[]), None);
        assert_eq!(cell(&[1.0, 3.0], 2, 3), "2.00 ± 1.41 (n=2)");
    }
}
