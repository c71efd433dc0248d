//! `tsr logprobs`: per-token log-probabilities of a completion given a prompt.
//!
//! Prints one JSON object: `prompt_ids`, `completion_ids`, `token_logprobs` (one per completion
//! token, natural log) and `sum_logprob`. The prompt is tokenized with the tokenizer's special
//! tokens (as transformers' `tokenizer(prompt)` does), or, with `--chat`, rendered as one user
//! message through the chat template with the generation prompt and tokenized without them. The
//! completion is tokenized alone without special tokens and appended. Prompt and completion
//! together must fit in the model's context (`max_position_embeddings`), or it is an error.
//! The scoring is `tsr_backend::logprobs`.

#![allow(clippy::print_stdout)]

use anyhow::Result;

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
    let loaded = tsr_backend::load_model(&args.model, device)?;
    let scored = tsr_backend::logprobs::completion_logprobs(
        &loaded,
        &args.prompt,
        &args.completion,
        args.chat,
    )?;
    println!("{}", serde_json::to_value(&scored)?);
    Ok(())
}
