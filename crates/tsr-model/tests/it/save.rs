//! Saving HF directories.

use std::path::Path;
use std::process::Command;

use tsr_model::hf::{self, SaveOptions};
use tsr_model::{LoadOptions, ModelError};

use crate::{expected, fixture_dir, load, CASES};

fn logits_after_reload(case: &str, dir: &Path) -> (f64, f64) {
    let e = expected(case);
    let model = load(case);
    let reloaded = hf::load_model_dir(dir, &LoadOptions::default()).unwrap();
    assert_eq!(
        reloaded.config(),
        model.config(),
        "{case}: config changed on save"
    );
    let a = tch::no_grad(|| model.logits(&e.input_ids, &e.attention_mask, false)).unwrap();
    let b = tch::no_grad(|| reloaded.logits(&e.input_ids, &e.attention_mask, false)).unwrap();
    let vs = (a - b).abs().max().double_value(&[]);
    (vs, 0.0)
}

#[test]
fn save_round_trip_gives_identical_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for case in CASES {
        let dir = tmp.path().join(case);
        let model = load(case);
        hf::save_model_dir(&model, &dir, &SaveOptions::default(), |_| Ok(())).unwrap();
        assert!(dir.join("config.json").is_file() && dir.join("model.safetensors").is_file());
        let (diff, _) = logits_after_reload(case, &dir);
        assert_eq!(diff, 0.0, "{case}");
    }
    // Nothing but the saved directories is left behind (no staging directories).
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, {
        let mut c: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
        c.sort();
        c
    });
}

#[test]
fn sharded_save_writes_an_index_and_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sharded");
    let model = load("qwen2");
    hf::save_model_dir(
        &model,
        &dir,
        &SaveOptions {
            max_shard_bytes: 100_000,
        },
        |_| Ok(()),
    )
    .unwrap();
    assert!(!dir.join("model.safetensors").exists());
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let mut shards: Vec<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
    shards.sort();
    shards.dedup();
    assert!(shards.len() >= 4, "{shards:?}");
    for s in &shards {
        let size = std::fs::metadata(dir.join(s)).unwrap().len();
        // A shard exceeds the limit only when it holds a single tensor larger than it.
        assert!(
            size < 100_000 + 1024 || map.values().filter(|v| v == s).count() == 1,
            "{s}: {size}"
        );
    }
    let (diff, _) = logits_after_reload("qwen2", &dir);
    assert_eq!(diff, 0.0);
}

#[test]
fn failed_save_leaves_nothing_behind_and_keeps_the_old_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let model = load("llama");
    let err = hf::save_model_dir(&model, &dir, &SaveOptions::default(), |_| {
        Err(ModelError::Other("tokenizer failed".into()))
    })
    .unwrap_err();
    assert!(err.to_string().contains("tokenizer failed"));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    // An existing directory is replaced only by a complete save.
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("marker"), "old").unwrap();
    let _ = hf::save_model_dir(&model, &dir, &SaveOptions::default(), |_| {
        Err(ModelError::Other("boom".into()))
    })
    .unwrap_err();
    assert!(dir.join("marker").is_file());
    hf::save_model_dir(&model, &dir, &SaveOptions::default(), |d| {
        std::fs::write(d.join("extra.txt"), "x").map_err(|e| ModelError::io(d, e))
    })
    .unwrap();
    assert!(!dir.join("marker").exists());
    assert!(dir.join("extra.txt").is_file());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

/// transformers loads a tsr-saved directory and gives the fixture's logits. Needs the Python
/// reference (TSR_REFERENCE_PYTHON or ~/.cache/tsr/venv-torch-2.11.0/bin/python):
/// `cargo test -p tsr-model --test it -- --ignored transformers_loads`.
#[test]
#[ignore = "needs the Python reference environment"]
fn transformers_loads_tsr_saved_directories() {
    let python = std::env::var("TSR_REFERENCE_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tsr/venv-torch-2.11.0/bin/python",
            std::env::var("HOME").unwrap()
        )
    });
    let script = fixture_dir("llama")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("make_parity.py");
    let tmp = tempfile::tempdir().unwrap();
    for case in CASES {
        let dir = tmp.path().join(case);
        hf::save_model_dir(
            &load(case),
            &dir,
            &SaveOptions {
                max_shard_bytes: 200_000,
            },
            |_| Ok(()),
        )
        .unwrap();
        let out = Command::new(&python)
            .arg(&script)
            .arg("--check")
            .arg(&dir)
            .arg(case)
            .output()
            .expect("run the reference python");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{case}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("max abs logit diff"), "{text}");
    }
}
