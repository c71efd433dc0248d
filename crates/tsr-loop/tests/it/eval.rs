//! `[eval]`: win rates of `M_{i+1}` against `M_i` and `M_0` after each iteration.

use crate::common::{config, prompts, snapshot};
use tsr_loop::fake::{FakeBackend, Fault};
use tsr_loop::{EvalSection, Method, NoObserver, PromptRecord, Run};

fn eval_prompts(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let rows: Vec<PromptRecord> = (0..n)
        .map(|i| PromptRecord {
            id: format!("e{i}"),
            prompt: format!("A held-out question {i}?"),
        })
        .collect();
    let path = dir.join("held-out.jsonl");
    let text: String = rows
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn eval_config(dir: &std::path::Path, iterations: u32) -> tsr_loop::Config {
    let mut c = config(Method::Tsr, iterations);
    c.eval = Some(EvalSection {
        prompts: Some(eval_prompts(dir, 5)),
        ..EvalSection::default()
    });
    c
}

#[test]
fn each_iteration_reports_win_rates_against_previous_and_initial() {
    let t = tempfile::tempdir().unwrap();
    let run_dir = t.path().join("run");
    let mut run = Run::create(&run_dir, eval_config(t.path(), 2), prompts(8)).unwrap();
    let mut b = FakeBackend::new();
    let out = run.execute(&mut b, &mut NoObserver).unwrap();
    assert_eq!(out.summaries.len(), 2);
    // The run keeps its own copy of the held-out prompts.
    assert!(run_dir.join("eval-prompts.jsonl").exists());

    let e1 = &out.summaries[0]["eval"];
    assert_eq!(e1["prompts"], 5);
    assert_eq!(e1["judge"], "m0");
    assert_eq!(e1["vs_previous"]["opponent"], "m0");
    assert_eq!(e1["vs_previous"]["model"], "iter-001/model");
    // In iteration 1, M_i is M_0.
    assert_eq!(e1["vs_initial"], e1["vs_previous"]);
    let e2 = &out.summaries[1]["eval"];
    assert_eq!(e2["vs_previous"]["opponent"], "iter-001/model");
    assert_eq!(e2["vs_initial"]["opponent"], "m0");
    // The fake judge prefers answers of more-trained models: every prompt is won.
    for e in [e1, e2] {
        for k in ["vs_previous", "vs_initial"] {
            assert_eq!(e[k]["n"], 5, "{e}");
            assert_eq!(e[k]["win_rate"], 1.0, "{e}");
        }
    }
    // Per-prompt records with both orders.
    let records = std::fs::read_to_string(run_dir.join("iter-002/eval-vs-initial.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 5);
    assert!(records.contains("e0/baseline-first"));
    // Each model answers once: M_0's and iter-001/model's answers, made in iteration 1, are
    // reused in iteration 2.
    for (m, made_in) in [("m0", 1), ("iter-001-model", 1), ("iter-002-model", 2)] {
        let text =
            std::fs::read_to_string(run_dir.join(format!("eval/answers-{m}.jsonl"))).unwrap();
        assert_eq!(text.lines().count(), 5, "{m}");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["iteration"], made_in, "{m}");
        }
    }
    // The eval stage is in metrics.jsonl and its compute in the summary.
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("\"stage\":\"eval\"").count(), 2);
    assert!(
        out.summaries[1]["compute"]["stages"]["eval"]["tokens_judged"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn held_out_prompts_must_not_be_training_prompts() {
    let t = tempfile::tempdir().unwrap();
    let mut c = config(Method::Sr, 1);
    let training = prompts(4);
    let path = t.path().join("clash.jsonl");
    std::fs::write(
        &path,
        format!("{}\n", serde_json::to_string(&training[2]).unwrap()),
    )
    .unwrap();
    c.eval = Some(EvalSection {
        prompts: Some(path),
        ..EvalSection::default()
    });
    let err = Run::create(&t.path().join("run"), c, training).unwrap_err();
    assert!(err.to_string().contains("also a training prompt"), "{err}");
}

#[test]
fn a_run_with_eval_resumes_to_the_same_folder() {
    let t = tempfile::tempdir().unwrap();
    let clean = t.path().join("clean");
    Run::create(&clean, eval_config(t.path(), 2), prompts(8))
        .unwrap()
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap();
    let total_calls = {
        let d = t.path().join("count");
        let mut b = FakeBackend::new();
        Run::create(&d, eval_config(t.path(), 2), prompts(8))
            .unwrap()
            .execute(&mut b, &mut NoObserver)
            .unwrap();
        b.calls
    };
    // Fail at a few calls, including inside the eval stages (the last calls of an iteration).
    for k in [
        total_calls / 2 - 1,
        total_calls / 2,
        total_calls - 2,
        total_calls - 1,
    ] {
        let d = t.path().join(format!("r{k}"));
        let mut run = Run::create(&d, eval_config(t.path(), 2), prompts(8)).unwrap();
        let mut b = FakeBackend::new();
        b.fault = Some(Fault::ErrorAt(k));
        assert!(run.execute(&mut b, &mut NoObserver).is_err());
        Run::open(&d)
            .unwrap()
            .execute(&mut FakeBackend::new(), &mut NoObserver)
            .unwrap();
        let (got, want) = (snapshot(&d), snapshot(&clean));
        let differing: Vec<&String> = want
            .keys()
            .filter(|f| got.get(*f) != want.get(*f))
            .collect();
        assert!(
            differing.is_empty() && got.len() == want.len(),
            "failure at call {k}: {differing:?}"
        );
    }
}
