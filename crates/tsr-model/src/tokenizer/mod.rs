//! [`ChatTokenizer`]: a `tokenizers` tokenizer plus the chat template and special tokens of a
//! model, read from a Hugging Face directory or from GGUF metadata, and saved back in the files
//! transformers reads.
//!
//! Chat templates render with minijinja set up like transformers' Jinja environment:
//! `trim_blocks` and `lstrip_blocks`, Python string/dict methods (`minijinja-contrib` pycompat),
//! `raise_exception`, `strftime_now`, and a `tojson` that writes what Python's `json.dumps` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::error::ModelError;

mod gguf;
mod template;

pub(crate) use gguf::gguf_pre_tokenizer;
pub use gguf::ALLOW_UNKNOWN_PRETOKENIZER_ENV;
pub use template::render_chat_template;

/// A tokenizer with its chat template and special tokens.
#[derive(Debug, Clone)]
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pad_token: Option<String>,
    unk_token: Option<String>,
    bos_id: Option<u32>,
    eos_ids: Vec<u32>,
    pad_id: u32,
    add_bos_token: bool,
    add_eos_token: bool,
    model_max_length: Option<u64>,
    source: Option<PathBuf>,
}

fn tok_err(path: Option<&Path>, msg: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer {
        path: path.map(Path::to_path_buf),
        msg: msg.to_string(),
    }
}

/// A special token in `tokenizer_config.json`: a string, `{"content": ...}` or null.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Writes `bytes` to `path` atomically (`tsr_io::write`).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    tsr_io::write(path, bytes).map_err(|e| ModelError::io(path, e))
}

