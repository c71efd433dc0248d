//! `tsr sft` on the tiny model of tsr-dpo's SFT fixture: outputs, resume after `kill -9`, and
//! configuration errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{assert_success, tsr};

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tsr-dpo/tests/fixtures/sft/model")
}

/// 12 conversations (two of them two-turn) and a TOML config under `dir`.
fn write_inputs(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let mut lines = String::new();
    for i in 0..12 {
        let mut msgs = vec![
            serde_json::json!({"role": "user", "content": format!("What is {i} plus {i}?")}),
            serde_json::json!({"role": "assistant", "content": format!("{}.", 2 * i)}),
        ];
        if i % 6 == 0 {
            msgs.push(serde_json::json!({"role": "user", "content": "And doubled?"}));
            msgs.push(serde_json::json!({"role": "assistant", "content": format!("{}.", 4 * i)}));
        }
        lines += &format!("{}\n", serde_json::json!({ "messages": msgs }));
    }
    let data = dir.join("chats.jsonl");
    std::fs::write(&data, lines).unwrap();
    let cfg = dir.join("sft.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sft]\nlearning_rate = 1e-3\nbatch_size = 2\ngradient_accumulation_steps = 2\n\
             max_steps = 24\ncheckpoint_every = 3\ndropout = 0.1\n{extra}"
        ),
    )
    .unwrap();
    (data, cfg)
}

fn sft(data: &Path, cfg: &Path, out: &Path) -> std::process::Command {
    let mut c = tsr();
    c.arg("sft")
        .arg("--model")
        .arg(tiny_model())
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(cfg)
        .arg("--out")
        .arg(out);
    c
}

#[test]
fn sft_resumes_after_kill_9_to_the_same_weights() {
    for packing in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let (data, cfg) =
            write_inputs(t.path(), &format!("packing = {packing}\nmax_length = 64\n"));
        let straight = t.path().join("straight");
        let out = sft(&data, &cfg, &straight).output().unwrap();
        assert_success(&out);
        let model = std::fs::read(straight.join("model.safetensors")).unwrap();
        for f in ["sft_config.json", "config.json", "tokenizer.json"] {
            assert!(straight.join(f).is_file(), "{f} missing");
        }
        let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = metrics
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 24);
        for key in [
            "loss",
            "grad_norm",
            "learning_rate",
            "num_tokens",
            "mean_token_accuracy",
            "epoch",
        ] {
            assert!(lines[0][key].is_number(), "{key} missing from {}", lines[0]);
        }
        assert!(lines[23]["loss"].as_f64().unwrap() < lines[0]["loss"].as_f64().unwrap());

        // Killed with SIGKILL as soon as the first checkpoint exists, then started again.
        let killed = t.path().join("killed");
        let mut child = sft(&data, &cfg, &killed)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !killed.join("checkpoint/trainer_state.json").exists() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished before a checkpoint"
            );
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no checkpoint"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            !killed.join("model.safetensors").exists(),
            "the run ended before it was killed: nothing was resumed"
        );
        let out = sft(&data, &cfg, &killed).output().unwrap();
        assert_success(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("sft: resumed from step"), "{err}");
        assert!(
            model == std::fs::read(killed.join("model.safetensors")).unwrap(),
            "resumed weights differ from the uninterrupted run's (packing {packing})"
        );
        // Steps logged after the checkpoint and redone are not logged twice.
        let steps: Vec<u64> = std::fs::read_to_string(killed.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, (1..=24).collect::<Vec<_>>());
    }
}

#[test]
fn sft_reports_bad_configuration_and_data() {
    let t = tempfile::tempdir().unwrap();
    let (data, cfg) = write_inputs(t.path(), "learnig_rate = 1.0\n");
    let out = sft(&data, &cfg, &t.path().join("o")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("learnig_rate"), "{err}");

    let (data, cfg) = write_inputs(t.path(), "");
    std::fs::write(&data, "{\"messages\": [], \"id\": 1}\n").unwrap();
    let out = sft(&data, &cfg, &t.path().join("o")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chats.jsonl:1: ") && err.contains("unknown field `id`"),
        "{err}"
    );
}
