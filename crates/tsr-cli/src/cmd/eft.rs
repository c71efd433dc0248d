//! `tsr eft build`: EFT data (judge examples that teach a seed model to judge) as TRL
//! conversational JSON lines, split by prompt into train and held-out files.
//!
//! Sources:
//! * `--from-file FILE`: judged responses `{prompt, response, score[, justification, id]}`,
//!   `score` an integer 0..=5;
//! * `--from-problems FILE --model M --samples N --seed S`: problems `{id, question, answer}`
//!   (answer ending in `#### N`); the model answers each question N times and the verifier
//!   labels each answer correct (`--correct-score`, 5) or incorrect (`--incorrect-score`, 1). The
//!   labelled answers are also written as `labelled.jsonl` (the `--from-file` format).
//!
//! Output in `--out-dir`: `eft-train.jsonl`, `eft-heldout.jsonl`, `manifest.json` (counts, seed,
//! template, source hashes). Prompts that are AlpacaEval instructions or GSM8K test problems are
//! refused (the evaluation data is fetched on first use; `--no-eval-guard` skips the check, and
//! the manifest says so).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tsr_judge::eft::{
    label_with_verifier, read_eft_input, write_examples, SampledAnswer, VerifierLabels,
    VerifierStats,
};
use tsr_judge::evalsets::read_problems;
use tsr_judge::{
    build_eft, ChatMessage, EftInput, EftOptions, GenRequest, JudgeTemplate, Prompt, SamplingParams,
};
use tsr_model::hub::{sha256_file, sha256_hex};
use tsr_model::{load, parse_device, LoadOptions};
use tsr_sample::{Sampler, SamplerOptions};

use super::data::{eval_guard, write_atomic};
use super::generate::request_seed;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Build EFT train and held-out files from judged responses or verified answers.
    Build(BuildArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from_file", "from_problems"])))]
pub struct BuildArgs {
    /// Judged responses: JSON lines `{prompt, response, score[, justification, id]}`.
    #[arg(long, value_name = "FILE.jsonl")]
    from_file: Option<PathBuf>,
    /// Problems with known answers: JSON lines `{id, question, answer}` (`#### N`).
    #[arg(long, value_name = "FILE.jsonl", requires = "model")]
    from_problems: Option<PathBuf>,
    /// The model that answers the problems (built-in name, HF directory or .gguf).
    #[arg(long)]
    model: Option<String>,
    /// Answers sampled per problem.
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Seeds the answers (per problem id) and the held-out split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    #[arg(long, default_value_t = 384)]
    max_new_tokens: usize,
    /// Score of an answer with the right final number.
    #[arg(long, default_value_t = 5)]
    correct_score: u8,
    /// Score of an answer with a wrong or no final number.
    #[arg(long, default_value_t = 1)]
    incorrect_score: u8,
    /// Judge prompt of the user turn: `additive` (the paper's), `short`, or a file with
    /// `{instruction}` and `{response}`.
    #[arg(long, default_value = "additive", value_name = "additive|short|PATH")]
    template: String,
    /// Share of the distinct prompts held out, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
    /// Output folder (created if needed).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Do not check prompts against the evaluation sets (recorded in the manifest).
    #[arg(long)]
    no_eval_guard: bool,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
}

/// `additive`, `short`, or a template file.
pub fn template(spec: &str) -> Result<JudgeTemplate> {
    match JudgeTemplate::builtin(spec) {
        Some(t) => Ok(t),
        None => JudgeTemplate::from_file(Path::new(spec))
            .with_context(|| format!("--template {spec}: not `additive`, `short` or a file")),
    }
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Build(a) => build(a),
    }
}

