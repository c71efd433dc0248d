//! Per-token log-probabilities of a completion given a prompt (`tsr logprobs`).
//!
//! The prompt is tokenized with the tokenizer's special tokens (as transformers'
//! `tokenizer(prompt)` does), or, with `chat`, rendered as one user message through the chat
//! template with the generation prompt and tokenized without them. The completion is tokenized
//! alone without special tokens and appended. Prompt and completion together must fit in the
//! model's context (`max_position_embeddings`), or it is an error.

use anyhow::{ensure, Result};
use serde::Serialize;
use tsr_model::{Kind, Loaded, Tensor};

/// The completion's tokens scored under the prompt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    /// One per completion token, natural log.
    pub token_logprobs: Vec<f64>,
    pub sum_logprob: f64,
}

/// Scores `completion` after `prompt` (a user message under the chat template with `chat`)
/// with one forward pass of `loaded` on its device.
pub fn completion_logprobs(
    loaded: &Loaded,
    prompt: &str,
    completion: &str,
    chat: bool,
) -> Result<CompletionLogprobs> {
    let tok = &loaded.tokenizer;
    let prompt_ids = if chat {
        let messages = [serde_json::json!({"role": "user", "content": prompt})];
        let text = tok.apply_chat_template(&messages, true)?;
        tok.encode(&text, false)?
    } else {
        tok.encode(prompt, true)?
    };
    let completion_ids = tok.encode(completion, false)?;
    ensure!(!completion_ids.is_empty(), "the completion has no tokens");
    ensure!(
        !prompt_ids.is_empty(),
        "the prompt has no tokens (nothing to condition on)"
    );

    let context = loaded.model.config().max_position_embeddings;
    let total = prompt_ids.len() + completion_ids.len();
    ensure!(
        total <= context,
        "the prompt ({} tokens) and completion ({} tokens) make {total} tokens, more than the \
         model's context of {context} tokens (max_position_embeddings); shorten them",
        prompt_ids.len(),
        completion_ids.len()
    );

    let device = loaded.model.device();
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
    let sum_logprob = token_logprobs.iter().sum();
    Ok(CompletionLogprobs {
        prompt_ids,
        completion_ids,
        token_logprobs,
        sum_logprob,
    })
}
