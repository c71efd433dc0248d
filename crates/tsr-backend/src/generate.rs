//! Sampling completions for a list of prompts (`tsr generate`): one JSON record per sample,
//! `{prompt_id, sample, text, token_ids, finish_reason}`.
//!
//! Prompts come from a prompt file in [`PromptFormat::STRICT`] (`{"id": .., "prompt": ..}`,
//! where `prompt` is a string or a list of chat messages) or from one text (id 0). String
//! prompts are raw text unless `chat` wraps them as one user message. A prompt's request is
//! seeded from the base seed and its id ([`request_seed`]), so its samples do not depend on
//! which other prompts are in the file.

use std::path::Path;

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use tsr_judge::{GenRequest, Generator, Prompt, SamplingParams};
use tsr_loop::{read_prompt_lines, PromptFormat, PromptLine};

/// How [`generate`] samples.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Samples per prompt.
    pub n: usize,
    pub params: SamplingParams,
    /// Base seed of the requests ([`request_seed`]).
    pub seed: u64,
    /// Most sequences decoded together; prompts are sent in blocks of about four times this
    /// many samples, so records stream out on long files.
    pub max_batch: usize,
}

/// The prompts of a prompt file; `chat` turns string prompts into one user message each.
pub fn read_prompts(path: &Path, chat: bool) -> Result<Vec<PromptLine>> {
    Ok(read_prompt_lines(path, PromptFormat::STRICT)?
        .into_iter()
        .map(|mut p| {
            p.prompt = as_chat(p.prompt, chat);
            p
        })
        .collect())
}

/// One prompt given as text, with id 0; `chat` makes it one user message.
pub fn single_prompt(text: &str, chat: bool) -> PromptLine {
    PromptLine {
        line: 0,
        id: Value::from(0),
        prompt: as_chat(Prompt::Text(text.to_string()), chat),
    }
}

fn as_chat(prompt: Prompt, chat: bool) -> Prompt {
    match prompt {
        Prompt::Text(t) if chat => Prompt::user(t),
        p => p,
    }
}

/// The seed of a prompt's request (see [`tsr_judge::seed::id_seed`]).
pub fn request_seed(seed: u64, id: &Value) -> u64 {
    tsr_judge::seed::id_seed(seed, id)
}

/// Samples `options.n` completions per prompt with `generator` and hands each record to `emit`,
/// in prompt order, block by block. Returns the number of records.
pub fn generate(
    generator: &mut dyn Generator,
    prompts: &[PromptLine],
    options: &GenerateOptions,
    mut emit: impl FnMut(&Value) -> Result<()>,
) -> Result<usize> {
    ensure!(
        options.params.max_new_tokens >= 1,
        "max_new_tokens must be at least 1 (got 0)"
    );
    let block = (options.max_batch / options.n.max(1)).max(1) * 4;
    let mut done = 0usize;
    let mut records = 0usize;
    for lines in prompts.chunks(block) {
        let requests: Vec<GenRequest> = lines
            .iter()
            .map(|p| GenRequest {
                prompt: p.prompt.clone(),
                n: options.n,
                seed: request_seed(options.seed, &p.id),
            })
            .collect();
        let out = generator
            .generate(&requests, &options.params)
            .map_err(|e| anyhow::Error::from_boxed(e).context("generating"))?;
        for (line, samples) in lines.iter().zip(out) {
            for (j, c) in samples.into_iter().enumerate() {
                emit(&json!({
                    "prompt_id": line.id,
                    "sample": j,
                    "text": c.text,
                    "token_ids": c.token_ids,
                    "finish_reason": c.finish_reason,
                }))?;
                records += 1;
            }
        }
        done += lines.len();
        tracing::info!(done, total = prompts.len(), "prompts generated");
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn prompt_files_parse_text_and_chat() {
        let (_d, p) = write(
            "{\"id\": \"a\", \"prompt\": \"hi\"}\n\n{\"id\": 2, \"prompt\": [{\"role\": \"user\", \"content\": \"yo\"}]}\n",
        );
        let v = read_prompts(&p, false).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].prompt, Prompt::Text("hi".into()));
        assert_eq!(v[1].prompt, Prompt::user("yo"));
        let v = read_prompts(&p, true).unwrap();
        assert_eq!(v[0].prompt, Prompt::user("hi"));
        assert_eq!(single_prompt("x", true).prompt, Prompt::user("x"));
        assert_eq!(single_prompt("x", false).id, Value::from(0));
    }

    #[test]
    fn malformed_lines_and_duplicates_name_the_line() {
        let (_d, p) = write("{\"id\": 1, \"prompt\": \"x\"}\n{\"id\": 1, \"prompt\": \"y\"}\n");
        let e = format!("{:#}", read_prompts(&p, false).unwrap_err());
        assert!(e.contains("p.jsonl:2") && e.contains("duplicate"), "{e}");
        let (_d, p) = write("{\"id\": 1, \"prompt\": \"x\"}\n{\"id\": 2, \"prompt\": 3}\n");
        let e = format!("{:#}", read_prompts(&p, false).unwrap_err());
        assert!(e.contains("p.jsonl:2"), "{e}");
        let (_d, p) = write("not json\n");
        let e = format!("{:#}", read_prompts(&p, false).unwrap_err());
        assert!(e.contains("p.jsonl:1"), "{e}");
    }

    #[test]
    fn request_seeds_depend_on_seed_and_id_only() {
        let a = Value::from("a");
        assert_eq!(request_seed(1, &a), request_seed(1, &a));
        assert_ne!(request_seed(1, &a), request_seed(2, &a));
        assert_ne!(request_seed(1, &a), request_seed(1, &Value::from("b")));
    }
}
