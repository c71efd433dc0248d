//! EFT data files (`tsr eft build`): judge examples that teach a seed model to judge, as TRL
//! conversational JSON lines, split by prompt into train and held-out files.
//!
//! Sources ([`EftSource`]):
//! * a file of judged responses `{prompt, response, score[, justification, id]}`, `score` an
//!   integer 0..=5;
//! * problems `{id, question, answer}` (answer ending in `#### N`); a model answers each question
//!   `samples` times and the verifier labels each answer correct or incorrect. The labelled
//!   answers are also written as `labelled.jsonl` (the judged-responses format).
//!
//! [`build_eft_files`] writes into the output folder: `eft-train.jsonl`, `eft-heldout.jsonl`,
//! `manifest.json` (counts, seed, template, source hashes). Prompts that are AlpacaEval
//! instructions or GSM8K test problems are refused (the evaluation data is fetched on first use;
//! without the guard the manifest says so).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::write_atomic;
use tsr_judge::eft::{
    label_with_verifier, read_eft_input, write_examples, EftStats, SampledAnswer, VerifierLabels,
    VerifierStats,
};
use tsr_judge::evalsets::read_problems;
use tsr_judge::{
    build_eft, ChatMessage, EftInput, EftOptions, GenRequest, JudgeTemplate, Prompt, SamplingParams,
};
use tsr_model::hub::{sha256_file, sha256_hex};
use tsr_model::{load, Device, LoadOptions};
use tsr_sample::{Sampler, SamplerOptions};

use crate::eval_data::eval_guard;

/// Where the judged responses come from.
#[derive(Debug, Clone)]
pub enum EftSource {
    /// Judged responses: JSON lines `{prompt, response, score[, justification, id]}`.
    File(PathBuf),
    /// Problems with known answers, answered by a model and labelled by the verifier.
    Problems(ProblemSource),
}

/// Problems `{id, question, answer}` (`#### N`) and how they are answered and labelled.
#[derive(Debug, Clone)]
pub struct ProblemSource {
    pub path: PathBuf,
    /// The model that answers the problems (built-in name, HF directory or .gguf).
    pub model: String,
    /// Answers sampled per problem.
    pub samples: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    /// Score of an answer with the right final number.
    pub correct_score: u8,
    /// Score of an answer with a wrong or no final number.
    pub incorrect_score: u8,
    pub device: Device,
    /// Most sequences decoded together.
    pub max_batch: usize,
}

/// What [`build_eft_files`] builds.
#[derive(Debug, Clone)]
pub struct EftBuildOptions {
    pub source: EftSource,
    /// Seeds the answers (per problem id) and the held-out split.
    pub seed: u64,
    /// Judge prompt of the user turn: `additive`, `short`, or a template file (see [`template`]).
    pub template: String,
    /// Share of the distinct prompts held out, in [0, 1).
    pub holdout: f64,
    /// Output folder (created if needed).
    pub out_dir: PathBuf,
    /// Check prompts against the evaluation sets (fetched if needed); off is recorded in the
    /// manifest.
    pub eval_guard: bool,
}

/// `additive`, `short`, or a template file.
pub fn template(spec: &str) -> Result<JudgeTemplate> {
    match JudgeTemplate::builtin(spec) {
        Some(t) => Ok(t),
        None => JudgeTemplate::from_file(Path::new(spec))
            .with_context(|| format!("--template {spec}: not `additive`, `short` or a file")),
    }
}

/// Builds the EFT files of `options` (see the module docs); returns the split's counts.
pub fn build_eft_files(options: &EftBuildOptions) -> Result<EftStats> {
    let template = template(&options.template)?;
    let eft_options = EftOptions {
        holdout: options.holdout,
        seed: options.seed,
    };
    // Check the cheap things (and fetch the guard's data) before any model is loaded.
    let guard = if !options.eval_guard {
        tracing::warn!("--no-eval-guard: prompts are not checked against the evaluation sets");
        None
    } else {
        Some(eval_guard()?)
    };
    let out_dir = &options.out_dir;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let (inputs, source, origin) = match &options.source {
        EftSource::File(path) => {
            let inputs = read_eft_input(path)?;
            let source = json!({
                "kind": "file",
                "path": path,
                "sha256": sha256_file(path)?,
            });
            (inputs, source, path)
        }
        EftSource::Problems(problems) => {
            let (inputs, source) = from_problems(problems, options, guard.as_ref())?;
            (inputs, source, &problems.path)
        }
    };
    let origin = origin.display().to_string();
    let split = build_eft(&inputs, &template, &eft_options, guard.as_ref(), &origin)?;

    let mut train = Vec::new();
    write_examples(&mut train, &split.train)?;
    let mut heldout = Vec::new();
    write_examples(&mut heldout, &split.heldout)?;
    let train_path = out_dir.join("eft-train.jsonl");
    let heldout_path = out_dir.join("eft-heldout.jsonl");
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
        "holdout": options.holdout,
        "seed": options.seed,
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
    write_atomic(&out_dir.join("manifest.json"), &text)?;
    tracing::info!(
        train = split.stats.train,
        heldout = split.stats.heldout,
        duplicates_dropped = split.stats.duplicates_dropped,
        out_dir = %out_dir.display(),
        "eft data written"
    );
    Ok(split.stats)
}

/// Source (b): sample answers to the problems and label them with the verifier.
fn from_problems(
    args: &ProblemSource,
    options: &EftBuildOptions,
    guard: Option<&tsr_judge::EvalGuard>,
) -> Result<(Vec<EftInput>, serde_json::Value)> {
    let path = &args.path;
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
    let spec = args.model.as_str();
    let loaded = load(
        spec,
        &LoadOptions {
            device: args.device,
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
                seed: tsr_judge::seed::id_seed(
                    options.seed,
                    &serde_json::Value::from(p.id.clone()),
                ),
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
    write_atomic(&options.out_dir.join("labelled.jsonl"), &labelled)?;
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
