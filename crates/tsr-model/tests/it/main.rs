//! Integration tests of tsr-model's decoder: parity with transformers on tiny random checkpoints
//! (built by `tests/fixtures/make_parity.py`), KV-cache decoding, saving, and error reporting.

mod checkpoint;
mod decoder;
mod errors;
mod gguf;
mod gguf_export;
mod lora;
mod save;
mod tokenizer;

use std::path::{Path, PathBuf};

use tsr_model::{hf, Kind, LoadOptions, Model, Tensor};

/// libtorch's global generator (dropout) is shared by the test threads: tests that draw from it
/// hold this lock.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

pub const CASES: [&str; 4] = ["llama", "llama3_rope", "qwen2", "mistral_window"];

pub fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(case)
}

/// Inputs and transformers' logits of one case.
#[derive(Debug)]
pub struct Expected {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub position_ids: Tensor,
    pub logits: Tensor,
}

pub fn expected(case: &str) -> Expected {
    let path = fixture_dir(case).join("expected.safetensors");
    let tensors = hf::read_safetensors(&path, None).expect("fixture");
    let get = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}"))
            .1
            .shallow_clone()
    };
    Expected {
        input_ids: get("input_ids"),
        attention_mask: get("attention_mask"),
        position_ids: get("position_ids"),
        logits: get("logits"),
    }
}

pub fn load(case: &str) -> Model {
    hf::load_model_dir(&fixture_dir(case), &LoadOptions::default()).expect("load fixture")
}

/// Max |a - b| over the positions where `mask` is 1 (`a`, `b`: `[B, T, V]`).
pub fn max_diff_real(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let keep = mask.to_kind(Kind::Float).unsqueeze(-1);
    ((a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs() * keep)
        .max()
        .double_value(&[])
}
