//! Preference pairs as TRL writes them: one JSON object per line (see the [format](super)).

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DpoError, Result};

/// One chat message (`role` is `system`, `user` or `assistant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: String,
    /// What is said.
    pub content: String,
}

/// The prompt of a pair: plain text, or chat messages rendered with the model's template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PairPrompt {
    /// Raw text, tokenized as is (with the tokenizer's special tokens).
    Text(String),
    /// Chat messages.
    Chat(Vec<Message>),
}

/// A completion of a pair: plain text, or a list holding one assistant message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PairCompletion {
    /// The completion text (for chat prompts: the assistant reply).
    Text(String),
    /// `[{"role": "assistant", "content": ...}]`.
    Chat(Vec<Message>),
}

impl PairCompletion {
    pub(crate) fn content(&self) -> std::result::Result<&str, String> {
        match self {
            PairCompletion::Text(s) => Ok(s),
            PairCompletion::Chat(m) if m.len() == 1 && m[0].role == "assistant" => Ok(&m[0].content),
            PairCompletion::Chat(m) => Err(format!(
                "a chat completion must be a list with exactly one assistant message, got {} message(s) with roles {:?}",
                m.len(),
                m.iter().map(|x| x.role.as_str()).collect::<Vec<_>>()
            )),
        }
    }
}

/// One preference pair as read from JSONL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencePair {
    /// The shared prompt.
    pub prompt: PairPrompt,
    /// The preferred completion.
    pub chosen: PairCompletion,
    /// The dispreferred completion.
    pub rejected: PairCompletion,
}

impl PreferencePair {
    /// A plain-text pair.
    pub fn text(
        prompt: impl Into<String>,
        chosen: impl Into<String>,
        rejected: impl Into<String>,
    ) -> Self {
        PreferencePair {
            prompt: PairPrompt::Text(prompt.into()),
            chosen: PairCompletion::Text(chosen.into()),
            rejected: PairCompletion::Text(rejected.into()),
        }
    }

    pub(super) fn check(&self) -> std::result::Result<(), String> {
        self.chosen.content().map_err(|e| format!("chosen: {e}"))?;
        self.rejected
            .content()
            .map_err(|e| format!("rejected: {e}"))?;
        if let PairPrompt::Text(_) = self.prompt {
            if matches!(self.chosen, PairCompletion::Chat(_))
                || matches!(self.rejected, PairCompletion::Chat(_))
            {
                return Err("a plain-text prompt needs plain-text chosen and rejected".into());
            }
        }
        if let PairPrompt::Chat(m) = &self.prompt {
            if m.is_empty() {
                return Err("prompt: empty message list".into());
            }
        }
        Ok(())
    }
}

/// Parses JSONL text (see the [module docs](super)); `path` only names the source in errors.
pub fn parse_pairs(text: &str, path: &Path) -> Result<Vec<PreferencePair>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(line, path, i + 1)?);
    }
    Ok(out)
}

fn parse_line(line: &str, path: &Path, lineno: usize) -> Result<PreferencePair> {
    let err = |reason: String| DpoError::Data {
        path: path.to_path_buf(),
        line: lineno,
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| err(format!("invalid json: {e}")))?;
    for key in ["prompt", "chosen", "rejected"] {
        if value.get(key).is_none() {
            return Err(err(format!("missing field `{key}`")));
        }
    }
    let pair: PreferencePair = serde_json::from_value(value).map_err(|e| {
        err(format!("expected prompt/chosen/rejected as strings or lists of {{role, content}} messages: {e}"))
    })?;
    pair.check().map_err(err)?;
    Ok(pair)
}

/// Reads a JSONL file of pairs.
pub fn read_pairs(path: &Path) -> Result<Vec<PreferencePair>> {
    let file = std::fs::File::open(path).map_err(|e| DpoError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DpoError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(&line, path, i + 1)?);
    }
    Ok(out)
}
