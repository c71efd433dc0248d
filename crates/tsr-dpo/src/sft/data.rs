//! SFT examples: reading TRL-style JSON lines, tokenizing with the chat template, the loss mask.
//!
//! # Formats
//! One JSON object per line, either
//! - **conversational**: `{"messages": [{"role", "content"}, ...]}` — every assistant message
//!   is learned, everything else is context;
//! - **prompt-completion**: `{"prompt", "completion"}` — plain strings, or a list of messages
//!   and a list holding one assistant message (TRL's conversational prompt-completion), or a
//!   list of messages and a string (the assistant reply). Only the completion is learned.
//!
//! Unknown keys are rejected (a misspelt `mesages` would otherwise train on nothing); blank lines
//! are skipped; a line that does not parse is an error naming it.
//!
//! # Tokenization and the loss mask
//! The loss mask is decided on token ids: the text is cut into context and learned pieces
//! **before** tokenizing, each piece is tokenized on its own (`add_special_tokens = false`
//! except for a plain-text prompt, which gets the tokenizer's special tokens) and the ids are
//! concatenated, so a learned token is never half context.
//! - prompt-completion: exactly as DPO's pairs ([`crate::data`]): prompt ids, then completion
//!   ids (plain text: the completion followed by EOS; chat: the text the template appends for
//!   the assistant turn, e.g. `"{content}<|im_end|>\n"` for ChatML, so the end-of-turn token is
//!   learned);
//! - conversational: assistant turn `i` spans, in the rendered conversation, from the end of
//!   `template(messages[..i], add_generation_prompt = true)` to the end of
//!   `template(messages[..=i])`: its content and the template's end-of-turn text, as in TRL's
//!   prompt-completion split. The template must render each prefix of the conversation as a
//!   prefix of the whole (ChatML, Llama 3 and most templates do); otherwise the example is an
//!   error, since its assistant tokens cannot be located.
//!
//! TRL's `assistant_only_loss=True` instead needs `{% generation %}` markers in the template;
//! on ChatML templates both mark the same tokens except the newline after `<|im_end|>`, which
//! tsr learns (as TRL does for prompt-completion data).
//!
//! # Truncation
//! Each example is cut to its first `max_length` tokens (TRL's SFT truncation). An example with
//! no learned token left after the first position is dropped and reported.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{completion_ids, prompt_ids, Message, PairCompletion, PairPrompt, PairTokenizer};
use crate::error::{DpoError, Result};

/// `{"messages": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// The conversation; assistant messages are learned.
    pub messages: Vec<Message>,
}

/// `{"prompt", "completion"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptCompletion {
    /// Context: text, or chat messages.
    pub prompt: PairPrompt,
    /// What is learned: text, or one assistant message.
    pub completion: PairCompletion,
}

/// One SFT example as read from JSONL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SftExample {
    /// A conversation.
    Conversation(Conversation),
    /// A prompt and its completion.
    PromptCompletion(PromptCompletion),
}

impl SftExample {
    /// A conversation example.
    pub fn messages(messages: Vec<Message>) -> Self {
        SftExample::Conversation(Conversation { messages })
    }

    /// A plain-text prompt-completion example.
    pub fn text(prompt: impl Into<String>, completion: impl Into<String>) -> Self {
        SftExample::PromptCompletion(PromptCompletion {
            prompt: PairPrompt::Text(prompt.into()),
            completion: PairCompletion::Text(completion.into()),
        })
    }

    fn check(&self) -> std::result::Result<(), String> {
        match self {
            SftExample::Conversation(c) if c.messages.is_empty() => {
                Err("messages: empty list".into())
            }
            SftExample::Conversation(_) => Ok(()),
            SftExample::PromptCompletion(p) => {
                p.completion
                    .content()
                    .map_err(|e| format!("completion: {e}"))?;
                match &p.prompt {
                    PairPrompt::Text(_) if matches!(p.completion, PairCompletion::Chat(_)) => {
                        Err("a plain-text prompt needs a plain-text completion".into())
                    }
                    PairPrompt::Chat(m) if m.is_empty() => Err("prompt: empty message list".into()),
                    _ => Ok(()),
                }
            }
        }
    }
}

