//! `[backend] train = "command"`: every DPO stage of a TSR iteration trained by TRL through
//! docs/examples/engines/trl_dpo.py (the reference Python environment's TRL, installed by
//! `cargo xtask test`), on the tiny Llama of tsr-dpo's SFT fixture with the hash judge. The run
//! trains (TRL's step logs reach the summary), and a tsr killed while TRL trains resumes to the
//! same generations, verdicts, pairs and models as an uninterrupted run.
//!
//! Needs `TSR_REFERENCE_PYTHON` (a Python with TRL; `cargo xtask test` sets it); skipped with a
//! note when it is unset and `TSR_SKIP_REFERENCE_TESTS=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{assert_success, tsr};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/examples/engines/trl_dpo.py"
);

fn reference_python() -> Option<PathBuf> {
    crate::python_with(
        "trl",
        "TSR_REFERENCE_PYTHON",
        None,
        "TSR_SKIP_REFERENCE_TESTS",
        "run the tests with `cargo xtask test` (it installs TRL into the reference environment \
         and sets TSR_REFERENCE_PYTHON)",
    )
}

fn write_config(dir: &Path, python: &Path) -> PathBuf {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tsr-dpo/tests/fixtures/sft/model");
    let prompts: String = (0..4)
        .map(|i| format!("{{\"id\": \"q{i}\", \"prompt\": \"Tell me about {i}.\"}}\n"))
        .collect();
    std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[run]
model = {model:?}
prompts = "prompts.jsonl"
method = "tsr"
iterations = 1
seed = 4
[loop]
k = 2
chunk_prompts = 2
[sampling]
max_new_tokens = 12
[judge]
samples = 1
[dpo]
learning_rate = 1e-3
lr_schedule = "constant"
batch_size = 2
epochs = 2
max_length = 128
[backend]
train = "command"
[backend.trainer]
command = "{python} {SCRIPT} --model {{init}} --data {{data}} --settings {{settings}} --out {{out}} --metrics {{metrics}} --seed {{seed}} --cpu"
"#,
            model = model.display().to_string(),
            python = python.display()
        ),
    )
    .unwrap();
    cfg
}

fn iterate(cfg: &Path, dir: &Path) -> Command {
    let mut c = tsr();
    c.args(["iterate", "--hash-judge"]);
    if dir.join("run.json").exists() {
        c.arg("--resume").arg(dir);
    } else {
        c.arg("--config").arg(cfg).arg("--run-dir").arg(dir);
    }
    c
}

#[test]
fn dpo_stages_trained_by_trl_survive_a_kill() {
    let Some(python) = reference_python() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(t.path(), &python);
    let reference = t.path().join("reference");
    assert_success(&iterate(&cfg, &reference).output().unwrap());
    let summary: Value =
        serde_json::from_slice(&std::fs::read(reference.join("summary.json")).unwrap()).unwrap();
    let dpo = &summary["iterations"][0]["dpo"];
    assert!(
        dpo["steps"].as_u64().unwrap_or(0) > 0,
        "TRL trained nothing: {summary}"
    );
    assert!(
        dpo["reward_margin"].as_f64().is_some_and(|m| m > 0.0),
        "{summary}"
    );
    let trained = &summary["iterations"][0]["compute"]["cumulative"]["tokens_trained"];
    assert!(trained.as_u64().unwrap_or(0) > 0, "{summary}");
    let log = std::fs::read_to_string(reference.join("iter-001/train-model.jsonl")).unwrap();
    assert!(log.contains("rewards/margins"), "{log}");
    let provenance = std::fs::read_to_string(reference.join("provenance.json")).unwrap();
    assert!(provenance.contains("trl_dpo.py"), "{provenance}");

    // Killed while TRL trains the future model (its work folder exists), then resumed.
    let dir = t.path().join("killed");
    let mut child = iterate(&cfg, &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !dir.join("iter-001").read_dir().is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with("trainer-work")))
    }) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its trainer started"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no trainer started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_success(&iterate(&cfg, &dir).output().unwrap());
    let diff: Vec<String> = tsr_loop::compare::differences(&reference, &dir)
        .unwrap()
        .into_iter()
        .filter(|p| !p.starts_with("engine/"))
        .collect();
    assert!(
        diff.is_empty(),
        "files differ from the uninterrupted run: {diff:?}"
    );
}
