use crate::common::*;
use std::path::Path;
use tsr_loop::fake::FakeBackend;
use tsr_loop::{Method, NoObserver, Run};

fn files(dir: &Path) -> Vec<String> {
    snapshot(dir).into_keys().collect()
}

#[test]
fn sr_iterations_train_from_the_previous_model() {
    let t = tempfile::tempdir().unwrap();
    let (out, b) = run_fresh(t.path(), Method::Sr, 2, 8);
    assert!(out.state.finished);
    assert_eq!(out.summaries.len(), 2);
    let f = files(t.path());
    assert!(f.iter().any(|f| f == "iter-001/model/fake-model.json"));
    assert!(
        !f.iter()
            .any(|f| f.contains("initial") || f.contains("future")),
        "{f:?}"
    );
    // Iteration 2 samples and judges with M_1, and trains from it.
    assert!(
        b.log.contains(&"generate iter-001/model 2".to_string()),
        "{:?}",
        b.log
    );
    assert!(
        b.log.contains(&"train iter-001/model 4".to_string())
            || b.log.iter().any(|l| l.starts_with("train iter-001/model"))
    );
    // Fresh chunks: iteration 2 sees the second half of the prompts.
    let ids = read_json(&t.path().join("iter-002/prompts.json"));
    assert_eq!(ids[0], "p04");
    let s = &out.summaries[0];
    assert_eq!(s["method"], "sr");
    assert!(s["rejected_from_initial_share"].is_null());
    assert!(s["chosen_from_future_share"].is_null());
    // SR pairs: both sides from the current pool, chosen strictly better.
    for p in read_jsonl(&t.path().join("iter-001/pairs-1.jsonl")) {
        assert_eq!(p["chosen"]["pool"], "current");
        assert_eq!(p["rejected"]["pool"], "current");
        assert!(p["chosen"]["score"].as_f64() > p["rejected"]["score"].as_f64());
    }
    let lines = read_jsonl(&t.path().join("metrics.jsonl"));
    assert_eq!(lines.iter().filter(|l| l["kind"] == "iteration").count(), 2);
    assert_eq!(lines.iter().filter(|l| l["kind"] == "stage").count(), 12);
}

#[test]
fn tsr_iteration_runs_both_phases_with_mi_as_judge() {
    let t = tempfile::tempdir().unwrap();
    let (out, b) = run_fresh(t.path(), Method::Tsr, 1, 6);
    let log = b.log.join("\n");
    // M_0 samples P_i and P_0; M_i (= M_0 here) judges everything, P_f included.
    assert!(log.contains("generate m0"));
    assert!(log.contains("train m0"));
    assert!(log.contains("generate iter-001/model-future"));
    assert!(!log.contains("judge iter-001/model-future"), "{log}");
    // Both DPO runs start from M_i.
    assert_eq!(
        b.log.iter().filter(|l| l.starts_with("train m0")).count(),
        2
    );
    let s = &out.summaries[0];
    assert_eq!(s["model"], "m0");
    assert_eq!(s["trained_model"], "iter-001/model");
    assert!(s["rejected_from_initial_share"].is_number());
    assert!(s["chosen_from_future_share"].is_number());
    assert!(s["dpo_future"]["reward_margin"].is_number());
    assert!(s["similarity_mean"].is_number());
    let c = &s["compute"];
    assert!(c["tokens_generated"].as_u64().unwrap() > 0);
    assert!(c["tokens_judged"].as_u64().unwrap() > 0);
    assert!(c["tokens_trained"].as_u64().unwrap() > 0);
    // Phase 2 keeps the Phase-1 rejected for every prompt.
    let d1 = read_jsonl(&t.path().join("iter-001/decisions-1.jsonl"));
    let d2 = read_jsonl(&t.path().join("iter-001/decisions-2.jsonl"));
    assert_eq!(d1.len(), 6);
    for (a, b) in d1.iter().zip(&d2) {
        assert_eq!(a["rejected"], b["rejected"]);
        assert_eq!(a["scores"]["current"], b["scores"]["current"]);
    }
    for p in read_jsonl(&t.path().join("iter-001/pairs-2.jsonl")) {
        assert!(p["chosen"]["pool"] == "current" || p["chosen"]["pool"] == "future");
        assert!(p["rejected"]["pool"] == "current" || p["rejected"]["pool"] == "initial");
        assert!(p["chosen"]["score"].as_f64() > p["rejected"]["score"].as_f64());
        assert!(!p["chosen"]["judge_samples"].as_array().unwrap().is_empty());
    }
    // The final training pairs are D_2, as many as the train report says.
    let n2 = read_jsonl(&t.path().join("iter-001/pairs-2.jsonl")).len();
    assert_eq!(s["pairs"], n2);
    assert_eq!(s["dpo"]["pairs"], n2);
}

#[test]
fn past_only_has_no_future_model() {
    let t = tempfile::tempdir().unwrap();
    let (out, b) = run_fresh(t.path(), Method::PastOnly, 1, 4);
    assert_eq!(b.log.iter().filter(|l| l.starts_with("train")).count(), 1);
    let f = files(t.path());
    assert!(f.iter().any(|f| f.starts_with("iter-001/gen-initial/")));
    assert!(
        !f.iter()
            .any(|f| f.contains("future") || f.contains("pairs-2")),
        "{f:?}"
    );
    let n1 = read_jsonl(&t.path().join("iter-001/pairs-1.jsonl")).len();
    assert_eq!(out.summaries[0]["dpo"]["pairs"], n1);
}

