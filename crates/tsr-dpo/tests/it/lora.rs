//! LoRA training on a tiny random Llama: DPO through the pipeline (adapters added, trained,
//! written in PEFT's format and merged) and SFT through the trainer lower the loss while every
//! base weight outside the adapted projections stays as it was.

use tsr_dpo::sft::{make_rows, SftTrainer, TokenizedExample};
use tsr_dpo::{DpoConfig, SftConfig, VecSink};
use tsr_model::LoraConfig;

use crate::trainer::{pairs, rng_lock, tiny_model, weights};

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "up_proj".into()],
    }
}

#[test]
fn lora_dpo_lowers_the_loss_writes_a_peft_adapter_and_merges_it() {
    let _rng = rng_lock();
    let cfg = DpoConfig {
        learning_rate: 1e-1,
        final_learning_rate: 1e-1,
        batch_size: 2,
        gradient_accumulation_steps: 1,
        max_steps: Some(24),
        dropout: 0.0,
        seed: 3,
        lora: Some(lora()),
        ..DpoConfig::default()
    }
    .validate()
    .unwrap();
    let mut model = tiny_model(5);
    let before = weights(&model);
    let out = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    let report =
        tsr_dpo::train_dpo_tokenized(&mut model, 0, pairs(6), vec![], &cfg, out.path(), |m, _| {
            seen.push((m.loss, m.rewards_margins))
        })
        .unwrap();
    assert_eq!(seen.len(), 24);
    assert!(
        seen[0].1.abs() < 1e-6,
        "adapters at zero: the policy starts at the reference"
    );
    // Batches of 2 pairs are noisy: compare the first and last four steps.
    let mean = |s: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| s.iter().map(f).sum::<f64>() / 4.0;
    let (loss0, loss1) = (mean(&seen[..4], |m| m.0), mean(&seen[20..], |m| m.0));
    let margin = mean(&seen[20..], |m| m.1);
    assert!(loss1 < loss0 - 0.03, "loss {loss0} -> {loss1}");
    assert!(margin > 0.1, "margin {margin}");
    // The PEFT adapter, then the merged model: only the adapted projections moved.
    let adapter = report.adapter.expect("an adapter folder");
    assert!(adapter.join("adapter_model.safetensors").is_file());
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["target_modules"][2], "up_proj");
    assert!(model.lora_config().is_none(), "the adapters are merged");
    let after = weights(&model);
    for (name, t) in &before {
        let (_, t2) = after.iter().find(|(n, _)| n == name).unwrap();
        let moved = !t.equal(t2);
        let adapted = ["q_proj", "v_proj", "up_proj"]
            .iter()
            .any(|p| name.contains(p));
        assert_eq!(moved, adapted, "{name}: moved {moved}");
    }
}

#[test]
fn lora_sft_lowers_the_loss_and_refuses_frozen_layers() {
    let _rng = rng_lock();
    let examples: Vec<TokenizedExample> = (0..8)
        .map(|i| TokenizedExample {
            index: i,
            ids: (0..6).map(|k| ((5 + 3 * i + 7 * k) % 40) as u32).collect(),
            labels: (0..6).map(|k| k >= 4).collect(),
        })
        .collect();
    let cfg = SftConfig {
        learning_rate: 5e-2,
        batch_size: 4,
        max_steps: Some(20),
        dropout: 0.0,
        lora: Some(lora()),
        ..SftConfig::default()
    };
    let mut model = tiny_model(7);
    model.add_lora(&lora(), 1).unwrap();
    let mut sink = VecSink::default();
    SftTrainer::new(
        &mut model,
        cfg.validate().unwrap(),
        make_rows(&examples, None),
        0,
    )
    .unwrap()
    .run(&mut sink, None, |_, _| {})
    .unwrap();
    let (first, last) = (&sink.0[0], sink.0.last().unwrap());
    assert!(
        last.loss < first.loss - 0.1,
        "loss {} -> {}",
        first.loss,
        last.loss
    );
    let e = SftConfig {
        train_last_layers: Some(1),
        ..cfg
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("leave train_last_layers out"), "{e}");
}
