//! Prompt files: JSON lines of an `id` and a `prompt`, read by one parser in two formats.
//!
//! - [`PromptFormat::INSTRUCTIONS`], a run's prompts (and `[eval]`'s): `{"id": "...", "prompt":
//!   "..."}`; `instruction` is accepted for `prompt`; an `id` may be a string or an integer and
//!   defaults to the line number; other fields are ignored; a prompt is a non-empty string, and a
//!   file without prompts is refused.
//! - [`PromptFormat::STRICT`], `tsr generate --prompts` and `tsr eval --prompts`: a line holds
//!   `id` (a string or a number) and `prompt` (a string, or a list of `{role, content}` chat
//!   messages) and nothing else.
//!
//! In both, blank lines are skipped, and a malformed line or a repeated id is an error that
//! names the file and the line ([`LoopError::Prompts`]). Ids are compared as text, so `7` and
//! `"7"` are the same id.

use crate::error::{io, LoopError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use tsr_judge::{ChatMessage, Prompt};

/// One instruction to iterate on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRecord {
    pub id: String,
    pub prompt: String,
}

/// What a prompt file may hold; the validations where the commands that read one differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptFormat {
    /// Other fields are ignored and `instruction` stands for `prompt` (data sets with more
    /// columns); otherwise a line holds `id` and `prompt` only.
    pub extra_fields: bool,
    /// A line without an `id` (or with `"id": null`) takes its line number; otherwise `id` is
    /// required.
    pub default_ids: bool,
    /// `prompt` may be a list of `{role, content}` chat messages; otherwise it is a string.
    pub chat: bool,
    /// Empty prompts and blank string ids are refused, and so is a file without prompts.
    pub non_empty: bool,
}

impl PromptFormat {
    /// A run's prompts: lenient fields, default ids, non-empty string prompts.
    pub const INSTRUCTIONS: PromptFormat = PromptFormat {
        extra_fields: true,
        default_ids: true,
        chat: false,
        non_empty: true,
    };
    /// `tsr generate`'s and `tsr eval`'s prompt files: exactly `id` and `prompt`, where `prompt`
    /// is a string or chat messages.
    pub const STRICT: PromptFormat = PromptFormat {
        extra_fields: false,
        default_ids: false,
        chat: true,
        non_empty: false,
    };
}

/// One prompt of a prompt file, as written.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptLine {
    /// The line it was read from (1-based).
    pub line: usize,
    /// The id as written (a JSON string or number; the line number when the format allows a
    /// line without one).
    pub id: Value,
    /// A string prompt is [`Prompt::Text`]; chat messages are [`Prompt::Chat`].
    pub prompt: Prompt,
}

impl PromptLine {
    /// The id as text: a string id itself, a number in its JSON form.
    pub fn id_text(&self) -> String {
        id_text(&self.id)
    }

    /// The instruction of a string prompt, or of a chat of one user message.
    pub fn instruction(&self) -> Option<&str> {
        match &self.prompt {
            Prompt::Text(t) => Some(t),
            Prompt::Chat(m) if m.len() == 1 && m[0].role == "user" => Some(&m[0].content),
            Prompt::Chat(_) => None,
        }
    }
}

fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses JSON-lines text in `format`; `path` names the source in errors.
pub fn parse_prompt_lines(
    text: &str,
    path: &Path,
    format: PromptFormat,
) -> Result<Vec<PromptLine>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |message: String| LoopError::Prompts {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        let parsed = parse_line(line, line_no, format).map_err(err)?;
        let id = parsed.id_text();
        if !seen.insert(id.clone()) {
            return Err(err(format!("duplicate prompt id `{id}`")));
        }
        out.push(parsed);
    }
    if format.non_empty && out.is_empty() {
        return Err(LoopError::Prompts {
            path: path.to_path_buf(),
            line: 0,
            message: "no prompts".into(),
        });
    }
    Ok(out)
}

/// Reads a prompt file in `format`.
pub fn read_prompt_lines(path: &Path, format: PromptFormat) -> Result<Vec<PromptLine>> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    parse_prompt_lines(&text, path, format)
}

