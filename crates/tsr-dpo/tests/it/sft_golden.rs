//! SFT against TRL's `SFTTrainer` (fixture: `tests/fixtures/make_sft_golden.py`): the same
//! tokenization and loss mask, per-step loss and gradient norm, and final weights.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tch::Tensor;
use tsr_dpo::sft::{make_rows, read_examples, tokenize_examples, SftTrainer};
use tsr_dpo::{LrSchedule, SftConfig, VecSink};
use tsr_model::{load, LoadOptions};

use crate::trainer::{rng_lock, weights};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sft")
}

#[test]
fn sft_matches_trl() {
    let _rng = rng_lock();
    let dir = fixture();
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("golden.json")).unwrap()).unwrap();
    let s = &golden["settings"];
    let mut loaded = load(dir.join("model").to_str().unwrap(), &LoadOptions::default()).unwrap();
    let examples = read_examples(&dir.join("data.jsonl")).unwrap();
    let max_length = s["max_length"].as_u64().unwrap() as usize;
    let (tokenized, dropped) = tokenize_examples(&loaded.tokenizer, &examples, max_length).unwrap();
    assert!(dropped.is_empty());

    // TRL's input ids and learned tokens (labels not -100), token for token.
    let trl = golden["tokenized"].as_array().unwrap();
    assert_eq!(trl.len(), tokenized.len());
    for (t, g) in tokenized.iter().zip(trl) {
        let ids: Vec<u32> = serde_json::from_value(g["input_ids"].clone()).unwrap();
        let mask: Vec<u8> = serde_json::from_value(g["learned"].clone()).unwrap();
        assert_eq!(t.ids, ids, "example {}", t.index);
        let labels: Vec<u8> = t.labels.iter().map(|&l| l as u8).collect();
        assert_eq!(labels, mask, "example {}", t.index);
    }

    let cfg = SftConfig {
        learning_rate: s["learning_rate"].as_f64().unwrap(),
        lr_schedule: LrSchedule::Constant,
        weight_decay: s["weight_decay"].as_f64().unwrap(),
        max_grad_norm: s["max_grad_norm"].as_f64().unwrap(),
        batch_size: s["batch_size"].as_u64().unwrap() as usize,
        gradient_accumulation_steps: s["gradient_accumulation_steps"].as_u64().unwrap() as usize,
        epochs: s["epochs"].as_u64().unwrap(),
        max_length,
        dropout: 0.0,
        checkpoint_every: 0,
        ..SftConfig::default()
    }
    .validate()
    .unwrap();
    let pad = loaded.tokenizer.pad_id();
    let mut sink = VecSink::default();
    SftTrainer::new(&mut loaded.model, cfg, make_rows(&tokenized, None), pad)
        .unwrap()
        .run(&mut sink, None, |_, _| {})
        .unwrap();

    let steps = golden["steps"].as_array().unwrap();
    assert_eq!(sink.0.len(), steps.len());
    for (m, g) in sink.0.iter().zip(steps) {
        let (loss, norm) = (
            g["loss"].as_f64().unwrap(),
            g["grad_norm"].as_f64().unwrap(),
        );
        assert!(
            (m.loss - loss).abs() <= 1e-5 * loss.abs(),
            "step {}: loss {} vs TRL {loss}",
            m.step,
            m.loss
        );
        assert!(
            (m.grad_norm - norm).abs() <= 1e-4 * norm,
            "step {}: grad norm {} vs TRL {norm}",
            m.step,
            m.grad_norm
        );
        assert_eq!(m.learning_rate, g["learning_rate"].as_f64().unwrap());
    }
    assert!(sink.0[0].grad_norm > 1.0, "clipping was not exercised");

    let read = |p: &str| -> BTreeMap<String, Tensor> {
        Tensor::read_safetensors(dir.join(p))
            .unwrap()
            .into_iter()
            .collect()
    };
    let (want, init) = (read("final.safetensors"), read("model/model.safetensors"));
    let got = weights(&loaded.model);
    assert_eq!(got.len(), want.len());
    let mut moved = 0.0f64;
    for (name, t) in &got {
        let diff = (t - &want[name]).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name}: max abs diff {diff:e} from TRL's");
        moved = moved.max((t - &init[name]).abs().max().double_value(&[]));
    }
    // ...while training moved the weights much further than that.
    assert!(moved > 1e-3, "weights moved only {moved:e}");
}
