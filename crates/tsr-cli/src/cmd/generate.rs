//! `tsr generate`: sample completions for prompts and write them as JSON lines
//! `{prompt_id, sample, text, token_ids, finish_reason}`.
//!
//! Prompts come from `--prompt TEXT` (id 0) or a JSON-lines file of `{"id": .., "prompt": ..}`
//! where `prompt` is a string or a list of chat messages. String prompts are raw text unless
//! `--chat` wraps them as one user message. Request `i` is seeded from `--seed` and the prompt's
//! id, so a prompt's samples do not depend on which other prompts are in the file.

#![allow(clippy::print_stdout)]

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use tsr_judge::{ChatMessage, GenRequest, Generator, Prompt, SamplingParams};
use tsr_model::{load, parse_device, LoadOptions};
use tsr_sample::{Sampler, SamplerOptions};

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
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Keep the end of prompts longer than the model context instead of failing.
    #[arg(long)]
    truncate_prompt: bool,
}

/// One prompt of a prompt file.
#[derive(Debug)]
pub struct PromptLine {
    pub id: serde_json::Value,
    pub prompt: Prompt,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    id: serde_json::Value,
    prompt: RawPrompt,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RawPrompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// Parses a prompt file: blank lines skipped; a malformed line or a repeated id is an error that
/// names the line.
pub fn read_prompts(path: &Path, chat: bool) -> Result<Vec<PromptLine>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("reading {} line {n}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawLine = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {n}: expected {{\"id\": .., \"prompt\": string or [messages]}}",
                path.display()
            )
        })?;
        if !(raw.id.is_string() || raw.id.is_number()) {
            bail!(
                "{} line {n}: id must be a string or a number, got {}",
                path.display(),
                raw.id
            );
        }
        if !ids.insert(raw.id.to_string()) {
            bail!("{} line {n}: duplicate id {}", path.display(), raw.id);
        }
        out.push(PromptLine {
            id: raw.id,
            prompt: to_prompt(raw.prompt, chat),
        });
    }
    Ok(out)
}

fn to_prompt(raw: RawPrompt, chat: bool) -> Prompt {
    match raw {
        RawPrompt::Text(t) if chat => Prompt::user(t),
        RawPrompt::Text(t) => Prompt::Text(t),
        RawPrompt::Chat(m) => Prompt::Chat(m),
    }
}

/// The seed of a prompt's request (see [`tsr_judge::seed::id_seed`]).
pub fn request_seed(seed: u64, id: &serde_json::Value) -> u64 {
    tsr_judge::seed::id_seed(seed, id)
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.max_new_tokens >= 1,
        "--max-new-tokens must be at least 1 (got 0)"
    );
    let prompts = match (&args.prompt, &args.prompts) {
        (Some(p), None) => vec![PromptLine {
            id: serde_json::Value::from(0),
            prompt: to_prompt(RawPrompt::Text(p.clone()), args.chat),
        }],
        (None, Some(path)) => read_prompts(path, args.chat)?,
        _ => bail!("give exactly one of --prompt and --prompts"),
    };
    let params = SamplingParams {
        temperature: if args.greedy { 0.0 } else { args.temperature },
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        max_new_tokens: args.max_new_tokens,
        stop: args.stop.clone(),
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
            let device = parse_device(&args.device)?;
            loaded = load(
                spec,
                &LoadOptions {
                    device,
                    ..Default::default()
                },
            )
            .with_context(|| format!("loading model {spec}"))?;
            tracing::info!(model = %loaded.source.display(), prompts = prompts.len(), n = args.n, "generating");
            let options = SamplerOptions {
                max_batch_rows: args.max_batch,
                truncate_prompt: args.truncate_prompt,
                ..Default::default()
            };
            local = Sampler::new(&loaded.model, &loaded.tokenizer)
                .with_generation_config(&loaded.generation)
                .with_options(options);
            &mut local
        }
    };

    let mut sink = super::Sink::open(args.out.as_deref())?;
    // Blocks of prompts keep the output streaming on long files.
    let block = (args.max_batch / args.n.max(1)).max(1) * 4;
    let mut done = 0usize;
    for lines in prompts.chunks(block) {
        let requests: Vec<GenRequest> = lines
            .iter()
            .map(|p| GenRequest {
                prompt: p.prompt.clone(),
                n: args.n,
                seed: request_seed(args.seed, &p.id),
            })
            .collect();
        let out = generator
            .generate(&requests, &params)
            .map_err(|e| anyhow::Error::from_boxed(e).context("generating"))?;
        for (line, samples) in lines.iter().zip(out) {
            for (j, c) in samples.into_iter().enumerate() {
                let record = serde_json::json!({
                    "prompt_id": line.id,
                    "sample": j,
                    "text": c.text,
                    "token_ids": c.token_ids,
                    "finish_reason": c.finish_reason,
                });
                sink.line(&record.to_string())?;
            }
        }
        done += lines.len();
        tracing::info!(done, total = prompts.len(), "prompts generated");
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn malformed_lines_and_duplicates_name_the_line() {
        let (_d, p) = write("{\"id\": 1, \"prompt\": \"x\"}\n{\"id\": 1, \"prompt\": \"y\"}\n");
        let e = format!("{:#}", read_prompts(&p, false).unwrap_err());
        assert!(e.contains("line 2") && e.contains("duplicate"), "{e}");
        let (_d, p) = write("{\"id\": 1, \"prompt\": \"x\"}\n{\"id\": 2, \"prompt\": 3}\n");
        let e = format!("{:#}", read_prompts(&p, false).unwrap_err());
        assert!(e.contains("line 2"), "{e}");
        let (_d, p) = write("not json\n");
        let e = format!("{:#}", read_prompts(&p, false).unwrap_err());
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn request_seeds_depend_on_seed_and_id_only() {
        let a = serde_json::Value::from("a");
        assert_eq!(request_seed(1, &a), request_seed(1, &a));
        assert_ne!(request_seed(1, &a), request_seed(2, &a));
        assert_ne!(
            request_seed(1, &a),
            request_seed(1, &serde_json::Value::from("b"))
        );
    }
}
