//! Reading a run folder into the numbers the report shows. The iteration summaries are read as
//! [`IterationSummary`], lenient about fields (a missing or null number is `None`: an SR run has
//! no future-guided share, older runs have no `eval`; unknown fields are ignored), strict about
//! files and types (a file that does not parse, or a field of the wrong type, is an error naming
//! the file).

use crate::error::{LoopError, Result};
use crate::fsio;
use crate::summary::{DpoSummary, EvalMatchup, EvalSummary, IterationSummary, StageCompute};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Head-to-head results of one evaluation (`eval.vs_previous` / `eval.vs_initial`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Match {
    pub opponent: Option<String>,
    pub wins: Option<f64>,
    pub losses: Option<f64>,
    pub ties: Option<f64>,
    pub n: Option<f64>,
    pub win_rate: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

/// The per-iteration `eval` object (optional).
#[derive(Clone, Debug, Default)]
pub(crate) struct Eval {
    pub prompts: Option<f64>,
    pub judge: Option<String>,
    pub vs_previous: Option<Match>,
    pub vs_initial: Option<Match>,
}

/// `dpo` / `dpo_future` of an iteration summary.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dpo {
    pub reward_margin: Option<f64>,
    pub reward_accuracy: Option<f64>,
    pub final_loss: Option<f64>,
}

/// One finished iteration.
#[derive(Clone, Debug, Default)]
pub(crate) struct Iteration {
    pub iteration: u32,
    pub method: Option<String>,
    pub pairs: Option<f64>,
    pub chosen: Option<f64>,
    pub rejected: Option<f64>,
    pub gap: Option<f64>,
    pub similarity: Option<f64>,
    pub anchored_share: Option<f64>,
    pub future_share: Option<f64>,
    pub dpo: Option<Dpo>,
    pub dpo_future: Option<Dpo>,
    /// `(stage, wall seconds)` in the order of the summary.
    pub stage_wall: Vec<(String, f64)>,
    pub wall_s: Option<f64>,
    /// This iteration's tokens generated, judged and trained, the `eval` stage excluded (it
    /// measures the method; it is not part of it).
    pub tokens: Option<Tokens>,
    /// Wall seconds of the `eval` stage (0 without one).
    pub eval_wall_s: f64,
    /// Tokens generated + judged + trained up to and including this iteration, `eval` excluded
    /// (summed here).
    pub cumulative_tokens: Option<f64>,
    /// Wall seconds of all iterations up to and including this one, `eval` excluded (summed
    /// here).
    pub cumulative_wall_s: Option<f64>,
    pub results_are_real: Option<bool>,
    pub test_doubles: Vec<String>,
    pub eval: Option<Eval>,
}

/// Tokens of one iteration's work, the `eval` stage excluded.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Tokens {
    pub generated: f64,
    pub judged: f64,
    pub trained: f64,
}

impl Tokens {
    pub fn total(&self) -> f64 {
        self.generated + self.judged + self.trained
    }
}

/// One per-step line of `train-*.jsonl`, placed on a step axis that runs across iterations.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub global_step: f64,
    pub margin: Option<f64>,
    pub accuracy: Option<f64>,
    pub loss: Option<f64>,
}

/// Everything the report needs from one run folder.
#[derive(Clone, Debug)]
pub(crate) struct RunData {
    pub dir: PathBuf,
    /// The label of the run's series (the folder name, made unique).
    pub label: String,
    pub method: Option<String>,
    pub iterations: Vec<Iteration>,
    /// `train-model.jsonl` of every iteration, one step axis.
    pub steps_model: Vec<Step>,
    /// `train-model-future.jsonl` (TSR only).
    pub steps_future: Vec<Step>,
    pub provenance: Option<Value>,
    pub run_json: Option<Value>,
}

impl RunData {
    /// Test doubles named anywhere in the run (provenance or an iteration summary).
    pub fn test_doubles(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .provenance
            .as_ref()
            .map(|p| strings(p.get("test_doubles")))
            .unwrap_or_default();
        for it in &self.iterations {
            all.extend(it.test_doubles.iter().cloned());
        }
        all.sort();
        all.dedup();
        all
    }

