//! `tsr_loop::report::reproduction`: the claims' verdicts and tables from hand-made run folders
//! (numbers chosen so that each rule is on a known side) and from fake-backend runs.

use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tsr_loop::report::reproduction::{
    equal_compute_iteration, reproduction_report, Accuracy, EqualCompute, HeadToHead, ReproRun,
    ReproductionInput, Verdict, EQUAL_COMPUTE,
};
use tsr_loop::Method;

/// A run folder with `gaps.len()` iterations: the given score gaps and cosines, 1000 tokens and
/// 10 s per iteration plus an eval stage (5 s, 300 tokens) that must not count as compute.
fn hand_run(dir: &Path, method: &str, gaps: &[f64], cosines: &[f64], win_vs_m0: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let its: Vec<Value> = gaps
        .iter()
        .zip(cosines)
        .enumerate()
        .map(|(i, (gap, cos))| {
            json!({
                "iteration": i + 1, "method": method, "pairs": 8, "results_are_real": true,
                "test_doubles": [],
                "chosen_score_mean": 2.0 + gap, "rejected_score_mean": 2.0, "score_gap": gap,
                "similarity_mean": cos,
                "dpo": {"reward_margin": 0.3, "reward_accuracy": 1.0, "final_loss": 0.5},
                "eval": {"judge": "fixed", "prompts": 4,
                         "vs_initial": {"win_rate": win_vs_m0, "ci_low": 0.4, "ci_high": 0.6,
                                        "n": 4, "wins": 2, "losses": 1, "ties": 1}},
                "compute": {"wall_s": 15.0, "tokens_generated": 400, "tokens_judged": 500,
                            "tokens_trained": 400,
                            "stages": {"train": {"wall_s": 10.0},
                                       "eval": {"wall_s": 5.0, "tokens_generated": 100,
                                                "tokens_judged": 200, "tokens_trained": 0}}}
            })
        })
        .collect();
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec(&json!({ "iterations": its })).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("provenance.json"),
        r#"{"backend": "hand-made", "test_doubles": []}"#,
    )
    .unwrap();
}