#[test]
fn future_only_uses_sr_pairs_then_phase2() {
    let t = tempfile::tempdir().unwrap();
    let (out, b) = run_fresh(t.path(), Method::FutureOnly, 1, 4);
    assert_eq!(b.log.iter().filter(|l| l.starts_with("train")).count(), 2);
    let f = files(t.path());
    assert!(!f.iter().any(|f| f.contains("initial")), "{f:?}");
    for d in read_jsonl(&t.path().join("iter-001/decisions-1.jsonl")) {
        assert_eq!(d["rule"], "self_rewarding");
    }
    for d in read_jsonl(&t.path().join("iter-001/decisions-2.jsonl")) {
        assert_eq!(d["rule"], "future_guided");
    }
    assert!(out.summaries[0]["rejected_from_initial_share"].is_null());
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    run_fresh(a.path(), Method::Tsr, 2, 6);
    run_fresh(b.path(), Method::Tsr, 2, 6);
    assert_same_run(a.path(), b.path());
    let mut cfg = config(Method::Tsr, 2);
    cfg.run.seed = 8;
    Run::create(c.path(), cfg, prompts(6))
        .unwrap()
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap();
    assert_ne!(
        snapshot(a.path())["iter-001/pairs-1.jsonl"],
        snapshot(c.path())["iter-001/pairs-1.jsonl"]
    );
}

#[test]
fn initial_pool_is_sampled_once_per_prompt() {
    let t = tempfile::tempdir().unwrap();
    let mut cfg = config(Method::Tsr, 2);
    cfg.loop_.cycle_prompts = true;
    let mut run = Run::create(t.path(), cfg, prompts(4)).unwrap();
    let mut b = FakeBackend::new();
    let out = run.execute(&mut b, &mut NoObserver).unwrap();
    // 4 prompts in chunks of 2: M_0 samples P_0 twice (iteration 1) and never again.
    let p0_calls = b
        .log
        .iter()
        .filter(|l| l.starts_with("generate m0"))
        .count();
    assert_eq!(
        p0_calls,
        2 + 2,
        "P_i and P_0 of iteration 1 only: {:?}",
        b.log
    );
    let g1 = read_jsonl(&t.path().join("iter-001/gen-initial/00000.jsonl"));
    let g2 = read_jsonl(&t.path().join("iter-002/gen-initial/00000.jsonl"));
    assert_eq!(g1[0]["completions"], g2[0]["completions"]);
    assert_eq!(g2[0]["reused_from"], 1);
    let st = &out.summaries[1]["compute"]["stages"]["gen-initial"];
    assert_eq!(st["tokens_generated"], 0);
}

#[test]
fn more_iterations_continue_a_finished_run() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_fresh(a.path(), Method::Sr, 2, 8);
    let mut cfg = config(Method::Sr, 1);
    cfg.loop_.prompts_per_iteration = 4;
    Run::create(b.path(), cfg, prompts(8))
        .unwrap()
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap();
    let mut run = Run::open(b.path()).unwrap();
    run.set_iterations(2).unwrap();
    let mut fb = FakeBackend::new();
    run.execute(&mut fb, &mut NoObserver).unwrap();
    assert!(
        fb.log.iter().all(|l| !l.contains("m0")),
        "iteration 1 was redone: {:?}",
        fb.log
    );
    assert_same_run(a.path(), b.path());
}

#[test]
fn summary_reward_margin_is_the_last_epoch_mean_of_the_step_log() {
    // The fake trains two epochs with a margin that grows every step, so the mean over the last
    // epoch differs from the mean over all steps.
    let t = tempfile::tempdir().unwrap();
    let (out, _) = run_fresh(t.path(), Method::Tsr, 1, 6);
    let s = &out.summaries[0];
    for (key, log) in [
        ("dpo", "iter-001/train-model.jsonl"),
        ("dpo_future", "iter-001/train-model-future.jsonl"),
    ] {
        let steps = read_jsonl(&t.path().join(log));
        let last = steps.last().unwrap()["epoch"].as_f64().unwrap().ceil();
        let last_epoch: Vec<f64> = steps
            .iter()
            .filter(|v| v["epoch"].as_f64().unwrap().ceil() == last)
            .map(|v| v["rewards/margins"].as_f64().unwrap())
            .collect();
        let all: f64 = steps
            .iter()
            .map(|v| v["rewards/margins"].as_f64().unwrap())
            .sum::<f64>()
            / steps.len() as f64;
        let want = last_epoch.iter().sum::<f64>() / last_epoch.len() as f64;
        let got = s[key]["reward_margin"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{key}: {got} vs {want}");
        assert!(
            (got - all).abs() > 1e-6,
            "{key}: the test must tell the two means apart"
        );
        assert_eq!(last_epoch.len() * 2, steps.len(), "{key}: two epochs");
    }
}

#[test]
fn iteration_summaries_read_back_as_the_typed_summary_byte_for_byte() {
    // `IterationSummary` holds every field the loop writes: reading a summary and writing it
    // again (as the loop does, keys sorted) gives the same bytes.
    let t = tempfile::tempdir().unwrap();
    let (out, _) = run_fresh(t.path(), Method::Tsr, 2, 6);
    for it in 1..=2 {
        let path = t.path().join(format!("iter-{it:03}/summary.json"));
        let bytes = std::fs::read(&path).unwrap();
        let s: tsr_loop::IterationSummary = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(s.iteration, Some(it));
        assert_eq!(s.method, Some(Method::Tsr));
        assert!(s.dpo_future.is_some() && s.curation.phase2.is_some());
        assert!(s.compute.stages.contains_key("summary"));
        let value = serde_json::to_value(&s).unwrap();
        assert_eq!(value, out.summaries[it as usize - 1]);
        let mut again = serde_json::to_vec_pretty(&value).unwrap();
        again.push(b'\n');
        assert_eq!(
            String::from_utf8(again).unwrap(),
            String::from_utf8(bytes).unwrap()
        );
    }
}
