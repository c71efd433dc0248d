//! `tsr eft build --from-file` end to end (no model, no network: `--no-eval-guard`).

use std::collections::HashSet;

use serde_json::Value;

use crate::{assert_success, tsr};

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn eft_build_from_file_writes_split_files_and_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("judged.jsonl");
    let mut text = String::new();
    // 10 questions, each with its own answer (5) and another question's answer (1); one exact
    // duplicate line.
    for q in 0..10 {
        text.push_str(&serde_json::json!({"prompt": format!("Question {q}?"), "response": format!("Answer to {q}."), "score": 5, "justification": "It answers the question."}).to_string());
        text.push('\n');
        text.push_str(&serde_json::json!({"prompt": format!("Question {q}?"), "response": format!("Answer to {}.", (q + 1) % 10), "score": 1}).to_string());
        text.push('\n');
    }
    text.push_str(
        &serde_json::json!({"prompt": "Question 0?", "response": "Answer to 0.", "score": 5})
            .to_string(),
    );
    text.push('\n');
    std::fs::write(&input, text).unwrap();
    let out_dir = dir.path().join("eft");
    let run = |seed: &str, out: &std::path::Path| {
        tsr()
            .args(["eft", "build", "--from-file"])
            .arg(&input)
            .args([
                "--template",
                "short",
                "--holdout",
                "0.2",
                "--seed",
                seed,
                "--no-eval-guard",
            ])
            .arg("--out-dir")
            .arg(out)
            .output()
            .unwrap()
    };
    assert_success(&run("3", &out_dir));

    let train = lines(&out_dir.join("eft-train.jsonl"));
    let heldout = lines(&out_dir.join("eft-heldout.jsonl"));
    assert_eq!((train.len(), heldout.len()), (16, 4));
    let question = |e: &Value| {
        let user = e["messages"][0]["content"].as_str().unwrap();
        user.lines().next().unwrap().to_string()
    };
    let train_q: HashSet<String> = train.iter().map(question).collect();
    let held_q: HashSet<String> = heldout.iter().map(question).collect();
    assert!(train_q.is_disjoint(&held_q));
    assert_eq!(held_q.len(), 2);
    let first = &train[0];
    assert_eq!(first["messages"][0]["role"], "user");
    assert!(first["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("Question: Question "));
    assert_eq!(first["messages"][1]["role"], "assistant");
    let assistant: HashSet<&str> = train
        .iter()
        .chain(&heldout)
        .map(|e| e["messages"][1]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        assistant,
        HashSet::from(["It answers the question.\nScore: 5", "Score: 1"])
    );

    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["stats"]["inputs"], 21);
    assert_eq!(manifest["stats"]["duplicates_dropped"], 1);
    assert_eq!(manifest["stats"]["heldout_prompts"], 2);
    assert_eq!(manifest["seed"], 3);
    assert_eq!(manifest["template"]["origin"], "short (built in)");
    assert_eq!(manifest["eval_guard"], Value::Null);
    assert_eq!(manifest["source"]["kind"], "file");
    assert_eq!(manifest["source"]["sha256"].as_str().unwrap().len(), 64);

    // The same seed gives the same files; another seed another split.
    let again = dir.path().join("again");
    assert_success(&run("3", &again));
    for f in ["eft-train.jsonl", "eft-heldout.jsonl"] {
        assert_eq!(
            std::fs::read(out_dir.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap()
        );
    }
    // Another seed can pick the same 2 of 10 prompts by chance (1 in 45); two more seeds
    // picking them too would be a 1 in 2,025 coincidence.
    let held = |d: &std::path::Path| std::fs::read_to_string(d.join("eft-heldout.jsonl")).unwrap();
    let differs = ["4", "5"].iter().any(|seed| {
        let other = dir.path().join(format!("seed-{seed}"));
        assert_success(&run(seed, &other));
        held(&other) != held(&out_dir)
    });
    assert!(differs, "seeds 3, 4 and 5 hold out the same prompts");
}

#[test]
fn eft_build_rejects_bad_scores_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("judged.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"p\", \"response\": \"r\", \"score\": 4}\n{\"prompt\": \"p\", \"response\": \"s\", \"score\": 4.5}\n",
    )
    .unwrap();
    let out = tsr()
        .args(["eft", "build", "--no-eval-guard", "--from-file"])
        .arg(&input)
        .arg("--out-dir")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:") && err.contains("integer from 0 to 5"),
        "{err}"
    );
}
