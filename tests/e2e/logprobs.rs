//! `tsr logprobs` on SmolLM2-135M-Instruct against transformers loading the same GGUF
//! (fixture and script: `tests/e2e/fixtures/make_logprobs.py`).

use crate::tsr;

const TOLERANCE: f64 = 1e-3;

#[test]
fn logprobs_match_transformers_on_smollm2() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/e2e/fixtures/logprobs_smollm2.json"
    );
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    for case in &cases {
        let mut cmd = tsr();
        cmd.args(["logprobs", "--model", "smollm2-135m-instruct", "--prompt"])
            .arg(case["prompt"].as_str().unwrap())
            .arg("--completion")
            .arg(case["completion"].as_str().unwrap());
        if case["chat"].as_bool().unwrap() {
            cmd.arg("--chat");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("download of") {
            // The only acceptable reason to skip: the built-in model cannot be fetched here.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipping: the built-in model could not be fetched: {stderr}");
            }
            return;
        }
        assert!(out.status.success(), "tsr logprobs failed: {stderr}");
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            got["prompt_ids"], case["prompt_ids"],
            "prompt ids of {case}"
        );
        assert_eq!(
            got["completion_ids"], case["completion_ids"],
            "completion ids of {case}"
        );
        let got_lp: Vec<f64> = got["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let want_lp: Vec<f64> = case["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got_lp.len(), want_lp.len());
        let max = got_lp
            .iter()
            .zip(&want_lp)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            max <= TOLERANCE,
            "max per-token diff {max} > {TOLERANCE} for {case}: got {got_lp:?}"
        );
        let sum = got["sum_logprob"].as_f64().unwrap();
        assert!((sum - got_lp.iter().sum::<f64>()).abs() < 1e-9);
    }
}

#[test]
fn logprobs_reports_a_missing_model_file() {
    let out = tsr()
        .args([
            "logprobs",
            "--model",
            "/nonexistent/dir/model.gguf",
            "--prompt",
            "a",
            "--completion",
            "b",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/dir/model.gguf"), "{stderr}");
}
