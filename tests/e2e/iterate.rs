//! `tsr iterate` with the hidden deterministic fake backend (no model needed): the command line,
//! the run folder, resume, and input errors.

use crate::{assert_success, tsr};
use std::path::Path;

fn write_run(dir: &Path, extra: &str) -> std::path::PathBuf {
    let prompts: String = (0..4)
        .map(|i| format!("{{\"id\": \"q{i}\", \"prompt\": \"Say something about {i}.\"}}\n"))
        .collect();
    std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!("[run]\nmodel = \"fake\"\nprompts = \"prompts.jsonl\"\niterations = 2\n[loop]\nk = 2\n{extra}"),
    )
    .unwrap();
    cfg
}

#[test]
fn iterate_runs_and_resumes_with_the_fake_backend() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_run(t.path(), "");
    let run = t.path().join("run");
    let out = tsr()
        .args(["iterate", "--fake-backend", "--config"])
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("run folder:"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["iterations"].as_array().unwrap().len(), 2);
    // Resuming a finished run redoes nothing and succeeds.
    let before = std::fs::read(run.join("iter-002/pairs-2.jsonl")).unwrap();
    let out = tsr()
        .args(["iterate", "--fake-backend", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(
        before,
        std::fs::read(run.join("iter-002/pairs-2.jsonl")).unwrap()
    );
    // A second start into the same folder is refused.
    let out = tsr()
        .args(["iterate", "--fake-backend", "--config"])
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&run)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
}

#[test]
fn iterate_reports_bad_configuration_and_creates_nothing() {
    let cases = [
        ("[sampling]\ntop_p = 0.0\n", "sampling.top_p"),
        ("bogus = 1\n", "unknown field `bogus`"),
        ("[dpo]\nbeta = -0.5\n", "beta"),
        ("[judge]\nsampels = 3\n", "sampels"),
    ];
    for (extra, needle) in cases {
        let t = tempfile::tempdir().unwrap();
        let cfg = write_run(t.path(), extra);
        let run = t.path().join("run");
        let out = tsr()
            .args(["iterate", "--config"])
            .arg(&cfg)
            .arg("--run-dir")
            .arg(&run)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}");
        assert!(err.contains(needle), "{extra}: {err}");
        assert!(!run.exists(), "{extra}: a run folder was created");
    }
}

#[test]
fn a_run_folder_given_as_a_bare_relative_name_works() {
    // `--run-dir run` has the empty path as its parent; syncing that used to fail with
    // "error: : No such file or directory".
    let t = tempfile::tempdir().unwrap();
    let cfg = write_run(t.path(), "");
    let out = tsr()
        .current_dir(t.path())
        .args(["iterate", "--fake-backend", "--config"])
        .arg(&cfg)
        .args(["--run-dir", "run"])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(t.path().join("run/summary.json").is_file());
    let out = tsr()
        .current_dir(t.path())
        .args(["iterate", "--fake-backend", "--resume", "run"])
        .output()
        .unwrap();
    assert_success(&out);
}
