//! `tsr judge` end to end: the verifier path (no model), input validation, and the LLM judge on
//! the built-in SmolLM2-135M-Instruct.

use std::path::Path;

use serde_json::Value;

use crate::{assert_success, tsr};

fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn verifier_scores_final_numbers_and_passes_fields_through() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id": "a", "prompt": "48 + 24?", "response": "48 + 24 = 72 clips.", "reference": "48+24=<<48+24=72>>72\n#### 72", "extra": {"k": 1}}"#,
            "\n\n",
            r#####"{"prompt": "Cost?", "response": "It costs $1,234.50 in total, so \\boxed{1,234.5}", "reference": "#### 1,234.50"}"#####,
            "\n",
            r#####"{"prompt": "Cost?", "response": "About 12.", "reference": "#### 10"}"#####,
            "\n",
        ),
    )
    .unwrap();
    let out_path = dir.path().join("out.jsonl");
    let out = tsr()
        .args(["judge", "--verifier", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    assert_success(&out);
    let rows = rows(&out_path);
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter()
            .map(|r| r["score"].as_f64().unwrap())
            .collect::<Vec<_>>(),
        [1.0, 1.0, 0.0]
    );
    assert_eq!(rows[0]["extra"], serde_json::json!({"k": 1}));
    assert_eq!(rows[0]["id"], "a");
    assert_eq!(
        rows[2]["judge_samples"][0],
        "expected 10, found 12: incorrect"
    );
    assert_eq!(rows[2]["judge_scores"], serde_json::json!([0.0]));
}

#[test]
fn malformed_input_names_the_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"p\", \"response\": \"r\"}\n{\"prompt\": \"p\", \"response\": \n",
    )
    .unwrap();
    let out_path = dir.path().join("out.jsonl");
    // The input is checked before the model is loaded: a model that does not exist is not reached.
    let out = tsr()
        .args(["judge", "--model", "/nonexistent/model.gguf", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in.jsonl:2: invalid JSON object"), "{err}");
    assert!(!out_path.exists());
}

#[test]
fn model_or_verifier_is_required() {
    let out = tsr()
        .args(["judge", "--input", "x.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
}

#[test]
fn llm_judge_on_smollm2_keeps_every_sample_and_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(r#"{"id": "q1", "prompt": "What is the capital of France?", "response": "Paris.", "k": 7}"#, "\n"),
    )
    .unwrap();
    let run = |name: &str| {
        let out_path = dir.path().join(name);
        let verdicts = dir.path().join(format!("verdicts-{name}"));
        let out = tsr()
            .args([
                "judge",
                "--model",
                "smollm2-135m-instruct",
                "--samples",
                "2",
                "--max-new-tokens",
                "24",
            ])
            .args(["--seed", "5", "--input"])
            .arg(&input)
            .arg("--out")
            .arg(&out_path)
            .arg("--verdicts")
            .arg(&verdicts)
            .output()
            .unwrap();
        assert_success(&out);
        (rows(&out_path), rows(&verdicts))
    };
    let (a, va) = run("a.jsonl");
    let (b, _) = run("b.jsonl");
    assert_eq!(a, b, "same seed, same verdicts");
    let r = &a[0];
    assert_eq!(r["k"], 7);
    assert_eq!(r["judge_samples"].as_array().unwrap().len(), 2);
    let scores: Vec<Option<f64>> = r["judge_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::as_f64)
        .collect();
    assert_eq!(scores.len(), 2);
    // `score` is the mean of the samples that parsed (null when none did).
    let parsed: Vec<f64> = scores.iter().flatten().copied().collect();
    let mean = (!parsed.is_empty()).then(|| parsed.iter().sum::<f64>() / parsed.len() as f64);
    assert_eq!(r["score"].as_f64(), mean);
    for (i, reason) in r["judge_finish_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert!(
            matches!(reason.as_str(), Some("eos" | "length" | "stop")),
            "{reason}"
        );
        assert_eq!(r["judge_failures"][i].is_null(), scores[i].is_some());
    }
    // The full record holds the rendered paper prompt.
    let prompt = va[0]["judge_prompt"].as_str().unwrap();
    assert!(prompt.contains("User: What is the capital of France?\n<response>Paris.</response>"));
    assert!(prompt.starts_with("Review the user's question"));
    assert_eq!(va[0]["samples"].as_array().unwrap().len(), 2);
}
