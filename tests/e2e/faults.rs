//! The fault test of issue 14: `tsr iterate` with the real libtorch backend (the tiny Llama of
//! tsr-dpo's SFT fixture, hash judge so that pairs exist and DPO trains) is killed with SIGKILL
//! at 10 seeded random moments of one TSR iteration, resumed, and every artifact of the run
//! folder (generations, verdicts, pairs, metrics, summaries, model weights) is compared with an
//! uninterrupted run of the same configuration. The moments are seeded fractions of the
//! uninterrupted run's measured duration, so they fall in different stages on any machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{assert_success, tsr};

fn write_config(dir: &Path) -> PathBuf {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tsr-dpo/tests/fixtures/sft/model");
    let prompts: String = (0..4)
        .map(|i| {
            format!(
                "{{\"id\": \"q{i}\", \"prompt\": \"Tell me about {i} and {}.\"}}\n",
                i + 1
            )
        })
        .collect();
    std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nmodel = {:?}\nprompts = \"prompts.jsonl\"\nmethod = \"tsr\"\niterations = 1\nseed = 3\n\
             [loop]\nk = 2\nchunk_prompts = 2\n\
             [sampling]\nmax_new_tokens = 12\n\
             [judge]\nsamples = 1\n\
             [dpo]\nbatch_size = 2\nmax_length = 128\n",
            model.display().to_string()
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
fn kill_9_at_ten_random_moments_then_resume_equals_an_uninterrupted_run() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(t.path());
    let reference = t.path().join("reference");
    let t0 = Instant::now();
    assert_success(&iterate(&cfg, &reference).output().unwrap());
    let full = t0.elapsed();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reference.join("summary.json")).unwrap()).unwrap();
    let trained = &summary["iterations"][0]["dpo"]["steps"];
    assert!(
        trained.as_u64().unwrap_or(0) > 0,
        "the reference run trained nothing, so the test would not cover training: {summary}"
    );
    let mut interrupted = Vec::new();
    for i in 0..10 {
        // A seeded moment between 3% and 97% of the uninterrupted duration.
        let permille = 30 + tsr_loop::derive_seed(14, &["kill", &i.to_string()]) % 941;
        let at = full.mul_f64(permille as f64 / 1000.0);
        let dir = t.path().join(format!("killed-{i}"));
        let mut child = iterate(&cfg, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let ended = child.try_wait().unwrap().is_some();
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        let state = std::fs::read_to_string(dir.join("state.json")).unwrap_or_default();
        // Resume until the run says it is finished (one resume is enough; the bound is a guard).
        let mut resumes = 0;
        loop {
            let out = iterate(&cfg, &dir).output().unwrap();
            assert_success(&out);
            resumes += 1;
            let done = std::fs::read(dir.join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["finished"] == true);
            if done || resumes == 2 {
                break;
            }
        }
        let diff = tsr_loop::compare::differences(&reference, &dir).unwrap();
        assert!(
            diff.is_empty(),
            "killed at {permille}‰ of {full:?} (state then: {state}): files differ from the \
             uninterrupted run: {diff:?}; earlier kills: {interrupted:?}"
        );
        interrupted.push(format!("{permille}‰ ended={ended} state={state}"));
    }
}