fn parse_line(line: &str, path: &Path, lineno: usize) -> Result<SftExample> {
    let err = |reason: String| DpoError::Data {
        path: path.to_path_buf(),
        line: lineno,
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| err(format!("invalid json: {e}")))?;
    let ex = if value.get("messages").is_some() {
        serde_json::from_value(value)
            .map(SftExample::Conversation)
            .map_err(|e| {
                err(format!(
                    "expected {{\"messages\": [{{role, content}}, ...]}}: {e}"
                ))
            })?
    } else if value.get("prompt").is_some() || value.get("completion").is_some() {
        serde_json::from_value(value)
            .map(SftExample::PromptCompletion)
            .map_err(|e| {
                err(format!(
                    "expected prompt and completion as strings or lists of {{role, content}} messages: {e}"
                ))
            })?
    } else {
        return Err(err(
            "expected `messages` or `prompt` and `completion` fields".into(),
        ));
    };
    ex.check().map_err(err)?;
    Ok(ex)
}

/// Parses JSONL text (see the [module docs](self)); `path` only names the source in errors.
pub fn parse_examples(text: &str, path: &Path) -> Result<Vec<SftExample>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l, path, i + 1))
        .collect()
}

/// Reads a JSONL file of SFT examples.
pub fn read_examples(path: &Path) -> Result<Vec<SftExample>> {
    let file = std::fs::File::open(path).map_err(|e| DpoError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DpoError::io(path, e))?;
        if !line.trim().is_empty() {
            out.push(parse_line(&line, path, i + 1)?);
        }
    }
    Ok(out)
}

/// One tokenized example: `ids` and, per id, whether it is learned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenizedExample {
    /// Position of the example in the input list.
    pub index: usize,
    /// Token ids (after truncation).
    pub ids: Vec<u32>,
    /// `labels[t]`: token `t` is learned (predicted from `ids[..t]` and counted in the loss).
    /// Never true at `t = 0`, which has no context.
    pub labels: Vec<bool>,
}

impl TokenizedExample {
    /// Number of learned tokens.
    pub fn learned(&self) -> usize {
        self.labels.iter().filter(|&&l| l).count()
    }
}

/// Appends `ids` with label `learn`.
fn push(ids: &mut Vec<u32>, labels: &mut Vec<bool>, piece: Vec<u32>, learn: bool) {
    labels.extend(std::iter::repeat_n(learn, piece.len()));
    ids.extend(piece);
}

/// A problem with the example itself (its line is filled in by [`tokenize_examples`]).
fn bad_example(reason: String) -> DpoError {
    DpoError::Data {
        path: PathBuf::from("<memory>"),
        line: 0,
        reason,
    }
}

fn conversation_ids<T: PairTokenizer + ?Sized>(
    tok: &T,
    msgs: &[Message],
) -> Result<(Vec<u32>, Vec<bool>)> {
    let full = tok.render_chat(msgs, false)?;
    let mut spans = Vec::new();
    let mut prev_end = 0;
    for (i, m) in msgs.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = tok.render_chat(&msgs[..i], true)?;
        let upto = tok.render_chat(&msgs[..=i], false)?;
        if !(full.starts_with(&upto) && upto.starts_with(&before) && before.len() >= prev_end) {
            return Err(bad_example(format!(
                "the chat template does not render message {i} (assistant) as an extension of the conversation before it: its tokens cannot be located"
            )));
        }
        spans.push((before.len(), upto.len()));
        prev_end = upto.len();
    }
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    let mut cursor = 0;
    for (start, end) in spans {
        if start > cursor {
            push(
                &mut ids,
                &mut labels,
                tok.encode_ids(&full[cursor..start], false)?,
                false,
            );
        }
        push(
            &mut ids,
            &mut labels,
            tok.encode_ids(&full[start..end], false)?,
            true,
        );
        cursor = end;
    }
    if cursor < full.len() {
        push(
            &mut ids,
            &mut labels,
            tok.encode_ids(&full[cursor..], false)?,
            false,
        );
    }
    Ok((ids, labels))
}

