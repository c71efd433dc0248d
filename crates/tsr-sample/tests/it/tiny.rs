//! A tiny random Llama and a word-level tokenizer for generation tests.

use serde_json::json;
use tsr_model::{ChatTokenizer, LoadOptions, Model, ModelConfig};

pub const VOCAB: usize = 64;

/// Token `i` (i >= 2) is a single character; 0 = `<pad>`, 1 = `<eos>`.
pub fn token_text(i: usize) -> String {
    const CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    match i {
        0 => "<pad>".into(),
        1 => "<eos>".into(),
        _ => CHARS.chars().nth(i - 2).unwrap().to_string(),
    }
}

/// A word-level tokenizer over the 64 tokens (whitespace-separated), with a trivial chat
/// template that joins the message contents.
pub fn tokenizer() -> (tempfile::TempDir, ChatTokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..VOCAB).map(|i| (token_text(i), json!(i))).collect();
    let special = |id: usize| {
        json!({"id": id, "content": token_text(id), "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0), special(1)],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<pad>"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let cfg = json!({
        "eos_token": "<eos>", "pad_token": "<pad>",
        "chat_template": "{% for m in messages %}{{ m.content }} {% endfor %}{% if add_generation_prompt %}Z{% endif %}"
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let t = ChatTokenizer::from_hf_dir(dir.path()).unwrap();
    (dir, t)
}

pub fn config(eos: u32, context: usize) -> ModelConfig {
    let c = json!({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": VOCAB,
        "tie_word_embeddings": false, "max_position_embeddings": context,
        "eos_token_id": eos,
    });
    ModelConfig::from_json_str(&c.to_string()).unwrap()
}

/// The same random weights for every `eos` (the config's eos id does not change them).
pub fn model(eos: u32, context: usize) -> Model {
    Model::random(config(eos, context), 7, &LoadOptions::default()).unwrap()
}

/// Prompt token ids of different lengths (so left padding is exercised).
pub fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5, 9, 3, 22, 17, 40, 2],
        vec![33, 12],
        vec![8, 8, 50, 61, 7],
    ]
}