/// One non-blank line; the error is the message of [`LoopError::Prompts`].
fn parse_line(line: &str, line_no: usize, format: PromptFormat) -> Result<PromptLine, String> {
    let shape = if format.chat {
        "{\"id\": .., \"prompt\": string or [messages]}"
    } else {
        "{\"id\": .., \"prompt\": string}"
    };
    let value: Value =
        serde_json::from_str(line).map_err(|e| format!("malformed JSON, expected {shape}: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err(format!("expected a JSON object {shape}, got {value}"));
    };
    if !format.extra_fields {
        if let Some(k) = fields
            .keys()
            .find(|k| !matches!(k.as_str(), "id" | "prompt"))
        {
            return Err(format!("unknown field `{k}`, expected `id` or `prompt`"));
        }
    }
    let id = match fields.remove("id") {
        None | Some(Value::Null) if format.default_ids => Value::from(line_no),
        None => return Err("missing `id`".into()),
        Some(Value::String(s)) if format.non_empty && s.trim().is_empty() => {
            return Err(format!(
                "`id` must be a non-empty string or a number, got {}",
                Value::String(s)
            ))
        }
        Some(v @ (Value::String(_) | Value::Number(_))) => v,
        Some(v) => {
            let kind = if format.non_empty {
                "a non-empty string"
            } else {
                "a string"
            };
            return Err(format!("`id` must be {kind} or a number, got {v}"));
        }
    };
    let alias = if format.extra_fields {
        fields.remove("instruction")
    } else {
        None
    };
    let prompt = match (fields.remove("prompt"), alias) {
        (Some(_), Some(_)) => return Err("give `prompt` or `instruction`, not both".into()),
        (Some(p), None) | (None, Some(p)) if !p.is_null() => p,
        _ => return Err("missing `prompt`".into()),
    };
    let prompt = match prompt {
        Value::String(s) => Prompt::Text(s),
        v @ Value::Array(_) if format.chat => {
            Prompt::Chat(serde_json::from_value::<Vec<ChatMessage>>(v).map_err(|e| {
                format!("`prompt` must be a string or a list of {{role, content}} messages: {e}")
            })?)
        }
        v if format.chat => {
            return Err(format!(
                "`prompt` must be a string or a list of {{role, content}} messages, got {v}"
            ))
        }
        v => return Err(format!("`prompt` must be a string, got {v}")),
    };
    let empty = match &prompt {
        Prompt::Text(t) => t.trim().is_empty(),
        Prompt::Chat(m) => m.is_empty(),
    };
    if format.non_empty && empty {
        return Err(format!("prompt `{}` is empty", id_text(&id)));
    }
    Ok(PromptLine {
        line: line_no,
        id,
        prompt,
    })
}

/// Parse a run's prompts ([`PromptFormat::INSTRUCTIONS`]) from JSON-lines text; `path` names
/// the source in errors.
pub fn parse_prompts(text: &str, path: &Path) -> Result<Vec<PromptRecord>> {
    Ok(parse_prompt_lines(text, path, PromptFormat::INSTRUCTIONS)?
        .into_iter()
        .map(|l| {
            let id = l.id_text();
            let Prompt::Text(prompt) = l.prompt else {
                unreachable!("the instructions format has string prompts only")
            };
            PromptRecord { id, prompt }
        })
        .collect())
}

/// Read a run's prompts file ([`PromptFormat::INSTRUCTIONS`]).
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

    fn strict(text: &str) -> Result<Vec<PromptLine>> {
        parse_prompt_lines(text, Path::new("s.jsonl"), PromptFormat::STRICT)
    }

    #[test]
    fn parses_ids_and_aliases() {
        let v = p("{\"id\":\"a\",\"prompt\":\"x\"}\n\n{\"id\":7,\"instruction\":\"y\",\"extra\":1}\n{\"prompt\":\"z\"}\n{\"id\":null,\"prompt\":\"w\"}\n")
            .unwrap();
        let ids: Vec<_> = v.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "7", "4", "5"]);
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
            (
                "{\"id\":\"\",\"prompt\":\"x\"}\n",
                "p.jsonl:1: `id` must be a non-empty string",
            ),
            (
                "{\"id\":[1],\"prompt\":\"x\"}\n",
                "p.jsonl:1: `id` must be a non-empty string",
            ),
            (
                "{\"prompt\":[{\"role\":\"user\",\"content\":\"x\"}]}\n",
                "p.jsonl:1: `prompt` must be a string, got",
            ),
            (
                "{\"prompt\":\"x\",\"instruction\":\"y\"}\n",
                "p.jsonl:1: give `prompt` or `instruction`",
            ),
            ("[\"a\",\"x\"]\n", "p.jsonl:1: expected a JSON object"),
            ("\n\n", "no prompts"),
        ];
        for (text, needle) in cases {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn strict_files_hold_text_and_chat_prompts_with_their_ids_as_written() {
        let v = strict(
            "{\"id\": \"a\", \"prompt\": \"hi\"}\n\n{\"id\": 2, \"prompt\": [{\"role\": \"user\", \"content\": \"yo\"}]}\n{\"id\": \"e\", \"prompt\": \"\"}\n",
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!((v[0].line, &v[0].id), (1, &Value::from("a")));
        assert_eq!(v[0].prompt, Prompt::Text("hi".into()));
        assert_eq!((v[1].line, &v[1].id), (3, &Value::from(2)));
        assert_eq!(v[1].prompt, Prompt::user("yo"));
        assert_eq!(v[1].id_text(), "2");
        // Empty prompts and an empty file are the caller's business in this format.
        assert_eq!(v[2].prompt, Prompt::Text(String::new()));
        assert!(strict("\n").unwrap().is_empty());
    }

    #[test]
    fn strict_files_refuse_what_the_loop_tolerates_naming_the_line() {
        let cases = [
            ("{\"id\": 1, \"prompt\": \"x\"}\n{\"id\": 1, \"prompt\": \"y\"}\n", "s.jsonl:2: duplicate prompt id `1`"),
            ("{\"id\": 1, \"prompt\": \"x\"}\n{\"id\": \"1\", \"prompt\": \"y\"}\n", "s.jsonl:2: duplicate prompt id `1`"),
            ("{\"id\": 1, \"prompt\": \"a\"}\n\n{\"id\": 2}\n", "s.jsonl:3: missing `prompt`"),
            ("{\"prompt\": \"x\"}\n", "s.jsonl:1: missing `id`"),
            ("{\"id\": null, \"prompt\": \"x\"}\n", "s.jsonl:1: `id` must be a string or a number, got null"),
            ("{\"id\": 1, \"prompt\": \"x\", \"foo\": 1}\n", "s.jsonl:1: unknown field `foo`"),
            ("{\"id\": 1, \"instruction\": \"x\"}\n", "s.jsonl:1: unknown field `instruction`"),
            ("{\"id\": 1, \"prompt\": 3}\n", "s.jsonl:1: `prompt` must be a string or a list of {role, content} messages, got 3"),
            ("{\"id\": 1, \"prompt\": [{\"role\": \"user\"}]}\n", "s.jsonl:1: `prompt` must be a string or a list of {role, content} messages: missing field `content`"),
            ("not json\n", "s.jsonl:1: malformed JSON"),
        ];
        for (text, needle) in cases {
            let e = strict(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn instructions_are_strings_or_one_user_message() {
        let v = strict(
            "{\"id\": 1, \"prompt\": \"a\"}\n{\"id\": 2, \"prompt\": [{\"role\": \"user\", \"content\": \"b\"}]}\n{\"id\": 3, \"prompt\": [{\"role\": \"system\", \"content\": \"c\"}]}\n",
        )
        .unwrap();
        let got: Vec<_> = v.iter().map(PromptLine::instruction).collect();
        assert_eq!(got, [Some("a"), Some("b"), None]);
    }

    #[test]
    fn files_are_read_and_a_missing_one_is_named() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("f.jsonl");
        std::fs::write(&path, "{\"id\": \"a\", \"prompt\": \"x\"}\n").unwrap();
        assert_eq!(
            read_prompt_lines(&path, PromptFormat::STRICT)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(load_prompts(&path).unwrap()[0].id, "a");
        let e = read_prompt_lines(&t.path().join("none.jsonl"), PromptFormat::STRICT).unwrap_err();
        assert!(e.to_string().contains("none.jsonl"), "{e}");
    }
}