/// `tsr eval winrate` records: `scores` are the per-prompt outcomes for the model.
fn records(path: &Path, scores: &[f64]) {
    let verdict = |id: &str| json!({"id": id, "preference": "a"});
    let text: String = scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let id = format!("p{i}");
            json!({"id": id, "instruction": "q", "model": "a", "baseline": "b",
                   "model_first": verdict(&id), "baseline_first": verdict(&id), "score": s})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

struct Setup {
    input: ReproductionInput,
    _tmp: tempfile::TempDir,
}

/// Two seeds of SR (4 iterations, continued to a 5th with gap 0.1) and TSR (2). `sr_gaps[seed]`;
/// TSR's gaps hold at 1.0. Every iteration costs 1000 tokens, so SR's iteration 2 has TSR's
/// final compute: the equal-compute comparison uses it.
fn setup(sr_gaps: [[f64; 4]; 2], tsr_over_sr: &[f64]) -> Setup {
    let t = tempfile::tempdir().unwrap();
    let mut input = ReproductionInput {
        title: "test reproduction".into(),
        intro: "Made by hand.".into(),
        ..Default::default()
    };
    for seed in 0..2u64 {
        let sr = t.path().join(format!("sr-{seed}"));
        let mut gaps = sr_gaps[seed as usize].to_vec();
        gaps.push(0.1);
        hand_run(&sr, "sr", &gaps, &[0.70, 0.75, 0.80, 0.85, 0.99], 0.55);
        let tsr = t.path().join(format!("tsr-{seed}"));
        hand_run(&tsr, "tsr", &[1.0, 0.95], &[0.70, 0.70], 0.6);
        input.runs.push(ReproRun {
            method: "sr".into(),
            seed,
            dir: sr,
            iterations: 4,
        });
        input.runs.push(ReproRun {
            method: "tsr".into(),
            seed,
            dir: tsr,
            iterations: 2,
        });
        let h = t.path().join(format!("h2h-{seed}.jsonl"));
        records(&h, tsr_over_sr);
        input.head_to_head.push(HeadToHead {
            seed,
            model: "tsr".into(),
            baseline: "sr".into(),
            baseline_iteration: None,
            records: h,
        });
        let h = t.path().join(format!("h2h-equal-{seed}.jsonl"));
        records(&h, &[0.5; 16]);
        input.head_to_head.push(HeadToHead {
            seed,
            model: "tsr".into(),
            baseline: EQUAL_COMPUTE.into(),
            baseline_iteration: Some(2),
            records: h,
        });
        let acc = t.path().join(format!("acc-{seed}.json"));
        std::fs::write(&acc, r#"{"overall": {"accuracy": 0.75}}"#).unwrap();
        input.accuracy.push(Accuracy {
            model: "tsr".into(),
            seed: Some(seed),
            report: acc,
        });
    }
    Setup { input, _tmp: t }
}

#[test]
fn claims_are_decided_by_their_fixed_rules() {
    // SR's gap falls 1.0 -> 0.3 in both seeds, its cosine rises; TSR holds its gap; TSR wins
    // 15 of 16 prompt comparisons per seed.
    let wins: Vec<f64> = (0..16).map(|i| if i == 0 { 0.0 } else { 1.0 }).collect();
    let s = setup([[1.0, 0.8, 0.5, 0.3], [1.2, 0.9, 0.6, 0.4]], &wins);
    let out = reproduction_report(&s.input).unwrap();
    let v: Vec<Verdict> = out.claims.iter().map(|c| c.verdict).collect();
    // (b2): ties everywhere against SR at equal compute.
    assert_eq!(
        v,
        [
            Verdict::Reproduced,
            Verdict::Reproduced,
            Verdict::Reproduced,
            Verdict::Reproduced,
            Verdict::NotReproduced
        ],
        "{}",
        out.markdown
    );
    let md = &out.markdown;
    // The claims and the final-model table stop at SR's iteration 4; the continued iteration is
    // in the per-iteration table, marked.
    assert!(md.contains("| sr (continued) | 5 |"), "{md}");
    assert!(!md.contains("| sr | 5 |"), "{md}");
    assert!(
        out.claims[4]
            .measured
            .contains("seed 0: SR iteration 2, TSR/SR compute 1.00"),
        "{}",
        out.claims[4].measured
    );
    assert!(
        md.contains("0: 0.500 (iteration 2), 1: 0.500 (iteration 2)"),
        "{md}"
    );
    assert!(
        md.starts_with("# test reproduction\n\nMade by hand."),
        "{md}"
    );
    assert!(!md.contains("WARNING"), "{md}");
    // Means over seeds: SR gap at iteration 4 = 0.35; ratio 0.35 / 1.1 = 0.32.
    assert!(
        md.contains("1.100 at iteration 1, 0.350 at iteration 4 (ratio 0.32)"),
        "{md}"
    );
    // Compute without the eval stage: 300 + 300 + 400 tokens and 10 s per iteration.
    assert!(
        md.contains("| sr | 4 | 1200 ± 0 | 1200 ± 0 | 1600 ± 0 | 4000 ± 0 | 40 ± 0 |"),
        "{md}"
    );
    assert!(md.contains("ratio 0.50"), "{md}");
    // Pooled head to head: 30 of 32 won.
    assert!(md.contains("0.938 ["), "{md}");
    assert!(md.contains("(30-2-0 of 32)"), "{md}");
    assert!(md.contains("0: 0.938, 1: 0.938"), "{md}");
    // Judge accuracy of TSR's final models; SR has none.
    assert!(md.contains("| 0.750 ± 0.000 |"), "{md}");
}

#[test]
fn claims_that_do_not_hold_are_reported_as_such() {
    // Seed 1's SR gap rises: no collapse in every seed. TSR loses every comparison.
    let s = setup([[1.0, 0.8, 0.5, 0.3], [0.2, 0.3, 0.5, 0.6]], &[0.0; 16]);
    let out = reproduction_report(&s.input).unwrap();
    let v: Vec<Verdict> = out.claims.iter().map(|c| c.verdict).collect();
    assert_eq!(v[0], Verdict::NotReproduced, "{}", out.markdown);
    assert_eq!(v[3], Verdict::Contradicted, "{}", out.markdown);
    // A tie everywhere: the interval contains 0.5, so no claim either way.
    let s = setup([[1.0, 0.8, 0.5, 0.3], [1.2, 0.9, 0.6, 0.4]], &[0.5; 16]);
    let out = reproduction_report(&s.input).unwrap();
    assert_eq!(out.claims[3].verdict, Verdict::NotReproduced);
}

#[test]
fn fake_backend_runs_are_flagged_and_missing_parts_say_no_data() {
    let t = tempfile::tempdir().unwrap();
    let sr = t.path().join("sr");
    run_fresh(&sr, Method::Sr, 1, 4);
    let input = ReproductionInput {
        title: "fake".into(),
        runs: vec![ReproRun {
            method: "sr".into(),
            seed: 0,
            dir: sr,
            iterations: 0,
        }],
        ..Default::default()
    };
    let out = reproduction_report(&input).unwrap();
    assert!(
        out.markdown.contains("WARNING: NOT REAL RESULTS"),
        "{}",
        out.markdown
    );
    assert!(
        out.claims.iter().all(|c| c.verdict == Verdict::NoData),
        "{:?}",
        out.claims
    );
    // A missing records file is an error naming it.
    let mut bad = input.clone();
    bad.head_to_head.push(HeadToHead {
        seed: 0,
        model: "tsr".into(),
        baseline: "sr".into(),
        baseline_iteration: None,
        records: PathBuf::from("/nonexistent/records.jsonl"),
    });
    let e = reproduction_report(&bad).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/records.jsonl"), "{e}");
}

#[test]
fn equal_compute_continues_while_the_next_iteration_lands_nearer() {
    // SR's cumulative compute after each iteration (about 8.7k per iteration); TSR's final 46.4k.
    let mut sr = vec![(1, 8_700.0), (2, 17_300.0), (3, 26_000.0), (4, 35_000.0)];
    // 35.0k + half a step (4.5k) is below 46.4k: a fifth iteration is expected to be nearer.
    assert_eq!(
        equal_compute_iteration(&sr, 46_400.0, 12),
        Some(EqualCompute::Continue)
    );
    // Capped: the nearest finished iteration.
    assert_eq!(
        equal_compute_iteration(&sr, 46_400.0, 4),
        Some(EqualCompute::Use(4))
    );
    sr.push((5, 43_700.0));
    // 43.7k + 4.35k is past 46.4k: stop, and iteration 5 (2.7k short) is the nearest.
    assert_eq!(
        equal_compute_iteration(&sr, 46_400.0, 12),
        Some(EqualCompute::Use(5))
    );
    // A target below every iteration: the first; exactly between two: the later one.
    assert_eq!(
        equal_compute_iteration(&sr, 1_000.0, 12),
        Some(EqualCompute::Use(1))
    );
    assert_eq!(
        equal_compute_iteration(&sr, 13_000.0, 12),
        Some(EqualCompute::Use(2))
    );
    assert_eq!(equal_compute_iteration(&[], 1.0, 12), None);
}
