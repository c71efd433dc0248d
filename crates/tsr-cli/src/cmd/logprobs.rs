//! `tsr logprobs`: per-token log-probabilities of a completion given a prompt.
//!
//! Prints one JSON object: `prompt_ids`, `completion_ids`, `token_logprobs` (one per completion
//! token, natural log) and `sum_logprob`. The prompt is tokenized with the tokenizer's special
//! tokens (as transformers' `tokenizer(prompt)` does), or, with `--chat`, rendered as one user
//! message through the chat template with the generation prompt and tokenized without them. The
//! completion is tokenized alone without special tokens and appended. Prompt and completion
//! together must fit in the model's context (`max_position_embeddings`), or it is an error.

#![allow(clippy::print_stdout)]

use anyhow::{Context, Result};
use tsr_model::{Kind, LoadOptions, Tensor};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Built-in model name (smollm2-135m-instruct), Hugging Face directory or .gguf file.
    #[arg(long)]
    model: String,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// The completion whose tokens are scored.
    #[arg(long)]
    completion: String,
    /// Render the prompt as one user message through the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = tsr_model::parse_device(&args.device)?;
    let opts = LoadOptions {
        device,
        kind: Kind::Float,
    };
    let loaded = tsr_model::load(&args.model, &opts)
        .with_context(|| format!("loading model {}", args.model))?;
    let tok = &loaded.tokenizer;
    let prompt_ids = if args.chat {
        let messages = [serde_json::json!({"role": "user", "content": args.prompt})];
        let text = tok.apply_chat_template(&messages, true)?;
        tok.encode(&text, false)?
    } else {
        tok.encode(&args.prompt, true)?
    };
    let completion_ids = tok.encode(&args.completion, false)?;
    anyhow::ensure!(!completion_ids.is_empty(), "the completion has no tokens");
    anyhow::ensure!(
        !prompt_ids.is_empty(),
        "the prompt has no tokens (nothing to condition on)"
    );

    let context = loaded.model.config().max_position_embeddings;
    let total = prompt_ids.len() + completion_ids.len();
    anyhow::ensure!(
        total <= context,
        "the prompt ({} tokens) and completion ({} tokens) make {total} tokens, more than the \
         model's context of {context} tokens (max_position_embeddings); shorten them",
        prompt_ids.len(),
        completion_ids.len()
    );

    let all: Vec<i64> = prompt_ids
        .iter()
        .chain(&completion_ids)
        .map(|&i| i64::from(i))
        .collect();
    let n = all.len() as i64;
    let input = Tensor::from_slice(&all).view([1, n]).to_device(device);
    let mask = Tensor::ones([1, n], (Kind::Int64, device));
    let token_logprobs: Vec<f64> = tch::no_grad(|| -> Result<Vec<f64>> {
        let logits = loaded.model.logits(&input, &mask, false)?;
        // Position t predicts token t + 1: score the completion from the last prompt position.
        let p = prompt_ids.len() as i64;
        let c = completion_ids.len() as i64;
        let logp = logits
            .to_kind(Kind::Float)
            .narrow(1, p - 1, c)
            .log_softmax(-1, Kind::Float);
        let targets = input.narrow(1, p, c).unsqueeze(-1);
        let picked = logp
            .gather(-1, &targets, false)
            .view([c])
            .to_device(tch::Device::Cpu);
        Ok(Vec::<f64>::try_from(&picked.to_kind(Kind::Double))?)
    })?;
    let sum: f64 = token_logprobs.iter().sum();
    let out = serde_json::json!({
        "prompt_ids": prompt_ids,
        "completion_ids": completion_ids,
        "token_logprobs": token_logprobs,
        "sum_logprob": sum,
    });
    println!("{out}");
    Ok(())
}
