//! `tsr eval winrate` on the tiny Llama of tsr-dpo's SFT fixture: a model against itself is a
//! coin toss, and a model DPO-trained on pairs whose chosen answers start with a fixed phrase is
//! preferred over its initial weights by a judge that checks that phrase.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::{assert_success, tsr};

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tsr-dpo/tests/fixtures/sft/model")
}

/// The marker the trained model should learn to start with. (A random 2-layer model trained by
/// DPO for a dozen steps learns a repeated character reliably; a phrase like `OK!` comes out
/// garbled as `OA!`.)
const MARKER: &str = "!!!";

fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn eval_prompts(dir: &Path) -> PathBuf {
    let rows: Vec<Value> = (0..12)
        .map(|i| json!({"id": format!("e{i}"), "prompt": format!("Tell me about item {i}.")}))
        .collect();
    let path = dir.join("eval-prompts.jsonl");
    write_jsonl(&path, &rows);
    path
}

fn winrate(model: &Path, baseline: &Path, prompts: &Path, judge: &[&str], out: &Path) -> Value {
    let o = tsr()
        .args(["eval", "winrate", "--model"])
        .arg(model)
        .arg("--baseline")
        .arg(baseline)
        .arg("--prompts")
        .arg(prompts)
        .args(judge)
        .args(["--max-new-tokens", "6", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert_success(&o);
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    let records = std::fs::read_to_string(out.join("records.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 12, "one record per prompt");
    assert_eq!(result["prompts"]["count"], 12);
    assert_eq!(result["prompts"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(result["model"]["sha256"].as_str().unwrap().len(), 64);
    result["report"].clone()
}

#[test]
fn a_model_against_itself_wins_half() {
    let t = tempfile::tempdir().unwrap();
    let prompts = eval_prompts(t.path());
    // The tiny model judges too: its verdict tokens carry little mass, so read every token and
    // accept any mass; its context (256 bytes) needs a short judge prompt.
    let template = t.path().join("judge.txt");
    std::fs::write(
        &template,
        "Q: {instruction}\nA: {response_a}\nB: {response_b}\n",
    )
    .unwrap();
    let r = winrate(
        &tiny_model(),
        &tiny_model(),
        &prompts,
        &[
            "--judge-model",
            tiny_model().to_str().unwrap(),
            "--judge-min-mass",
            "0",
            "--judge-top-logprobs",
            "400",
            "--judge-template",
            template.to_str().unwrap(),
        ],
        &t.path().join("self"),
    );
    assert_eq!(r["n"], 12, "{r}");
    let (rate, lo, hi) = (
        r["win_rate"].as_f64().unwrap(),
        r["ci_low"].as_f64().unwrap(),
        r["ci_high"].as_f64().unwrap(),
    );
    assert!(lo <= 0.5 && 0.5 <= hi, "{r}");
    // Same weights, same seed: identical answers, so each prompt is judged on the same text in
    // both orders and scores exactly one half.
    assert_eq!(rate, 0.5, "{r}");
}

#[test]
fn dpo_towards_a_style_is_preferred_by_a_judge_of_that_style() {
    let t = tempfile::tempdir().unwrap();
    // Training prompts differ from the evaluation prompts.
    let pairs: Vec<Value> = (0..8)
        .map(|i| {
            json!({
                "prompt": [{"role": "user", "content": format!("Question number {i}?")}],
                "chosen": [{"role": "assistant", "content": format!("{MARKER} Answer {i}.")}],
                "rejected": [{"role": "assistant", "content": format!("Answer {i}.")}],
            })
        })
        .collect();
    let pairs_path = t.path().join("pairs.jsonl");
    write_jsonl(&pairs_path, &pairs);
    let cfg = t.path().join("dpo.toml");
    std::fs::write(
        &cfg,
        "learning_rate = 0.01\nbatch_size = 4\nepochs = 6\nbeta = 0.1\nlr_schedule = \"constant\"\n\
         warmup_steps = 0\ndropout = 0.0\ncheckpoint_every = 0\nmax_length = 64\n",
    )
    .unwrap();
    let trained = t.path().join("dpo");
    let o = tsr()
        .args(["train-dpo", "--model"])
        .arg(tiny_model())
        .arg("--pairs")
        .arg(&pairs_path)
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&trained)
        .output()
        .unwrap();
    assert_success(&o);

    let prompts = eval_prompts(t.path());
    let rule = format!("starts-with:{MARKER}");
    let out = t.path().join("style");
    let r = winrate(
        &trained,
        &tiny_model(),
        &prompts,
        &["--judge-rule", &rule],
        &out,
    );
    // Every trained answer should carry the marker and no initial one does.
    let answers = |name: &str| -> Vec<String> {
        std::fs::read_to_string(out.join(name))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["response"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let marked = |v: &[String]| v.iter().filter(|a| a.trim().starts_with(MARKER)).count();
    let (trained_answers, initial_answers) = (
        answers("answers-model.jsonl"),
        answers("answers-baseline.jsonl"),
    );
    assert!(marked(&trained_answers) >= 10, "{trained_answers:?}");
    assert_eq!(marked(&initial_answers), 0, "{initial_answers:?}");
    assert!(r["win_rate"].as_f64().unwrap() > 0.8, "{r}");
    assert!(r["ci_low"].as_f64().unwrap() > 0.5, "{r}");
    assert_eq!(r["losses"], 0, "{r}");
}
