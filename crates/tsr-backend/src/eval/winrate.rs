//! Win rate of a model's answers over a baseline's, judged pairwise in both orders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tsr_judge::{
    win_rate, LlmPairwiseJudge, Matchup, PairwiseJudge, PairwiseMode, PairwiseSettings,
    PairwiseTemplate, RuleJudge, SamplingParams, StyleRule, WinRateReport,
};
use tsr_loop::fsio::write_jsonl;
use tsr_loop::PromptRecord;

use super::{
    alpaca_prompts, answer_all, create_out, file_sha256, jsonl_sha256, limit, model_identity,
    read_answers, read_prompt_file, write_result, Answer, Generation,
};
use crate::local::{batch_sampler, load_model};

/// One side of the comparison.
#[derive(Clone, Debug)]
pub enum Side {
    /// A model (built-in name, Hugging Face folder or .gguf file) that answers the prompts; its
    /// answers are written to `answers-model.jsonl` or `answers-baseline.jsonl`.
    Model(String),
    /// Answers read from a file (JSON lines `{id, response}`, as the evaluation writes them).
    Answers(PathBuf),
}

/// Who compares the answers.
#[derive(Clone, Debug)]
pub enum WinrateJudge {
    /// A judge model's pairwise verdicts.
    Model(String),
    /// A style rule (`starts-with:TEXT`, `ends-with:TEXT`, `contains:TEXT`): prefers the answer
    /// with that trait; it checks a style, not quality.
    Rule(String),
}

/// How a judge model gives pairwise verdicts.
#[derive(Clone, Debug)]
pub struct PairwiseOptions {
    /// `direct` (probabilities of A/B/tie after `Winner:`) or `sampled`.
    pub mode: PairwiseMode,
    /// A prompt with `{instruction}`, `{response_a}`, `{response_b}` (`None`: the built-in one).
    pub template: Option<PathBuf>,
    /// Sampled verdicts: generation limit per verdict.
    pub max_new_tokens: usize,
    /// Direct verdicts: below this probability mass on A/B/tie a verdict is unread.
    pub min_mass: f64,
    /// Direct verdicts: how many most likely next tokens are read for A/B/tie.
    pub top_logprobs: usize,
}

/// What [`winrate`] compares, and how.
#[derive(Clone, Debug)]
pub struct WinrateOptions {
    pub model: Side,
    pub baseline: Side,
    /// Prompts (JSON lines `{id, prompt}`); `None`: the AlpacaEval instructions.
    pub prompts: Option<PathBuf>,
    /// Only the first N prompts.
    pub limit: Option<usize>,
    pub judge: WinrateJudge,
    pub pairwise: PairwiseOptions,
    pub generation: Generation,
    /// Output folder: result.json, records.jsonl, and the answers generated.
    pub out: PathBuf,
}

/// What [`winrate`] found.
#[derive(Debug)]
pub struct WinrateOutcome {
    pub report: WinRateReport,
    /// The `result.json` written.
    pub result: PathBuf,
}

/// One side of the comparison: its answers and its identity.
fn side(
    side: &Side,
    prompts: &[PromptRecord],
    options: &WinrateOptions,
    label: &str,
) -> Result<(HashMap<String, Answer>, Value)> {
    let spec = match side {
        Side::Answers(path) => return answers_file(path),
        Side::Model(spec) => spec,
    };
    let gen = &options.generation;
    let loaded = load_model(spec, gen.device)?;
    let identity = model_identity(spec, &loaded.source)?;
    let answers = answer_all(
        &loaded,
        prompts,
        1,
        &gen.params(256),
        gen.seed,
        gen.max_batch,
        label,
    )?;
    let flat: Vec<Answer> = answers.into_iter().flatten().collect();
    write_jsonl(&options.out.join(format!("answers-{label}.jsonl")), &flat)?;
    Ok((
        flat.into_iter().map(|a| (a.id.clone(), a)).collect(),
        identity,
    ))
}

fn answers_file(path: &Path) -> Result<(HashMap<String, Answer>, Value)> {
    let rows = read_answers(path)?;
    let mut by_id = HashMap::new();
    for a in rows {
        let id = a.id.clone();
        ensure!(
            by_id.insert(id.clone(), a).is_none(),
            "{}: duplicate id {id}",
            path.display()
        );
    }
    let identity = json!({"answers": path, "sha256": file_sha256(path)?});
    Ok((by_id, identity))
}