fn build(args: BuildArgs) -> Result<()> {
    let template = template(&args.template)?;
    let options = EftOptions {
        holdout: args.holdout,
        seed: args.seed,
    };
    // Check the cheap things (and fetch the guard's data) before any model is loaded.
    let guard = if args.no_eval_guard {
        tracing::warn!("--no-eval-guard: prompts are not checked against the evaluation sets");
        None
    } else {
        Some(eval_guard()?)
    };
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;

    let (inputs, source) = match (&args.from_file, &args.from_problems) {
        (Some(path), None) => {
            let inputs = read_eft_input(path)?;
            let source = json!({
                "kind": "file",
                "path": path,
                "sha256": sha256_file(path)?,
            });
            (inputs, source)
        }
        (None, Some(path)) => from_problems(&args, path, guard.as_ref())?,
        _ => bail!("give exactly one of --from-file and --from-problems"),
    };
    let origin = args
        .from_file
        .as_ref()
        .or(args.from_problems.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let split = build_eft(&inputs, &template, &options, guard.as_ref(), &origin)?;

    let mut train = Vec::new();
    write_examples(&mut train, &split.train)?;
    let mut heldout = Vec::new();
    write_examples(&mut heldout, &split.heldout)?;
    let train_path = args.out_dir.join("eft-train.jsonl");
    let heldout_path = args.out_dir.join("eft-heldout.jsonl");
    write_atomic(&train_path, &train)?;
    write_atomic(&heldout_path, &heldout)?;
    let manifest = json!({
        "tsr_version": env!("CARGO_PKG_VERSION"),
        "format": "trl-conversational",
        "source": source,
        "template": {
            "origin": template.origin(),
            "sha256": sha256_hex(template.text().as_bytes()),
        },
        "holdout": args.holdout,
        "seed": args.seed,
        "eval_guard": guard.as_ref().map(|g| json!({
            "sources": g.sources(),
            "prompts": g.len(),
        })),
        "stats": split.stats,
        "files": {
            "train": {"name": "eft-train.jsonl", "sha256": sha256_hex(&train)},
            "heldout": {"name": "eft-heldout.jsonl", "sha256": sha256_hex(&heldout)},
        },
    });
    let mut text = serde_json::to_vec_pretty(&manifest)?;
    text.push(b'\n');
    write_atomic(&args.out_dir.join("manifest.json"), &text)?;
    tracing::info!(
        train = split.stats.train,
        heldout = split.stats.heldout,
        duplicates_dropped = split.stats.duplicates_dropped,
        out_dir = %args.out_dir.display(),
        "eft data written"
    );
    Ok(())
}

/// Source (b): sample answers to the problems and label them with the verifier.
fn from_problems(
    args: &BuildArgs,
    path: &Path,
    guard: Option<&tsr_judge::EvalGuard>,
) -> Result<(Vec<EftInput>, serde_json::Value)> {
    let problems = read_problems(path)?;
    anyhow::ensure!(args.samples > 0, "--samples must be at least 1");
    let labels = VerifierLabels {
        correct: args.correct_score,
        incorrect: args.incorrect_score,
    };
    // Refuse evaluation problems before spending time on sampling.
    if let Some(g) = guard {
        let hits = g.collisions(problems.iter().map(|p| p.question.as_str()));
        if let Some(first) = hits.first() {
            bail!(
                "{}: {} problem(s) are evaluation prompts ({}) and must not be trained on; the first: {}",
                path.display(),
                hits.len(),
                g.sources().join(", "),
                problems[first.index].id
            );
        }
    }
    let spec = args
        .model
        .as_deref()
        .context("--from-problems needs --model")?;
    let loaded = load(
        spec,
        &LoadOptions {
            device: parse_device(&args.device)?,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading model {spec}"))?;
    let mut sampler = Sampler::new(&loaded.model, &loaded.tokenizer)
        .with_generation_config(&loaded.generation)
        .with_options(SamplerOptions {
            max_batch_rows: args.max_batch,
            ..Default::default()
        });
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        ..SamplingParams::default()
    };
    let mut answers = Vec::new();
    let block = (args.max_batch / args.samples).max(1) * 4;
    for chunk in problems.chunks(block) {
        let requests: Vec<GenRequest> = chunk
            .iter()
            .map(|p| GenRequest {
                prompt: Prompt::Chat(vec![ChatMessage::user(p.question.clone())]),
                n: args.samples,
                seed: request_seed(args.seed, &serde_json::Value::from(p.id.clone())),
            })
            .collect();
        let out = sampler
            .sample(&requests, &params)
            .context("sampling answers")?;
        for (p, samples) in chunk.iter().zip(out) {
            for (j, s) in samples.into_iter().enumerate() {
                answers.push(SampledAnswer {
                    problem_id: p.id.clone(),
                    sample: j,
                    response: s.completion.text,
                });
            }
        }
        tracing::info!(
            answers = answers.len(),
            total = problems.len() * args.samples,
            "answers sampled"
        );
    }
    let (inputs, stats): (Vec<EftInput>, VerifierStats) =
        label_with_verifier(&problems, &answers, labels)?;
    let mut labelled = Vec::new();
    for i in &inputs {
        serde_json::to_writer(&mut labelled, i)?;
        labelled.push(b'\n');
    }
    write_atomic(&args.out_dir.join("labelled.jsonl"), &labelled)?;
    tracing::info!(
        correct = stats.correct,
        incorrect = stats.incorrect,
        "answers verified"
    );
    let source = json!({
        "kind": "problems",
        "path": path,
        "sha256": sha256_file(path)?,
        "model": loaded.source,
        "samples": args.samples,
        "sampling": {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens},
        "labels": {"correct": labels.correct, "incorrect": labels.incorrect},
        "verifier": stats,
        "labelled": "labelled.jsonl",
    });
    Ok((inputs, source))
}