/// Token ids and loss mask of one example, before truncation.
pub fn example_ids<T: PairTokenizer + ?Sized>(
    tok: &T,
    ex: &SftExample,
) -> Result<(Vec<u32>, Vec<bool>)> {
    ex.check().map_err(bad_example)?;
    match ex {
        SftExample::Conversation(c) => conversation_ids(tok, &c.messages),
        SftExample::PromptCompletion(p) => {
            let (prompt, text) = prompt_ids(tok, &p.prompt)?;
            let completion = completion_ids(tok, &p.prompt, &p.completion, text.as_deref())?;
            let mut ids = Vec::new();
            let mut labels = Vec::new();
            push(&mut ids, &mut labels, prompt, false);
            push(&mut ids, &mut labels, completion, true);
            Ok((ids, labels))
        }
    }
}

/// Tokenizes and truncates examples (see the [module docs](self)). Returns the kept examples
/// and the indices of those dropped because no learned token is left.
pub fn tokenize_examples<T: PairTokenizer + ?Sized>(
    tok: &T,
    examples: &[SftExample],
    max_length: usize,
) -> Result<(Vec<TokenizedExample>, Vec<usize>)> {
    let mut kept = Vec::with_capacity(examples.len());
    let mut dropped = Vec::new();
    for (index, ex) in examples.iter().enumerate() {
        let (mut ids, mut labels) = example_ids(tok, ex).map_err(|e| match e {
            DpoError::Data {
                path,
                line: 0,
                reason,
            } => DpoError::Data {
                path,
                line: index + 1,
                reason,
            },
            e => e,
        })?;
        ids.truncate(max_length);
        labels.truncate(max_length);
        if let Some(first) = labels.first_mut() {
            *first = false;
        }
        let t = TokenizedExample { index, ids, labels };
        if t.learned() == 0 {
            dropped.push(index);
        } else {
            kept.push(t);
        }
    }
    if !dropped.is_empty() {
        tracing::warn!(
            dropped = dropped.len(),
            max_length,
            "sft examples dropped: no learned token within max_length"
        );
    }
    Ok((kept, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tests::ByteTok;

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    fn learned_text(t: &TokenizedExample) -> Vec<String> {
        // Maximal runs of learned ids, decoded by ByteTok's rule (id - 3; 2 = <eos>).
        let mut runs = Vec::new();
        let mut cur: Option<String> = None;
        for (&id, &l) in t.ids.iter().zip(&t.labels) {
            if l {
                let s = cur.get_or_insert_with(String::new);
                if id == 2 {
                    s.push_str("<eos>");
                } else {
                    s.push((id - 3) as u8 as char);
                }
            } else if let Some(s) = cur.take() {
                runs.push(s);
            }
        }
        runs.extend(cur);
        runs
    }

    #[test]
    fn formats_parse_and_unknown_keys_are_rejected() {
        let text = concat!(
            r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#,
            "\n\n",
            r#"{"prompt":"p","completion":"c"}"#,
            "\n",
            r#"{"prompt":[{"role":"user","content":"q"}],"completion":[{"role":"assistant","content":"a"}]}"#,
        );
        let ex = parse_examples(text, Path::new("x")).unwrap();
        assert_eq!(ex.len(), 3);
        assert!(matches!(ex[0], SftExample::Conversation(_)));
        assert_eq!(ex[1], SftExample::text("p", "c"));
        for (line, needle) in [
            (r#"{"messages":[],"id":3}"#, "unknown field `id`"),
            (
                r#"{"prompt":"p","completion":"c","x":1}"#,
                "unknown field `x`",
            ),
            (r#"{"prompt":"p"}"#, "missing field `completion`"),
            (r#"{"text":"p"}"#, "expected `messages` or `prompt`"),
            (r#"{"messages":[]}"#, "empty list"),
            (
                r#"{"prompt":"p","completion":[{"role":"assistant","content":"a"}]}"#,
                "plain-text completion",
            ),
            ("nope", "invalid json"),
        ] {
            let e = parse_examples(line, Path::new("d.jsonl"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("d.jsonl:1: "), "{e}");
            assert!(e.contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn only_assistant_turns_are_learned() {
        let ex = SftExample::messages(vec![
            msg("system", "s"),
            msg("user", "q1"),
            msg("assistant", "a1"),
            msg("user", "q2"),
            msg("assistant", "a2"),
        ]);
        let (t, dropped) = tokenize_examples(&ByteTok, &[ex], 1000).unwrap();
        assert!(dropped.is_empty());
        let t = &t[0];
        let full = ByteTok
            .render_chat(
                &[
                    msg("system", "s"),
                    msg("user", "q1"),
                    msg("assistant", "a1"),
                    msg("user", "q2"),
                    msg("assistant", "a2"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(t.ids, ByteTok.encode_ids(&full, false).unwrap());
        // Content and the end-of-turn text of each assistant turn, nothing else.
        assert_eq!(learned_text(t), vec!["a1<eos>\n", "a2<eos>\n"]);
        assert_eq!(t.learned(), 2 * 4); // a, 1, <eos>, \n per turn
    }

    #[test]
    fn prompt_completion_learns_the_completion_and_eos() {
        let ex = vec![
            SftExample::text("ab", "cd"),
            SftExample::PromptCompletion(PromptCompletion {
                prompt: PairPrompt::Chat(vec![msg("user", "q")]),
                completion: PairCompletion::Chat(vec![msg("assistant", "yes")]),
            }),
        ];
        let (t, _) = tokenize_examples(&ByteTok, &ex, 1000).unwrap();
        assert_eq!(t[0].ids, vec![1, 100, 101, 102, 103, 2]);
        assert_eq!(t[0].labels, vec![false, false, false, true, true, true]);
        assert_eq!(learned_text(&t[1]), vec!["yes<eos>\n"]);
        let prompt = ByteTok
            .encode_ids("[user]q<eos>\n[assistant]", false)
            .unwrap();
        assert_eq!(&t[1].ids[..prompt.len()], prompt.as_slice());
        assert!(t[1].labels[..prompt.len()].iter().all(|&l| !l));
    }

    #[test]
    fn truncation_keeps_the_start_and_drops_examples_with_nothing_learned() {
        let ex = vec![
            SftExample::text("abcd", "xyz"),
            SftExample::text("abcdefgh", "x"),
            SftExample::messages(vec![msg("user", "no answer")]),
        ];
        // Example 0: bos + 4 prompt ids, then x y z eos; cut to 7 keeps x and y.
        let (t, dropped) = tokenize_examples(&ByteTok, &ex, 7).unwrap();
        assert_eq!(dropped, vec![1, 2]);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].ids.len(), 7);
        assert_eq!(learned_text(&t[0]), vec!["xy"]);
    }

    #[test]
    fn a_template_that_rewrites_history_is_an_error() {
        // A template that renders only the last message: prefixes are not prefixes.
        #[derive(Debug)]
        struct LastOnly;
        impl PairTokenizer for LastOnly {
            fn encode_ids(&self, text: &str, a: bool) -> Result<Vec<u32>> {
                ByteTok.encode_ids(text, a)
            }
            fn render_chat(&self, m: &[Message], g: bool) -> Result<String> {
                ByteTok.render_chat(&m[m.len().saturating_sub(1)..], g)
            }
            fn eos_id(&self) -> Option<u32> {
                Some(2)
            }
        }
        let ex = SftExample::messages(vec![msg("user", "q"), msg("assistant", "a")]);
        let e = tokenize_examples(&LastOnly, &[ex], 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be located"), "{e}");
    }
}
