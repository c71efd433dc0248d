//! Building a [`ChatTokenizer`] from GGUF metadata: byte-level BPE (`gpt2`) with the
//! pre-tokenizer split its `tokenizer.ggml.pre` names, and SentencePiece BPE (`llama`) with byte
//! fallback, as transformers' GGUF converter builds them.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::{tok_err, ChatTokenizer, Parts};
use crate::error::ModelError;
use crate::gguf::{GgufFile, MetaValue};

impl ChatTokenizer {
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
}