/// Compares the model's answers with the baseline's on every prompt, in both orders, and writes
/// `result.json` and `records.jsonl` (and the answers it generated) into `options.out`. The
/// judge settings and the rule are checked before any model is loaded.
pub fn winrate(options: &WinrateOptions) -> Result<WinrateOutcome> {
    // Everything that can be checked before loading models.
    let p = &options.pairwise;
    let settings = PairwiseSettings {
        mode: p.mode,
        template: match &p.template {
            Some(p) => PairwiseTemplate::from_file(p)?,
            None => PairwiseTemplate::default(),
        },
        params: SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: p.max_new_tokens,
            ..SamplingParams::default()
        },
        seed: options.generation.seed,
        min_mass: p.min_mass,
        top_logprobs: p.top_logprobs,
        ..PairwiseSettings::default()
    };
    settings.validate()?;
    // The rule parsed, or the judge model to load once the answers are there.
    let rule = match &options.judge {
        WinrateJudge::Rule(r) => Some(StyleRule::parse(r)?),
        WinrateJudge::Model(_) => None,
    };
    create_out(&options.out)?;

    let (prompts, prompt_source) = match &options.prompts {
        Some(p) => (read_prompt_file(p)?, json!({"file": p})),
        None => (
            alpaca_prompts()?.into_iter().map(|(p, _)| p).collect(),
            json!({"alpaca_eval": "the 805 AlpacaEval instructions"}),
        ),
    };
    let prompts = limit(prompts, options.limit);
    ensure!(!prompts.is_empty(), "no prompts to evaluate on");

    let (model_answers, model_id) = side(&options.model, &prompts, options, "model")?;
    let (baseline_answers, baseline_id) = side(&options.baseline, &prompts, options, "baseline")?;
    let matchups: Vec<Matchup> = prompts
        .iter()
        .map(|p| {
            let get = |side: &HashMap<String, Answer>, which: &str| {
                side.get(&p.id)
                    .map(|a| a.response.clone())
                    .with_context(|| {
                        format!("the {which} answers have no answer for prompt {}", p.id)
                    })
            };
            Ok(Matchup {
                id: p.id.clone(),
                instruction: p.prompt.clone(),
                model: get(&model_answers, "model")?,
                baseline: get(&baseline_answers, "baseline")?,
            })
        })
        .collect::<Result<_>>()?;

    let judge_loaded;
    let judge_id;
    let mut judge: Box<dyn PairwiseJudge + '_>;
    match (rule, &options.judge) {
        (Some(rule), _) => {
            judge_id = json!({"rule": rule.to_string()});
            judge = Box::new(RuleJudge { rule });
        }
        (None, WinrateJudge::Rule(_)) => unreachable!("a rule judge has its rule parsed"),
        (None, WinrateJudge::Model(spec)) => {
            judge_loaded = load_model(spec, options.generation.device)?;
            judge_id = model_identity(spec, &judge_loaded.source)?;
            judge = Box::new(LlmPairwiseJudge::new(
                batch_sampler(&judge_loaded, options.generation.max_batch),
                settings,
            )?);
        }
    }
    tracing::info!(prompts = matchups.len(), judge = %judge.describe(), "judging both orders");
    let seed = options.generation.seed;
    let (report, records) = win_rate(judge.as_mut(), &matchups, seed)?;
    write_jsonl(&options.out.join("records.jsonl"), &records)?;
    let result = json!({
        "tsr_version": env!("CARGO_PKG_VERSION"),
        "eval": "winrate",
        "model": model_id,
        "baseline": baseline_id,
        "judge": {"identity": judge_id, "settings": judge.describe()},
        "prompts": {"source": prompt_source, "count": prompts.len(), "sha256": jsonl_sha256(&prompts)},
        "generation": options.generation.params(256),
        "seed": seed,
        "report": report,
    });
    let path = write_result(&options.out, &result)?;
    tracing::info!(
        win_rate = ?report.win_rate, ci_low = ?report.ci_low, ci_high = ?report.ci_high,
        wins = report.wins, losses = report.losses, ties = report.ties, unscored = report.unscored,
        result = %path.display(), "win rate"
    );
    Ok(WinrateOutcome {
        report,
        result: path,
    })
}
