//! The `tokenizer.ggml.*` metadata of an exported file: vocabulary, token types, merges, the
//! pre-tokenizer's name, special ids and the chat template.

use serde_json::Value;

use super::writer::Meta;
use crate::load::Loaded;
use crate::tokenizer::gguf_pre_tokenizer;

/// The pre-tokenizer names tried when none is given, most specific first.
const PRE_CANDIDATES: &[&str] = &["smollm", "llama-bpe", "qwen2", "gpt2"];

/// Adds the `tokenizer.ggml.*` metadata; returns the pre-tokenizer name.
pub(super) fn tokenizer_metadata(
    loaded: &Loaded,
    n_vocab: usize,
    pre: Option<&str>,
    put: &mut impl FnMut(&str, Meta),
) -> Result<String, String> {
    let tok = &loaded.tokenizer;
    let json: Value = tok
        .inner()
        .to_string(false)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        .map_err(|e| format!("serializing the tokenizer: {e}"))?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") || model["byte_fallback"].as_bool() == Some(true) {
        return Err(format!(
            "only byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen2) export to GGUF; this one \
             is {} {}",
            model["type"].as_str().unwrap_or("of an unknown type"),
            if model["byte_fallback"].as_bool() == Some(true) {
                "with byte fallback (SentencePiece style)"
            } else {
                ""
            }
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or("tokenizer.json has no model.vocab")?;
    let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
    let mut types = vec![1i32; n_vocab];
    let mut place = |id: u64, text: &str| -> Result<usize, String> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            format!("token {text:?} has id {id}, outside the model's {n_vocab} embeddings")
        })?;
        *slot = Some(text.to_string());
        Ok(id as usize)
    };
    for (text, id) in vocab {
        place(
            id.as_u64().ok_or("a vocabulary id is not an integer")?,
            text,
        )?;
    }
    for t in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err("an added token lacks its id or content".into());
        };
        let i = place(id, text)?;
        // 3 = control (special), 4 = user-defined.
        types[i] = if t["special"].as_bool() == Some(true) {
            3
        } else {
            4
        };
    }
    // Embedding rows past the vocabulary: padding tokens, as llama.cpp's converter writes them.
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .ok_or("tokenizer.json has no model.merges")?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p) if p.len() == 2 => Ok(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            )),
            other => Err(format!("a merge is neither \"a b\" nor [a, b]: {other}")),
        })
        .collect::<Result<_, _>>()?;
    let pre = match pre {
        Some(p) => {
            if gguf_pre_tokenizer(p).is_none() {
                return Err(format!(
                    "unknown pre-tokenizer {p:?}: tsr can export {}",
                    PRE_CANDIDATES.join(", ")
                ));
            }
            p.to_string()
        }
        None => detect_pre(&json["pre_tokenizer"]).ok_or_else(|| {
            format!(
                "the tokenizer's pre-tokenizer matches none tsr knows ({}); name the one llama.cpp \
                 should use with --pre (a wrong one tokenizes text differently)",
                PRE_CANDIDATES.join(", ")
            )
        })?,
    };
    put("tokenizer.ggml.model", Meta::Str("gpt2".into()));
    put("tokenizer.ggml.pre", Meta::Str(pre.clone()));
    put("tokenizer.ggml.tokens", Meta::Strs(tokens));
    put("tokenizer.ggml.token_type", Meta::I32s(types));
    put("tokenizer.ggml.merges", Meta::Strs(merges));
    let bos = tok.bos_id();
    if let Some(b) = bos {
        put("tokenizer.ggml.bos_token_id", Meta::U32(b));
    }
    if let Some(&e) = tok.eos_ids().first() {
        put("tokenizer.ggml.eos_token_id", Meta::U32(e));
    }
    // Only a real padding token (the tokenizer's fallback pad is the EOS).
    let pad = loaded
        .model
        .config()
        .pad_token_id
        .as_ref()
        .and_then(|p| p.to_vec().first().copied());
    if let Some(p) = pad {
        put("tokenizer.ggml.padding_token_id", Meta::U32(p));
    }
    let adds_bos = bos.is_some()
        && tok
            .encode("a", true)
            .map_err(|e| e.to_string())?
            .first()
            .copied()
            == bos;
    put("tokenizer.ggml.add_bos_token", Meta::Bool(adds_bos));
    if let Some(t) = tok.chat_template() {
        put("tokenizer.chat_template", Meta::Str(t.to_string()));
    }
    Ok(pre)
}

/// The known pre-tokenizer whose `tokenizers` form equals `own` (both normalised by a round trip
/// through `tokenizers`).
fn detect_pre(own: &Value) -> Option<String> {
    use tokenizers::PreTokenizerWrapper;
    let norm = |v: &Value| -> Option<Value> {
        let w: PreTokenizerWrapper = serde_json::from_value(v.clone()).ok()?;
        serde_json::to_value(&w).ok()
    };
    let own = norm(own)?;
    PRE_CANDIDATES
        .iter()
        .find(|p| gguf_pre_tokenizer(p).and_then(|v| norm(&v)).as_ref() == Some(&own))
        .map(|p| p.to_string())
}
