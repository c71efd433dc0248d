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

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value as JinjaValue};
use serde::Serialize;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::error::ModelError;
use crate::gguf::{GgufFile, MetaValue};

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

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| ModelError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::io(path, e)
    })
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

    /// Builds the tokenizer a GGUF file describes (`tokenizer.ggml.*` metadata, byte-level BPE
    /// `gpt2` vocabularies) with its chat template.
    ///
    /// A byte-level vocabulary whose pre-tokenizer (`tokenizer.ggml.pre`) tsr does not know is
    /// refused, since it would split text differently from the model's own tokenizer; with the
    /// environment variable `TSR_ALLOW_UNKNOWN_PRETOKENIZER=1` it is built with the GPT-2 split
    /// and a warning instead (see [`ChatTokenizer::from_gguf_with`]).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let allow = std::env::var(ALLOW_UNKNOWN_PRETOKENIZER_ENV).is_ok_and(|v| v == "1");
        Self::from_gguf_with(file, allow)
    }

    /// [`ChatTokenizer::from_gguf`], with the opt-in for an unknown pre-tokenizer given
    /// explicitly: `allow_unknown_pretokenizer` uses the GPT-2 split (and warns) instead of
    /// refusing.
    pub fn from_gguf_with(
        file: &GgufFile,
        allow_unknown_pretokenizer: bool,
    ) -> Result<Self, ModelError> {
        let path = file.path();
        let err = |msg: String| tok_err(Some(path), msg);
        let model = file
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| err("missing tokenizer.ggml.model".into()))?;
        if model != "gpt2" && model != "llama" {
            return Err(err(format!(
                "tokenizer model {model:?} is not supported (gpt2 byte-level bpe and llama \
                 sentencepiece bpe are)"
            )));
        }
        let spm = model == "llama";
        let strings = |key: &str| -> Result<Vec<String>, ModelError> {
            let arr = file
                .get(key)
                .and_then(MetaValue::as_array)
                .ok_or_else(|| err(format!("missing {key}")))?;
            arr.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("{key} holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match file
            .get("tokenizer.ggml.token_type")
            .and_then(MetaValue::as_array)
        {
            Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let id_of = |key: &str| -> Result<Option<u32>, ModelError> {
            match file
                .get(&format!("tokenizer.ggml.{key}"))
                .and_then(MetaValue::as_u64)
            {
                None => Ok(None),
                Some(id) if (id as usize) < tokens.len() => Ok(Some(id as u32)),
                Some(id) => Err(err(format!(
                    "tokenizer.ggml.{key} {id} is outside the vocabulary"
                ))),
            }
        };
        let name_of = |id: Option<u32>| id.map(|i| tokens[i as usize].clone());
        let bos = id_of("bos_token_id")?;
        let eos = id_of("eos_token_id")?;
        let pad = id_of("padding_token_id")?;
        let unk = id_of("unknown_token_id")?;
        let eot = id_of("eot_token_id")?;
        let add_bos = file
            .get("tokenizer.ggml.add_bos_token")
            .and_then(MetaValue::as_bool)
            .unwrap_or(spm);
        let add_eos = file
            .get("tokenizer.ggml.add_eos_token")
            .and_then(MetaValue::as_bool)
            .unwrap_or(false);
        let pre = file.get_str("tokenizer.ggml.pre").unwrap_or("default");

        let (vocab, added, merges, pre_tokenizer, decoder) = if spm {
            spm_parts(file, &tokens, &types, unk)?
        } else {
            let merges = strings("tokenizer.ggml.merges")?;
            gpt2_parts(
                path,
                &tokens,
                &types,
                &merges,
                pre,
                allow_unknown_pretokenizer,
            )?
        };
        let post_processor = match bos.filter(|_| add_bos) {
            Some(b) => {
                let bt = &tokens[b as usize];
                json!({"type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": bt, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": bt, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                             {"SpecialToken": {"id": bt, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {bt.as_str(): {"id": bt, "ids": [b], "tokens": [bt]}}})
            }
            None => json!({"type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {}}),
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": decoder,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": spm, "byte_fallback": spm,
                "ignore_merges": false, "vocab": vocab, "merges": merges,
            },
        });
        let tokenizer = Tokenizer::from_str(&spec.to_string())
            .map_err(|e| err(format!("building the bpe tokenizer: {e}")))?;
        Self::assemble(
            tokenizer,
            Parts {
                chat_template: file.get_str("tokenizer.chat_template").map(str::to_string),
                bos_token: name_of(bos),
                eos_token: name_of(eos),
                pad_token: name_of(pad),
                unk_token: name_of(unk),
                add_bos_token: add_bos,
                add_eos_token: add_eos,
                model_max_length: file
                    .architecture()
                    .ok()
                    .and_then(|a| file.get(&format!("{a}.context_length")))
                    .and_then(MetaValue::as_u64),
                extra_eos: eot.into_iter().collect(),
            },
            Some(path),
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

/// The environment variable that lets [`ChatTokenizer::from_gguf`] build a GGUF tokenizer whose
/// pre-tokenizer tsr does not know (with the GPT-2 split) instead of refusing it.
pub const ALLOW_UNKNOWN_PRETOKENIZER_ENV: &str = "TSR_ALLOW_UNKNOWN_PRETOKENIZER";

/// The `tokenizer.ggml.pre` values tsr builds, for the error message.
const KNOWN_PRE: &str = "smollm, llama3, llama-v3, llama-bpe, falcon3, smaug-bpe, dbrx, qwen2, \
                         deepseek-r1-qwen, default, gpt2 and gpt-2";

/// Vocabulary, added tokens, merges, pre-tokenizer and decoder of the tokenizer that builds.
type SpecParts = (
    serde_json::Map<String, Value>,
    Vec<Value>,
    Vec<Value>,
    Value,
    Value,
);

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`), as transformers' GGUF converter builds it,
/// with the split of the named pre-tokenizer.
fn gpt2_parts(
    path: &Path,
    tokens: &[String],
    types: &[i64],
    merges: &[String],
    pre: &str,
    allow_unknown_pre: bool,
) -> Result<SpecParts, ModelError> {
    let err = |msg: String| tok_err(Some(path), msg);
    let alphabet = byte_alphabet();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        // As transformers: a token outside the byte alphabet is spelled byte by byte.
        let spelled = if in_alphabet(t) {
            t.clone()
        } else {
            spell_bytes(t.as_bytes())
        };
        vocab.insert(spelled, json!(id));
        let ty = types.get(id).copied().unwrap_or(1);
        // 3 = control (special), 4 = user-defined (added, not special).
        if (ty == 3 && in_alphabet(t)) || ty == 4 {
            added.push(json!({
                "id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == 3,
            }));
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| {
                    err(format!(
                        "merge {m:?} is not two tokens separated by a space"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    let pre_tokenizer = match gguf_pre_tokenizer(pre) {
        Some(p) => p,
        None if allow_unknown_pre => {
            tracing::warn!(pre, path = %path.display(), "unknown gguf pre-tokenizer; using the gpt2 split ({ALLOW_UNKNOWN_PRETOKENIZER_ENV} is set)");
            gguf_pre_tokenizer("gpt2").expect("gpt2 is known")
        }
        None => {
            return Err(err(format!(
                "unknown gguf pre-tokenizer {pre:?} (tokenizer.ggml.pre): tsr knows {KNOWN_PRE}, \
                 and another split would tokenize text differently from the model's own \
                 tokenizer; set {ALLOW_UNKNOWN_PRETOKENIZER_ENV}=1 to use the gpt2 split anyway"
            )))
        }
    };
    let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
    Ok((vocab, added, merges, pre_tokenizer, decoder))
}

/// The `tokenizers` pre-tokenizer (as JSON) that a GGUF `tokenizer.ggml.pre` name stands for, as
/// transformers' GGUF converter builds it; `None` for a name tsr does not know.
pub(crate) fn gguf_pre_tokenizer(pre: &str) -> Option<Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]})
    };
    Some(match pre {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level(true),
        ]}),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" => {
            split(LLAMA3_SPLIT)
        }
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_SPLIT),
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        _ => return None,
    })
}

/// SentencePiece BPE (`tokenizer.ggml.model = llama`: Llama 2, Mistral), as transformers' GGUF
/// converter builds it: the vocabulary as spelled, merges recovered from the token scores,
/// Metaspace pre-tokenizer, byte fallback.
fn spm_parts(
    file: &GgufFile,
    tokens: &[String],
    types: &[i64],
    unk: Option<u32>,
) -> Result<SpecParts, ModelError> {
    let path = file.path();
    let scores: Vec<f64> = file
        .get("tokenizer.ggml.scores")
        .and_then(MetaValue::as_array)
        .ok_or_else(|| tok_err(Some(path), "missing tokenizer.ggml.scores"))?
        .iter()
        .map(|v| v.as_f64().unwrap_or(0.0))
        .collect();
    if scores.len() != tokens.len() {
        return Err(tok_err(
            Some(path),
            format!("{} scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        ids.entry(t.as_str()).or_insert(id);
        vocab.insert(t.clone(), json!(id));
        let ty = types.get(id).copied().unwrap_or(1);
        // control tokens and the unknown token are special; user-defined ones plain added.
        if ty == 3 || ty == 4 || Some(id as u32) == unk {
            added.push(json!({
                "id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty != 4,
            }));
        }
    }
    let merges = spm_merges(tokens, &scores, &ids)
        .into_iter()
        .map(|(l, r)| json!([l, r]))
        .collect();
    let pre_tokenizer = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false});
    let decoder = json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]});
    Ok((vocab, added, merges, pre_tokenizer, decoder))
}

/// Merges implied by a scored vocabulary (transformers' `generate_merges`): every split of a
/// token into two vocabulary tokens, ordered by the token's score (best first), then by longer
/// left and right parts, ties kept in vocabulary order.
fn spm_merges<'a>(
    tokens: &'a [String],
    scores: &[f64],
    ids: &HashMap<&str, usize>,
) -> Vec<(&'a str, &'a str)> {
    let mut merges: Vec<(&str, &str, f64, usize, usize)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, t) in tokens.iter().enumerate() {
        if !seen.insert(t.as_str()) {
            continue;
        }
        let mut local = Vec::new();
        for (at, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(at);
            if let (Some(&il), Some(&ir)) = (ids.get(l), ids.get(r)) {
                local.push((l, r, il, ir));
            }
        }
        local.sort_by_key(|&(_, _, il, ir)| (il, ir));
        for (l, r, _, _) in local {
            merges.push((l, r, scores[i], l.chars().count(), r.chars().count()));
        }
    }
    // Stable sort, descending on (score, len(left), len(right)), like Python's sorted(reverse=True).
    merges.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.3.cmp(&a.3))
            .then(b.4.cmp(&a.4))
    });
    merges.into_iter().map(|(l, r, ..)| (l, r)).collect()
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

/// Pre-tokenizer split of Llama 3 style vocabularies (as llama.cpp and transformers use it).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Pre-tokenizer split of Qwen2 vocabularies.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-2's byte-to-character table: printable bytes map to themselves, the rest to U+0100 on.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            let c = char::from_u32(next).expect("bmp");
            next += 1;
            c
        };
    }
    table
}

fn byte_alphabet() -> std::collections::HashSet<char> {
    byte_to_char().into_iter().collect()
}

fn spell_bytes(bytes: &[u8]) -> String {
    let table = byte_to_char();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

/// Renders a Hugging Face chat template with `context` (a JSON object of template variables).
pub fn render_chat_template(template: &str, context: &Value) -> Result<String, ModelError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<JinjaValue, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function(
        "strftime_now",
        |fmt: String| -> Result<String, JinjaError> { Ok(strftime_now(&fmt)) },
    );
    env.add_filter("tojson", tojson);
    let tmpl = env
        .template_from_str(template)
        .map_err(|e| ModelError::Template {
            msg: jinja_message(&e),
        })?;
    tmpl.render(context).map_err(|e| ModelError::Template {
        msg: jinja_message(&e),
    })
}

fn jinja_message(e: &JinjaError) -> String {
    let mut msg = match (e.kind(), e.detail()) {
        (ErrorKind::InvalidOperation, Some(d)) => d.to_string(),
        _ => e.to_string(),
    };
    if let Some(line) = e.line() {
        if !msg.contains("line") {
            msg.push_str(&format!(" (template line {line})"));
        }
    }
    msg
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: JinjaValue, kwargs: minijinja::value::Kwargs) -> Result<String, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("sort_keys").ok().flatten();
    kwargs.assert_all_used()?;
    let v = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    py_json(&v, indent, 0, &mut out);
    Ok(out)
}

fn py_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                py_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Object(o) if !o.is_empty() => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                py_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The current UTC time formatted with a subset of C `strftime` (`%Y %m %d %e %b %B %a %A %H %M
/// %S %y %j %%`); unknown directives are kept verbatim.
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_utc(secs, fmt)
}

fn format_utc(secs: i64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let mname = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('b') => out.push_str(&mname[..3]),
            Some('B') => out.push_str(mname),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_gpt2() {
        let t = byte_to_char();
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], '\u{120}'); // Ġ
        assert_eq!(t[b'\n' as usize], '\u{10a}'); // Ċ
        assert_eq!(byte_alphabet().len(), 256);
    }

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC is 1709211909.
        assert_eq!(
            format_utc(1_709_211_909, "%Y-%m-%d %H:%M:%S %j"),
            "2024-02-29 13:05:09 060"
        );
        assert_eq!(
            format_utc(1_709_211_909, "%d %b %Y, %A"),
            "29 Feb 2024, Thursday"
        );
        assert_eq!(format_utc(0, "%a %e %B %y %% %Q"), "Thu  1 January 70 % %Q");
    }

    #[test]
    fn template_is_python_jinja_like() {
        let t = "{% for m in messages %}\n  {{ m.role|upper }}: {{ m['content'].strip() }}\n{% endfor %}\
                 {% if add_generation_prompt %}{{ bos_token }}{% endif %}";
        let out = render_chat_template(
            t,
            &json!({"messages": [{"role": "user", "content": " hi "}], "add_generation_prompt": true, "bos_token": "<s>"}),
        )
        .unwrap();
        assert_eq!(out, "  USER: hi\n<s>");
        let e = render_chat_template("{{ raise_exception('roles must alternate') }}", &json!({}))
            .unwrap_err();
        assert!(
            matches!(&e, ModelError::Template { msg } if msg.contains("roles must alternate")),
            "{e}"
        );
        let e = render_chat_template("{% for %}", &json!({})).unwrap_err();
        assert!(matches!(e, ModelError::Template { .. }));
        let out = render_chat_template(
            "{{ x|tojson }}|{{ x|tojson(indent=2) }}",
            &json!({"x": {"a": [1, "é<"]}}),
        )
        .unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, \"é<\"]}|{\n  \"a\": [\n    1,\n    \"é<\"\n  ]\n}"
        );
    }
}
