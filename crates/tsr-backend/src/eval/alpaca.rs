//! A model's answers to the AlpacaEval instructions, in AlpacaEval's JSON format.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;
use tsr_judge::alpaca_export as alpaca_outputs;
use tsr_loop::fsio::{write_json, write_jsonl};
use tsr_loop::PromptRecord;

use super::{
    alpaca_prompts, answer_all, create_out, jsonl_sha256, limit, model_identity, write_result,
    Answer, Generation,
};
use crate::local::load_model;

/// What [`alpaca_export`] answers, and how.
#[derive(Clone, Debug)]
pub struct AlpacaOptions {
    /// Built-in model name, Hugging Face folder, or .gguf file.
    pub model: String,
    /// The `generator` name in the file (`None`: the model folder's or file's name).
    pub generator: Option<String>,
    /// Only the first N instructions (of 805); a partial file is not an AlpacaEval submission.
    pub limit: Option<usize>,
    /// Generation settings; the limit defaults to 512 new tokens.
    pub generation: Generation,
    /// Output folder: model_outputs.json (AlpacaEval format), result.json, records.jsonl.
    pub out: PathBuf,
}

/// What [`alpaca_export`] wrote.
#[derive(Debug)]
pub struct AlpacaOutcome {
    pub answers: usize,
    /// Answers cut at the generation limit.
    pub hit_max_new_tokens: usize,
    /// `model_outputs.json`.
    pub model_outputs: PathBuf,
}

/// Answers the AlpacaEval instructions and writes `model_outputs.json` (AlpacaEval's format),
/// `records.jsonl` (the answers) and `result.json` into `options.out`.
pub fn alpaca_export(options: &AlpacaOptions) -> Result<AlpacaOutcome> {
    create_out(&options.out)?;
    let all = limit(alpaca_prompts()?, options.limit);
    let (prompts, items): (Vec<PromptRecord>, Vec<tsr_judge::AlpacaItem>) = all.into_iter().unzip();
    let gen = &options.generation;
    let loaded = load_model(&options.model, gen.device)?;
    let identity = model_identity(&options.model, &loaded.source)?;
    let generator = options.generator.clone().unwrap_or_else(|| {
        loaded.source.file_stem().map_or_else(
            || options.model.clone(),
            |s| s.to_string_lossy().into_owned(),
        )
    });
    let params = gen.params(512);
    let answers = answer_all(
        &loaded,
        &prompts,
        1,
        &params,
        gen.seed,
        gen.max_batch,
        "alpaca",
    )?;
    let flat: Vec<Answer> = answers.into_iter().flatten().collect();
    let outputs: Vec<String> = flat.iter().map(|a| a.response.clone()).collect();
    let export = alpaca_outputs(&items, &outputs, &generator)?;
    let file = options.out.join("model_outputs.json");
    write_json(&file, &export)?;
    write_jsonl(&options.out.join("records.jsonl"), &flat)?;
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
        "seed": gen.seed,
        "counts": {"answers": flat.len(), "hit_max_new_tokens": truncated},
        "model_outputs": file,
    });
    write_result(&options.out, &result)?;
    tracing::info!(answers = flat.len(), hit_max_new_tokens = truncated, file = %file.display(), "AlpacaEval outputs written");
    Ok(AlpacaOutcome {
        answers: flat.len(),
        hit_max_new_tokens: truncated,
        model_outputs: file,
    })
}
