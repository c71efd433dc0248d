//! [`GenerationConfig`]: `generation_config.json`, the special ids generation needs.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ModelConfig, TokenIds};
use crate::error::ModelError;
use crate::tokenizer::{write_atomic, ChatTokenizer};

/// `generation_config.json`: the special ids generation needs; every other field (sampling
/// defaults, ...) is kept verbatim for saving.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// One id or a list, as HF writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl GenerationConfig {
    /// Reads a `generation_config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| ModelError::json(path, e))
    }

    /// The ids a model's config and tokenizer agree on (used when a checkpoint has no
    /// `generation_config.json`, e.g. a GGUF file).
    pub fn from_model(config: &ModelConfig, tokenizer: &ChatTokenizer) -> Self {
        let bos = config
            .bos_token_id
            .as_ref()
            .and_then(|t| t.to_vec().first().copied())
            .or(tokenizer.bos_id());
        let mut eos = config.eos_ids();
        for &e in tokenizer.eos_ids() {
            if !eos.contains(&e) {
                eos.push(e);
            }
        }
        let eos_token_id = match eos.len() {
            0 => None,
            1 => Some(TokenIds::One(eos[0])),
            _ => Some(TokenIds::Many(eos)),
        };
        GenerationConfig {
            bos_token_id: bos,
            eos_token_id,
            pad_token_id: Some(tokenizer.pad_id()),
            extra: serde_json::Map::new(),
        }
    }

    /// The end-of-sequence ids (may be empty).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Writes `generation_config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let text = serde_json::to_string_pretty(self).expect("generation config serializes");
        write_atomic(&dir.join("generation_config.json"), text.as_bytes())
    }
}
