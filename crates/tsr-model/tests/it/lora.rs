//! LoRA adapters: zero-initialised adapters leave the model unchanged, switching them off gives
//! the base model, merging keeps the adapted outputs, only the adapters train, and PEFT loads
//! what tsr writes and computes the same logits (`tests/fixtures/check_peft_lora.py`, run with
//! the Python reference when `TSR_REFERENCE_PYTHON` is set, as `cargo xtask test` does).

use std::process::Command;

use tsr_model::{hf, LoraConfig, Model, Tensor};

use crate::{expected, fixture_dir, load, max_diff_real, rng_lock, CASES};

fn logits(model: &Model, case: &str) -> Tensor {
    let e = expected(case);
    tch::no_grad(|| {
        model
            .logits(&e.input_ids, &e.attention_mask, false)
            .unwrap()
    })
}

/// Gives every adapter's `B` random values (as training would), so the adapters change outputs.
fn perturb(model: &Model, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        for (name, t) in model.lora_tensors() {
            if name.ends_with("lora_B.weight") {
                t.shallow_clone().copy_(&(t.randn_like() * 0.05));
            }
        }
    });
}

#[test]
fn zero_initialised_adapters_give_the_base_logits_exactly() {
    let _rng = rng_lock();
    for case in CASES {
        let mut model = load(case);
        let base = logits(&model, case);
        model.add_lora(&LoraConfig::default(), 3).unwrap();
        assert_eq!(
            model.lora_tensors().len(),
            2 * 7 * model.config().num_hidden_layers
        );
        let adapted = logits(&model, case);
        assert!(
            base.equal(&adapted),
            "{case}: adapters at zero changed the logits"
        );
    }
}

#[test]
fn adapters_switch_off_and_merge_into_the_weights() {
    let _rng = rng_lock();
    for case in CASES {
        let mut model = load(case);
        let base = logits(&model, case);
        let cfg = LoraConfig {
            r: 4,
            alpha: 8.0,
            targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        };
        model.add_lora(&cfg, 1).unwrap();
        perturb(&model, 2);
        let adapted = logits(&model, case);
        let mask = expected(case).attention_mask;
        assert!(
            max_diff_real(&adapted, &base, &mask) > 1e-3,
            "{case}: adapters had no effect"
        );
        model.set_lora_enabled(false);
        assert!(
            logits(&model, case).equal(&base),
            "{case}: disabled adapters changed logits"
        );
        model.set_lora_enabled(true);
        assert_eq!(model.merge_lora(), Some(cfg));
        assert!(model.lora_config().is_none());
        let merged = logits(&model, case);
        let d = max_diff_real(&merged, &adapted, &mask);
        assert!(
            d < 1e-5,
            "{case}: merged model differs from the adapted one by {d}"
        );
    }
}

#[test]
fn only_the_adapters_take_gradients_and_bad_settings_are_refused() {
    let mut model = load("llama");
    let cfg = LoraConfig {
        r: 2,
        alpha: 2.0,
        targets: vec!["o_proj".into()],
    };
    model.add_lora(&cfg, 0).unwrap();
    let trainable: Vec<String> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(trainable.len(), 2 * model.config().num_hidden_layers);
    assert!(
        trainable.iter().all(|n| n.contains(".o_proj.lora_")),
        "{trainable:?}"
    );
    let again = model.add_lora(&cfg, 0).unwrap_err().to_string();
    assert!(again.contains("already has LoRA adapters"), "{again}");
    for (bad, says) in [
        (
            LoraConfig {
                r: 0,
                ..LoraConfig::default()
            },
            "r must be at least 1",
        ),
        (
            LoraConfig {
                targets: vec!["qkv".into()],
                ..LoraConfig::default()
            },
            "unknown target \"qkv\"",
        ),
        (
            LoraConfig {
                alpha: f64::NAN,
                ..LoraConfig::default()
            },
            "alpha",
        ),
    ] {
        let e = load("llama").add_lora(&bad, 0).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn peft_loads_the_adapter_and_computes_the_same_logits() {
    let Ok(python) = std::env::var("TSR_REFERENCE_PYTHON") else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped: TSR_REFERENCE_PYTHON is not set (cargo xtask test sets it)");
        }
        return;
    };
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    for case in CASES {
        let mut model = load(case);
        let base = logits(&model, case);
        let cfg = LoraConfig {
            r: 4,
            alpha: 16.0,
            ..LoraConfig::default()
        };
        model.add_lora(&cfg, 7).unwrap();
        perturb(&model, 8);
        let adapted = logits(&model, case);
        let adapter = tmp.path().join(case).join("adapter");
        tsr_model::peft::save_lora_adapter(&model, &adapter, Some("tsr-test-fixture")).unwrap();
        let e = expected(case);
        let file = tmp.path().join(case).join("tsr.safetensors");
        hf::write_safetensors(
            &file,
            &[
                ("input_ids", &e.input_ids),
                ("attention_mask", &e.attention_mask),
                ("logits", &adapted),
                ("base_logits", &base),
            ],
        )
        .unwrap();
        let script = fixture_dir(case).join("../../check_peft_lora.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg(fixture_dir(case))
            .arg(&adapter)
            .arg(&file)
            .output()
            .expect("run the reference python");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{case}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{case}: {}", text.trim());
        }
    }
}