impl ChatTokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json`, `chat_template.jinja`
    /// (transformers 5 keeps the template there) and `special_tokens_map.json`.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, ModelError> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(ModelError::MissingFile {
                path: tok_path,
                what: "tokenizer".into(),
            });
        }
        let text = std::fs::read_to_string(&tok_path).map_err(|e| ModelError::io(&tok_path, e))?;
        let tokenizer = Tokenizer::from_str(&text).map_err(|e| tok_err(Some(&tok_path), e))?;
        let read_json = |name: &str| -> Result<Option<Value>, ModelError> {
            let p = dir.join(name);
            if !p.is_file() {
                return Ok(None);
            }
            let t = std::fs::read_to_string(&p).map_err(|e| ModelError::io(&p, e))?;
            serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| ModelError::json(&p, e))
        };
        let cfg = read_json("tokenizer_config.json")?.unwrap_or(json!({}));
        let map = read_json("special_tokens_map.json")?.unwrap_or(json!({}));
        let special = |key: &str| token_string(cfg.get(key)).or_else(|| token_string(map.get(key)));
        let jinja_path = dir.join("chat_template.jinja");
        let chat_template = if jinja_path.is_file() {
            Some(std::fs::read_to_string(&jinja_path).map_err(|e| ModelError::io(&jinja_path, e))?)
        } else {
            match cfg.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                // A list of named templates: take "default", else the first.
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .or_else(|| list.first())
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            }
        };
        Self::assemble(
            tokenizer,
            Parts {
                chat_template,
                bos_token: special("bos_token"),
                eos_token: special("eos_token"),
                pad_token: special("pad_token"),
                unk_token: special("unk_token"),
                add_bos_token: cfg
                    .get("add_bos_token")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                add_eos_token: cfg
                    .get("add_eos_token")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                model_max_length: cfg.get("model_max_length").and_then(Value::as_u64),
                extra_eos: Vec::new(),
            },
            Some(dir),
        )
    }

    fn assemble(tokenizer: Tokenizer, p: Parts, source: Option<&Path>) -> Result<Self, ModelError> {
        let id = |t: &Option<String>, what: &str| -> Result<Option<u32>, ModelError> {
            match t {
                None => Ok(None),
                Some(t) => tokenizer.token_to_id(t).map(Some).ok_or_else(|| {
                    tok_err(source, format!("{what} {t:?} is not in the vocabulary"))
                }),
            }
        };
        let bos_id = id(&p.bos_token, "bos token")?;
        let eos_id = id(&p.eos_token, "eos token")?;
        let pad_id = id(&p.pad_token, "pad token")?;
        let mut eos_ids: Vec<u32> = eos_id.into_iter().collect();
        for e in p.extra_eos {
            if !eos_ids.contains(&e) {
                eos_ids.push(e);
            }
        }
        let pad_id = pad_id.or(eos_id).unwrap_or(0);
        Ok(ChatTokenizer {
            tokenizer,
            chat_template: p.chat_template,
            bos_token: p.bos_token,
            eos_token: p.eos_token,
            pad_token: p.pad_token,
            unk_token: p.unk_token,
            bos_id,
            eos_ids,
            pad_id,
            add_bos_token: p.add_bos_token,
            add_eos_token: p.add_eos_token,
            model_max_length: p.model_max_length,
            source: source.map(Path::to_path_buf),
        })
    }

    /// Token ids of `text`. `add_special_tokens` applies the tokenizer's post-processor (a bos for
    /// models that want one); chat prompts are encoded without it after templating.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| tok_err(self.source.as_deref(), format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| tok_err(self.source.as_deref(), format!("decoding failed: {e}")))
    }

    /// Renders the chat template over `messages` (anything serializing to `{role, content, ...}`
    /// maps). Without a template in the model's files this is an error.
    pub fn apply_chat_template<M: Serialize>(
        &self,
        messages: &[M],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| ModelError::Template {
                msg: format!(
                    "the tokenizer{} has no chat template",
                    self.source
                        .as_ref()
                        .map(|p| format!(" from {}", p.display()))
                        .unwrap_or_default()
                ),
            })?;
        render_chat_template(
            template,
            &json!({
                "messages": messages,
                "add_generation_prompt": add_generation_prompt,
                "bos_token": self.bos_token.clone().unwrap_or_default(),
                "eos_token": self.eos_token.clone().unwrap_or_default(),
                "pad_token": self.pad_token.clone().unwrap_or_default(),
                "unk_token": self.unk_token.clone().unwrap_or_default(),
            }),
        )
    }

    /// The chat template source, when the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Replaces the chat template.
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// Beginning-of-sequence id, when the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// End-of-sequence ids (the eos token, plus an end-of-turn token where the files name one).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Padding id: the pad token, else the eos token, else 0.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of ids the tokenizer can produce (base vocabulary plus added tokens).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The text of one token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// The id of one token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Whether encoding with special tokens puts the BOS token first (`add_bos_token`).
    pub fn add_bos_token(&self) -> bool {
        self.add_bos_token
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json` (with the chat template and special
    /// tokens) and `special_tokens_map.json` into `dir` (which must exist).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let json_text = self
            .tokenizer
            .to_string(false)
            .map_err(|e| tok_err(Some(dir), format!("serializing tokenizer.json: {e}")))?;
        let mut added = serde_json::Map::new();
        let decoder: HashMap<u32, tokenizers::AddedToken> = self
            .tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .collect();
        let mut ids: Vec<&u32> = decoder.keys().collect();
        ids.sort();
        for id in ids {
            let t = &decoder[id];
            added.insert(
                id.to_string(),
                json!({"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                       "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}),
            );
        }
        let mut config = json!({
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "added_tokens_decoder": added,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
            "clean_up_tokenization_spaces": false,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        let obj = config.as_object_mut().expect("object literal");
        if let Some(t) = &self.chat_template {
            obj.insert("chat_template".into(), json!(t));
        }
        if let Some(n) = self.model_max_length {
            obj.insert("model_max_length".into(), json!(n));
        }
        let mut map = serde_json::Map::new();
        for (k, v) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("pad_token", &self.pad_token),
            ("unk_token", &self.unk_token),
        ] {
            if let Some(v) = v {
                map.insert(k.into(), json!(v));
            }
        }
        let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("json values serialize");
        write_atomic(&dir.join("tokenizer.json"), json_text.as_bytes())?;
        write_atomic(
            &dir.join("tokenizer_config.json"),
            pretty(&config).as_bytes(),
        )?;
        write_atomic(
            &dir.join("special_tokens_map.json"),
            pretty(&Value::Object(map)).as_bytes(),
        )?;
        Ok(())
    }
}

struct Parts {
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pad_token: Option<String>,
    unk_token: Option<String>,
    add_bos_token: bool,
    add_eos_token: bool,
    model_max_length: Option<u64>,
    extra_eos: Vec<u32>,
}