    /// False when any iteration says `results_are_real: false` or a test double was used.
    pub fn results_are_real(&self) -> bool {
        self.test_doubles().is_empty()
            && self
                .iterations
                .iter()
                .all(|i| i.results_are_real != Some(false))
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite())
}

fn count(x: Option<usize>) -> Option<f64> {
    x.map(|x| x as f64)
}

fn dpo(d: &DpoSummary) -> Dpo {
    Dpo {
        reward_margin: finite(d.reward_margin),
        reward_accuracy: finite(d.reward_accuracy),
        final_loss: finite(d.final_loss),
    }
}

fn matchup(m: &EvalMatchup) -> Match {
    Match {
        opponent: m.opponent.clone(),
        wins: count(m.wins),
        losses: count(m.losses),
        ties: count(m.ties),
        n: count(m.n),
        win_rate: finite(m.win_rate),
        ci_low: finite(m.ci_low),
        ci_high: finite(m.ci_high),
    }
}

fn eval(e: &EvalSummary) -> Eval {
    Eval {
        prompts: count(e.prompts),
        judge: e.judge.clone(),
        vs_previous: e.vs_previous.as_ref().map(matchup),
        vs_initial: e.vs_initial.as_ref().map(matchup),
    }
}

fn iteration(s: &IterationSummary, index: usize) -> Iteration {
    let compute = &s.compute;
    let stage_wall = compute
        .stages
        .iter()
        .filter_map(|(k, st)| finite(st.wall_s).map(|w| (k.clone(), w)))
        .collect();
    let no_eval = StageCompute::default();
    let eval_stage = compute.stages.get("eval").unwrap_or(&no_eval);
    // (this iteration's tokens, the eval stage's share of them)
    let parts = [
        (compute.tokens_generated, eval_stage.tokens_generated),
        (compute.tokens_judged, eval_stage.tokens_judged),
        (compute.tokens_trained, eval_stage.tokens_trained),
    ];
    let tokens = parts.iter().any(|(all, _)| all.is_some()).then(|| {
        let [g, j, t] =
            parts.map(|(all, eval)| (all.unwrap_or(0) as f64 - eval.unwrap_or(0) as f64).max(0.0));
        Tokens {
            generated: g,
            judged: j,
            trained: t,
        }
    });
    Iteration {
        iteration: s.iteration.unwrap_or(index as u32 + 1),
        method: s.method.map(|m| m.as_str().to_string()),
        pairs: count(s.pairs),
        chosen: finite(s.chosen_score_mean),
        rejected: finite(s.rejected_score_mean),
        gap: finite(s.score_gap),
        similarity: finite(s.similarity_mean),
        anchored_share: finite(s.rejected_from_initial_share),
        future_share: finite(s.chosen_from_future_share),
        dpo: s.dpo.as_ref().map(dpo),
        dpo_future: s.dpo_future.as_ref().map(dpo),
        stage_wall,
        wall_s: finite(compute.wall_s),
        tokens,
        eval_wall_s: finite(eval_stage.wall_s).unwrap_or(0.0),
        cumulative_tokens: None,
        cumulative_wall_s: None,
        results_are_real: s.results_are_real,
        test_doubles: s.test_doubles.clone(),
        eval: s.eval.as_ref().map(eval),
    }
}

/// The iteration summaries and the file they come from: `summary.json`, else the
/// `kind: "iteration"` lines of `metrics.jsonl`.
fn summaries(dir: &Path) -> Result<(PathBuf, Vec<Value>)> {
    let summary = dir.join("summary.json");
    if summary.is_file() {
        let v: Value = fsio::read_json(&summary)?;
        return match v.get("iterations") {
            Some(Value::Array(a)) => Ok((summary, a.clone())),
            _ => Err(LoopError::Record {
                path: summary,
                message: "no `iterations` array".into(),
            }),
        };
    }
    let metrics = dir.join("metrics.jsonl");
    if metrics.is_file() {
        let lines: Vec<Value> = fsio::read_jsonl(&metrics)?;
        let its = lines
            .into_iter()
            .filter(|l| l.get("kind").and_then(Value::as_str) == Some("iteration"))
            .collect();
        return Ok((metrics, its));
    }
    Err(LoopError::RunDir {
        path: dir.to_path_buf(),
        message: "not a run folder: neither summary.json nor metrics.jsonl".into(),
    })
}

