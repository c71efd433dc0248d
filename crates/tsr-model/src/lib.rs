//! `tsr-model`: decoder-only language models on libtorch.
//!
//! One decoder ([`Model`]) covers the Llama 2/3/3.x, Qwen2/2.5, Mistral and SmolLM2 families,
//! configured from a Hugging Face `config.json` ([`ModelConfig`]). It has a full-sequence forward
//! for training ([`Model::hidden_states`], [`Model::logits`]) and an incremental forward with a
//! [`KvCache`] for batched decoding of left-padded rows ([`Model::forward_cached`]).
//!
//! Checkpoints load from Hugging Face directories ([`hf`]: single or sharded safetensors) and
//! from GGUF files; [`load`] accepts a built-in name, a directory or a `.gguf` file. Models save
//! back to Hugging Face directories that transformers loads ([`Model::save_hf`]).

#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod autograd;
pub mod config;
pub mod dequant;
pub mod error;
pub mod generation;
pub mod gguf;
pub mod gguf_export;
pub mod hf;
pub mod hub;
pub mod kv_cache;
pub mod load;
pub mod memory;
pub mod model;
pub mod peft;
mod shim;
pub mod tokenizer;

pub use config::{ModelConfig, RopeConfig, RopeScaling, TokenIds};
pub use error::{error_chain, ModelError};
pub use kv_cache::KvCache;
pub use model::{Checkpoint, LoadOptions, LoraConfig, Model, Recompute, LORA_TARGETS};
pub use tch::{Device, Kind, Tensor};

// The loading/tokenizer half of the crate (see the API contract): `ChatTokenizer`,
// `GenerationConfig`, `Loaded`, `load`, `tsr_home`.
pub use load::*;
pub use tokenizer::*;
