//! `train_dpo` / `train_sft` end to end on the tiny fixture model: the run folder's
//! `metrics.jsonl` after an interruption, a resume and a rerun.

use std::path::{Path, PathBuf};

use tsr_dpo::sft::{read_examples, train_sft};
use tsr_dpo::{train_dpo, DpoConfig, PreferencePair, SftConfig};
use tsr_model::{load, LoadOptions, Loaded};

use crate::trainer::rng_lock;

fn fixture_model() -> Loaded {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sft/model");
    load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

fn pairs() -> Vec<PreferencePair> {
    (0..8)
        .map(|i| {
            PreferencePair::text(
                format!("Question {i}?"),
                format!("Answer {i}."),
                format!("No {}", "idea ".repeat(1 + i % 3)),
            )
        })
        .collect()
}

fn dpo_config() -> DpoConfig {
    DpoConfig {
        learning_rate: 1e-3,
        batch_size: 2,
        max_steps: Some(4),
        dropout: 0.0,
        checkpoint_every: 2,
        ..DpoConfig::default()
    }
}

/// The `step` of every line of `metrics.jsonl`.
fn steps(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Runs `f`, which is interrupted by a panic in its progress callback after `after` steps.
fn interrupted(f: impl FnOnce(&mut dyn FnMut(u64))) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        f(&mut |step| {
            if step == 3 {
                panic!("interrupted at step 3");
            }
        })
    }));
    assert!(r.is_err(), "the run should have been interrupted");
}

#[test]
fn resumed_train_dpo_writes_one_metrics_line_per_step_and_a_rerun_replaces_them() {
    let _rng = rng_lock();
    let cfg = dpo_config().validate().unwrap();
    let data = pairs();
    let out = tempfile::tempdir().unwrap();
    let metrics = out.path().join("metrics.jsonl");

    // Interrupted after step 3 (checkpoint at step 2): lines 1..=3 are on disk.
    interrupted(|stop| {
        let mut m = fixture_model();
        let _ = train_dpo(
            &mut m.model,
            &m.tokenizer,
            &data,
            &cfg,
            out.path(),
            |s, _| stop(s.step),
        );
    });
    assert_eq!(steps(&metrics), vec![1, 2, 3]);

    // The resume redoes step 3 from the step-2 checkpoint: each step once.
    let mut m = fixture_model();
    let report = train_dpo(
        &mut m.model,
        &m.tokenizer,
        &data,
        &cfg,
        out.path(),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(report.resumed_from, Some(2));
    assert_eq!(steps(&metrics), vec![1, 2, 3, 4]);

    // A fresh run into the same folder (no checkpoint) replaces the file, never appends to it.
    std::fs::remove_dir_all(out.path().join("checkpoint")).unwrap();
    let mut m = fixture_model();
    let report = train_dpo(
        &mut m.model,
        &m.tokenizer,
        &data,
        &cfg,
        out.path(),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(report.resumed_from, None);
    assert_eq!(steps(&metrics), vec![1, 2, 3, 4]);
}

#[test]
fn a_fresh_train_sft_replaces_an_old_metrics_file() {
    let _rng = rng_lock();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sft");
    let examples = read_examples(&dir.join("data.jsonl")).unwrap();
    let cfg = SftConfig {
        batch_size: 2,
        max_steps: Some(2),
        dropout: 0.0,
        ..SftConfig::default()
    }
    .validate()
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let metrics = out.path().join("metrics.jsonl");
    for _ in 0..2 {
        let mut m = fixture_model();
        train_sft(
            &mut m.model,
            &m.tokenizer,
            &examples,
            &cfg,
            out.path(),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(steps(&metrics), vec![1, 2]);
    }
}