fn optional_json(path: &Path) -> Result<Option<Value>> {
    if path.is_file() {
        fsio::read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Per-step lines of `iter-NNN/train-{name}.jsonl` for every iteration, the step numbers of
/// later iterations continuing after the last step of earlier ones.
fn steps(dir: &Path, iterations: &[Iteration], name: &str) -> Result<Vec<Step>> {
    let mut out = Vec::new();
    let mut offset = 0.0;
    for it in iterations {
        let path = dir
            .join(format!("iter-{:03}", it.iteration))
            .join(format!("train-{name}.jsonl"));
        if !path.is_file() {
            continue;
        }
        let lines: Vec<Value> = fsio::read_jsonl(&path)?;
        let mut last = offset;
        for (i, l) in lines.iter().enumerate() {
            if !l.is_object() {
                return Err(LoopError::Record {
                    path,
                    message: format!("record {}: not a JSON object", i + 1),
                });
            }
            let step = num(l, "step").unwrap_or(i as f64 + 1.0);
            let global_step = offset + step;
            last = f64::max(last, global_step);
            out.push(Step {
                global_step,
                margin: num(l, "rewards/margins"),
                accuracy: num(l, "rewards/accuracies"),
                loss: num(l, "loss"),
            });
        }
        offset = last;
    }
    Ok(out)
}

/// Read one run folder.
pub(crate) fn load_run(dir: &Path) -> Result<RunData> {
    if !dir.is_dir() {
        return Err(LoopError::RunDir {
            path: dir.to_path_buf(),
            message: "not a folder".into(),
        });
    }
    let (path, summaries) = summaries(dir)?;
    let mut iterations = Vec::with_capacity(summaries.len());
    for (i, s) in summaries.iter().enumerate() {
        let bad = |message: String| LoopError::Record {
            path: path.clone(),
            message,
        };
        if !s.is_object() {
            return Err(bad(format!(
                "iteration entry {} is not a JSON object",
                i + 1
            )));
        }
        let summary = IterationSummary::deserialize(s)
            .map_err(|e| bad(format!("iteration entry {}: {e}", i + 1)))?;
        iterations.push(iteration(&summary, i));
    }
    if iterations.is_empty() {
        return Err(LoopError::RunDir {
            path: dir.to_path_buf(),
            message: "no finished iteration to report".into(),
        });
    }
    iterations.sort_by_key(|i| i.iteration);
    let (mut wall, mut tokens) = (Some(0.0), Some(0.0));
    for it in &mut iterations {
        wall = wall.zip(it.wall_s).map(|(a, b)| a + b - it.eval_wall_s);
        tokens = tokens.zip(it.tokens).map(|(a, b)| a + b.total());
        it.cumulative_wall_s = wall;
        it.cumulative_tokens = tokens;
    }
    let method = iterations.iter().find_map(|i| i.method.clone());
    Ok(RunData {
        label: String::new(),
        method,
        steps_model: steps(dir, &iterations, "model")?,
        steps_future: steps(dir, &iterations, "model-future")?,
        provenance: optional_json(&dir.join("provenance.json"))?,
        run_json: optional_json(&dir.join("run.json"))?,
        iterations,
        dir: dir.to_path_buf(),
    })
}

/// Series labels: each run's folder name, with ` (2)`, ` (3)` ... added to repeated names.
pub(crate) fn label_runs(runs: &mut [RunData]) {
    let names: Vec<String> = runs
        .iter()
        .map(|r| {
            let canon = std::fs::canonicalize(&r.dir).unwrap_or_else(|_| r.dir.clone());
            canon
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| r.dir.display().to_string())
        })
        .collect();
    for (i, r) in runs.iter_mut().enumerate() {
        let before = names[..i].iter().filter(|n| **n == names[i]).count();
        r.label = if before == 0 {
            names[i].clone()
        } else {
            format!("{} ({})", names[i], before + 1)
        };
    }
}
