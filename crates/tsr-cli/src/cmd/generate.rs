//! `tsr generate`: sample completions for prompts and write them as JSON lines
//! `{prompt_id, sample, text, token_ids, finish_reason}`.
//!
//! Prompts come from `--prompt TEXT` (id 0) or a JSON-lines file of `{"id": .., "prompt": ..}`
//! where `prompt` is a string or a list of chat messages. String prompts are raw text unless
//! `--chat` wraps them as one user message. Request `i` is seeded from `--seed` and the prompt's
//! id, so a prompt's samples do not depend on which other prompts are in the file. Sampling is
//! `tsr_backend::generate`.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use tsr_backend::generate::{generate, read_prompts, single_prompt, GenerateOptions};
use tsr_judge::{Generator, SamplingParams};
use tsr_sample::SamplerOptions;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "prompts"])))]
pub struct Args {
    /// Built-in model name, Hugging Face directory, or .gguf file.
    #[arg(
        long,
        required_unless_present = "engine_urls",
        conflicts_with = "engine_urls"
    )]
    model: Option<String>,
    #[command(flatten)]
    engine: super::EngineArgs,
    /// One prompt (id 0).
    #[arg(long)]
    prompt: Option<String>,
    /// JSON lines with `id` and `prompt` (a string, or a list of {role, content} messages).
    #[arg(long, value_name = "FILE.jsonl")]
    prompts: Option<PathBuf>,
    /// Treat string prompts as a single user chat message (rendered with the chat template).
    #[arg(long)]
    chat: bool,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    n: usize,
    /// Most tokens generated per sample (at least 1).
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    /// 0 disables top-k.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// 0 disables min-p.
    #[arg(long, default_value_t = 0.0)]
    min_p: f64,
    /// CTRL repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// Stop strings (repeatable); the text is cut before the first one.
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long)]
    greedy: bool,
    /// Output file (written atomically); stdout when absent.
    #[arg(long, value_name = "FILE.jsonl")]
    out: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Weight and activation dtype of the local model: f32 (the exact reference), bf16 or f16.
    /// bf16 halves the bytes read per token: on a CPU without native bf16 it speeds up batch-1
    /// decoding and slows down large batches (docs/benchmarks.md).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Weight-only reduced precision for decoding (bf16 or f16): a copy of the weights in that
    /// dtype serves the products of decoding steps (up to 16 rows; 4 for bf16 on a CPU without
    /// native bf16), prefills stay in --dtype. On a CPU with native bf16 (AVX512-BF16) the bf16
    /// copies are packed for oneDNN's kernels: the fastest format there, batch 1 and sampling
    /// batches alike. On x86 CPUs f16 uses FBGEMM's packed fp16 kernels: the closest to f32, and
    /// the fastest for batch-1 decoding without native bf16. Memory grows by half the weights.
    #[arg(long, value_name = "DTYPE")]
    weight_dtype: Option<String>,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Keep the end of prompts longer than the model context instead of failing.
    #[arg(long)]
    truncate_prompt: bool,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.max_new_tokens >= 1,
        "--max-new-tokens must be at least 1 (got 0)"
    );
    let prompts = match (&args.prompt, &args.prompts) {
        (Some(p), None) => vec![single_prompt(p, args.chat)],
        (None, Some(path)) => read_prompts(path, args.chat)?,
        _ => bail!("give exactly one of --prompt and --prompts"),
    };
    let options = GenerateOptions {
        n: args.n,
        params: SamplingParams {
            temperature: if args.greedy { 0.0 } else { args.temperature },
            top_p: args.top_p,
            top_k: args.top_k,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            max_new_tokens: args.max_new_tokens,
            stop: args.stop.clone(),
        },
        seed: args.seed,
        max_batch: args.max_batch,
    };
    let loaded;
    let mut local;
    let mut remote;
    let generator: &mut dyn Generator = match args.engine.engine()? {
        Some(engine) => {
            tracing::info!(urls = ?args.engine.engine_urls, prompts = prompts.len(), n = args.n, "generating on the engine");
            remote = engine;
            &mut remote
        }
        None => {
            let spec = args
                .model
                .as_deref()
                .context("--model or --engine-url is required")?;
            loaded = {
                let mut l = tsr_backend::load_model_as(
                    spec,
                    tsr_model::parse_device(&args.device)?,
                    tsr_model::parse_dtype(&args.dtype)?,
                )?;
                if let Some(w) = &args.weight_dtype {
                    l.model.set_weight_dtype(tsr_model::parse_dtype(w)?)?;
                }
                l
            };
            tracing::info!(model = %loaded.source.display(), prompts = prompts.len(), n = args.n, "generating");
            let options = SamplerOptions {
                max_batch_rows: args.max_batch,
                truncate_prompt: args.truncate_prompt,
                ..Default::default()
            };
            local = tsr_backend::sampler(&loaded, options);
            &mut local
        }
    };

    let mut sink = super::Sink::open(args.out.as_deref())?;
    generate(generator, &prompts, &options, |record| {
        sink.line(&record.to_string())
    })?;
    sink.finish()
}
