//! Is a model better? Win rates, GSM8K accuracy and the AlpacaEval export (`tsr eval`; judge
//! accuracy is [`crate::judging::judge_eval`]).
//!
//! * [`winrate()`]: answers of a model and a baseline (generated, or read from answer files) on a
//!   prompt set (a file, or the AlpacaEval instructions), compared pairwise in both orders by a
//!   judge model (`tsr_judge::LlmPairwiseJudge`) or a style rule (`tsr_judge::RuleJudge`).
//! * [`gsm8k()`]: accuracy on the 100 offline GSM8K problems, greedy and sampled.
//! * [`alpaca_export`]: a model's answers to the 805 AlpacaEval instructions in AlpacaEval's
//!   format.
//!
//! Each writes into its output folder: `result.json` (tsr version, model identities as path and
//! content hash, the prompts' hash, seeds, settings, counts and the report) and `records.jsonl`
//! (one line per item), plus the answers it generated (`answers-*.jsonl`, lines `{id, prompt,
//! response, finish_reason, tokens}`, reusable as answer files).

mod alpaca;
mod answers;
mod gsm8k;
mod identity;
mod winrate;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;
use tsr_judge::SamplingParams;
use tsr_loop::{read_prompt_lines, PromptFormat, PromptRecord};
use tsr_model::Device;

pub use alpaca::{alpaca_export, AlpacaOptions, AlpacaOutcome};
pub use answers::{answer_all, read_answers, Answer};
pub use gsm8k::{gsm8k, GsmOptions, GsmOutcome};
pub use identity::{file_sha256, jsonl_sha256, model_identity};
pub use winrate::{winrate, PairwiseOptions, Side, WinrateJudge, WinrateOptions, WinrateOutcome};

/// How answers are generated.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Generation limit per answer (`None`: the evaluation's default, 256; alpaca-export 512).
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature of the answers (0: greedy decoding).
    pub temperature: f64,
    /// Nucleus mass of sampled answers.
    pub top_p: f64,
    /// Base seed: answers, sampled judges and the bootstrap derive their seeds from it.
    pub seed: u64,
    pub device: Device,
    /// Most sequences decoded together.
    pub max_batch: usize,
}

impl Generation {
    /// The sampling parameters, with `default_max_new_tokens` unless a limit was given.
    pub fn params(&self, default_max_new_tokens: usize) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens.unwrap_or(default_max_new_tokens),
            ..SamplingParams::default()
        }
    }
}

fn create_out(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write_result(dir: &Path, result: &Value) -> Result<PathBuf> {
    let path = dir.join("result.json");
    tsr_loop::fsio::write_json(&path, result)?;
    Ok(path)
}

fn limit<T>(mut v: Vec<T>, limit: Option<usize>) -> Vec<T> {
    if let Some(n) = limit {
        v.truncate(n);
    }
    v
}

/// A prompt file for evaluation ([`PromptFormat::STRICT`]) whose prompts are instructions:
/// strings, or chats of one user message.
pub fn read_prompt_file(path: &Path) -> Result<Vec<PromptRecord>> {
    read_prompt_lines(path, PromptFormat::STRICT)?
        .into_iter()
        .map(|line| {
            let id = line.id_text();
            match line.instruction() {
                Some(text) => Ok(PromptRecord {
                    prompt: text.to_string(),
                    id,
                }),
                None => anyhow::bail!(
                    "{}:{}: prompt `{id}` must be a string (one user instruction) for evaluation",
                    path.display(),
                    line.line
                ),
            }
        })
        .collect()
}

/// The AlpacaEval instructions as prompts (`alpaca-0000`..), fetched on first use.
fn alpaca_prompts() -> Result<Vec<(PromptRecord, tsr_judge::AlpacaItem)>> {
    let (alpaca, _) = crate::eval_data::eval_sets()?;
    Ok(alpaca
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            (
                PromptRecord {
                    id: format!("alpaca-{i:04}"),
                    prompt: item.instruction.clone(),
                },
                item,
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_prompts_are_instructions_and_a_chat_is_named_by_line() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("p.jsonl");
        std::fs::write(
            &path,
            "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": 2, \"prompt\": [{\"role\": \"user\", \"content\": \"y\"}]}\n",
        )
        .unwrap();
        let p = read_prompt_file(&path).unwrap();
        assert_eq!(
            p,
            [
                PromptRecord {
                    id: "a".into(),
                    prompt: "x".into()
                },
                PromptRecord {
                    id: "2".into(),
                    prompt: "y".into()
                },
            ]
        );
        std::fs::write(
            &path,
            "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"c\", \"prompt\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"y\"}]}\n",
        )
        .unwrap();
        let e = format!("{:#}", read_prompt_file(&path).unwrap_err());
        assert!(e.contains("p.jsonl:2: prompt `c` must be a string"), "{e}");
    }
}
