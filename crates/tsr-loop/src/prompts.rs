//! The prompts of a run: JSON lines `{"id": "...", "prompt": "..."}` (`instruction` is accepted
//! for `prompt`; an `id` may be a string or an integer and defaults to the line number; other
//! fields are ignored).

use crate::error::{io, LoopError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// One instruction to iterate on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRecord {
    pub id: String,
    pub prompt: String,
}

#[derive(Deserialize)]
struct RawPrompt {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, alias = "instruction")]
    prompt: Option<serde_json::Value>,
}

/// Parse prompts from JSON-lines text; `path` names the source in errors.
pub fn parse_prompts(text: &str, path: &Path) -> Result<Vec<PromptRecord>> {
    let err = |line: usize, message: String| LoopError::Prompts {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawPrompt =
            serde_json::from_str(line).map_err(|e| err(line_no, format!("malformed JSON: {e}")))?;
        let id = match raw.id {
            None => format!("{line_no}"),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(v) => {
                return Err(err(
                    line_no,
                    format!("`id` must be a non-empty string or a number, got {v}"),
                ))
            }
        };
        let prompt = match raw.prompt {
            Some(serde_json::Value::String(s)) => s,
            Some(v) => return Err(err(line_no, format!("`prompt` must be a string, got {v}"))),
            None => return Err(err(line_no, "missing `prompt`".into())),
        };
        if prompt.trim().is_empty() {
            return Err(err(line_no, format!("prompt `{id}` is empty")));
        }
        if !seen.insert(id.clone()) {
            return Err(err(line_no, format!("duplicate prompt id `{id}`")));
        }
        out.push(PromptRecord { id, prompt });
    }
    if out.is_empty() {
        return Err(LoopError::Prompts {
            path: path.to_path_buf(),
            line: 0,
            message: "no prompts".into(),
        });
    }
    Ok(out)
}

/// Read a prompts file.
pub fn load_prompts(path: &Path) -> Result<Vec<PromptRecord>> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    parse_prompts(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<PromptRecord>> {
        parse_prompts(text, Path::new("p.jsonl"))
    }

    #[test]
    fn parses_ids_and_aliases() {
        let v = p("{\"id\":\"a\",\"prompt\":\"x\"}\n\n{\"id\":7,\"instruction\":\"y\",\"extra\":1}\n{\"prompt\":\"z\"}\n")
            .unwrap();
        let ids: Vec<_> = v.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "7", "4"]);
        assert_eq!(v[1].prompt, "y");
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases = [
            ("{\"prompt\":\"a\"}\n{oops\n", "p.jsonl:2: malformed JSON"),
            ("{\"prompt\":\"  \"}\n", "p.jsonl:1: prompt `1` is empty"),
            (
                "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\",\"prompt\":\"y\"}\n",
                "p.jsonl:2: duplicate prompt id `a`",
            ),
            ("{\"id\":\"a\"}\n", "p.jsonl:1: missing `prompt`"),
            ("\n\n", "no prompts"),
        ];
        for (text, needle) in cases {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
