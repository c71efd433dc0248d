//! Regression tests of the hardening items of issue 14 that live in the loop (see
//! docs/reliability.md): the run-folder lock, stale temporaries, `metrics.jsonl` without
//! duplicates, an empty `D_1`, degenerate pairs, and error chains printed once.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tsr_loop::fake::{FakeBackend, Fault};
use tsr_loop::{error_chain, LoopError, Method, NoObserver, Run};

// ---------------------------------------------------------------------------------------------
// 1. The run-folder lock

/// Not a test on its own: a process of `two_processes_resume_one_run_folder_one_is_refused`.
/// It opens the run, waits for the `go` file (so both processes reach `execute` together), and
/// runs it; a failure is reported through a panic message the parent reads.
#[test]
#[ignore = "helper process for two_processes_resume_one_run_folder_one_is_refused"]
fn lock_child() {
    let Some(dir) = std::env::var_os("TSR_LOOP_LOCK_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let go = dir.with_extension("go");
    let mut run = Run::open(&dir).unwrap();
    // Tell the parent this process is up, so `go` comes only when both are waiting for it.
    std::fs::write(
        dir.with_extension(format!("ready-{}", std::process::id())),
        "",
    )
    .unwrap();
    let t0 = Instant::now();
    while !go.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no go signal");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut b = FakeBackend::new();
    // Long enough (about 60 calls, 3 s) that the other process, already waiting for `go`,
    // tries while this one works.
    b.delay = Duration::from_millis(50);
    if let Err(e) = run.execute(&mut b, &mut NoObserver) {
        panic!("CHILD ERROR: {}", error_chain(&e));
    }
}

#[test]
fn two_processes_resume_one_run_folder_one_is_refused() {
    let reference = tempfile::tempdir().unwrap();
    run_fresh(reference.path(), Method::Tsr, 2, 6);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    Run::create(&dir, config(Method::Tsr, 2), prompts(6)).unwrap();
    let spawn = || {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "hardening::lock_child",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("TSR_LOOP_LOCK_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [spawn(), spawn()];
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    // Both processes have opened the run and wait: start them together. (A guard, not a speed
    // assertion: a child that never starts would otherwise hang the test.)
    let t0 = Instant::now();
    while !pids
        .iter()
        .all(|p| dir.with_extension(format!("ready-{p}")).exists())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the child processes did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(dir.with_extension("go"), "").unwrap();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let ok: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(
        ok.len(),
        1,
        "exactly one process must proceed:\n{}\n---\n{}",
        text(&outs[0]),
        text(&outs[1])
    );
    let (winner, loser) = (ok[0], 1 - ok[0]);
    let refused = text(&outs[loser]);
    assert!(
        refused.contains(&format!(
            "is in use by another tsr process (pid {})",
            pids[winner]
        )),
        "the refused process must name the holder's pid {}:\n{refused}",
        pids[winner]
    );
    // The refused process changed nothing: the run equals an uninterrupted one.
    assert_same_run(reference.path(), &dir);
    // The lock went with its holder: the folder resumes (finding everything done).
    Run::open(&dir)
        .unwrap()
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap();
}

#[test]
fn a_locked_run_folder_is_refused_before_anything_changes() {
    let t = tempfile::tempdir().unwrap();
    let mut c = config(Method::Sr, 1);
    c.loop_.prompts_per_iteration = 2;
    let mut run = Run::create(t.path(), c, prompts(4)).unwrap();
    // A stale temporary that `execute` would remove if it went ahead.
    let tmp = t.path().join("metrics.jsonl.tsr-tmp");
    std::fs::write(&tmp, "half").unwrap();
    let held = tsr_loop::lock::RunLock::acquire(t.path()).unwrap();
    let e = run
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap_err();
    assert!(
        matches!(e, LoopError::Locked { pid: Some(p), .. } if p == std::process::id()),
        "{e:?}"
    );
    assert!(tmp.exists(), "a refused process must not touch the folder");
    assert!(!t.path().join("iter-001").exists());
    // Extending and creating are refused too.
    assert!(matches!(
        Run::open(t.path()).unwrap().set_iterations(2),
        Err(LoopError::Locked { .. })
    ));
    drop(held);
    let out = run
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap();
    assert!(out.state.finished);
    assert!(!tmp.exists());
}

// ---------------------------------------------------------------------------------------------
// 2. Stale temporaries

/// Every entry under `dir` whose name marks a temporary.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains("tsr-tmp")
                || name.contains("tsr-old")
                || name.ends_with(".partial")
                || name.ends_with(".dpo-work")
            {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn resume_removes_stale_temporaries_of_killed_stages_and_saves() {
    let reference = tempfile::tempdir().unwrap();
    let (_, b) = run_fresh(reference.path(), Method::Tsr, 2, 6);
    let t = tempfile::tempdir().unwrap();
    let mut run = Run::create(t.path(), config(Method::Tsr, 2), prompts(6)).unwrap();
    let mut fb = FakeBackend::new();
    // Fail in iteration 2, after iteration 1's models exist.
    fb.fault = Some(Fault::ErrorAt(b.log.len() - 4));
    run.execute(&mut fb, &mut NoObserver).unwrap_err();
    // What a `kill -9` leaves: a model save's hidden staging folders (tsr-model writes
    // `.NAME.tsr-tmp-PID` beside the target and swaps an old one to `.NAME.tsr-old-PID`), a
    // half-written model folder, a temporary file of an atomic write, and the trainer work
    // folder of a model that was completed.
    let plant = |rel: &str| {
        let p = t.path().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("model.safetensors"), vec![0u8; 4096]).unwrap();
    };
    plant("iter-002/.model-future.partial.tsr-tmp-4242");
    plant("iter-002/.model.partial.tsr-old-4242");
    plant("iter-002/model.partial");
    plant("iter-001/model-future.dpo-work");
    std::fs::write(t.path().join("iter-002/pairs-1.jsonl.tsr-tmp"), "{\"half").unwrap();
    // The work folder of a model that is not finished stays: the trainer resumes from it.
    plant("iter-002/model.dpo-work");
    // Files that only look similar are the user's and stay.
    std::fs::write(t.path().join(".tsr-tmp-notes"), "mine").unwrap();
    assert_eq!(temporaries(t.path()).len(), 7);

    // Resume, but stop at the next training: look at what recovery did.
    Run::open(t.path())
        .unwrap()
        .execute(&mut BeforeTraining(FakeBackend::new()), &mut NoObserver)
        .unwrap_err();
    assert_eq!(
        temporaries(t.path()),
        vec![
            ".tsr-tmp-notes".to_string(),
            "iter-002/model.dpo-work".to_string()
        ],
        "only the user's file and the unfinished model's work folder may stay"
    );
    // Finish: the run equals an uninterrupted one (the fake leaves its work folder alone, so
    // drop it as the real trainer does when it completes).
    std::fs::remove_dir_all(t.path().join("iter-002/model.dpo-work")).unwrap();
    std::fs::remove_file(t.path().join(".tsr-tmp-notes")).unwrap();
    Run::open(t.path())
        .unwrap()
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap();
    assert_same_run(reference.path(), t.path());
}

#[test]
fn a_failed_training_leaves_no_partial_model_folder() {
    let t = tempfile::tempdir().unwrap();
    let mut run = Run::create(t.path(), config(Method::Sr, 1), prompts(4)).unwrap();
    let e = run
        .execute(
            &mut Shaped {
                fail_training: true,
                ..Shaped::default()
            },
            &mut NoObserver,
        )
        .unwrap_err();
    assert!(
        error_chain(&e).contains("trainer ran out of memory"),
        "{}",
        error_chain(&e)
    );
    assert_eq!(temporaries(t.path()), Vec::<String>::new());
    assert!(!t.path().join("iter-001/done/train.json").exists());
}

/// The fake, failing any training call (used to stop a resumed run right after recovery).
struct BeforeTraining(FakeBackend);

impl tsr_loop::Backend for BeforeTraining {
    fn generate(
        &mut self,
        m: &tsr_loop::ModelRef,
        r: &[tsr_judge::GenRequest],
        p: &tsr_judge::SamplingParams,
    ) -> Result<Vec<Vec<tsr_judge::Completion>>, tsr_loop::BackendError> {
        self.0.generate(m, r, p)
    }
    fn judge(
        &mut self,
        m: &tsr_loop::ModelRef,
        i: &[tsr_judge::JudgeItem],
        s: u64,
    ) -> Result<Vec<tsr_judge::Verdict>, tsr_loop::BackendError> {
        self.0.judge(m, i, s)
    }
    fn train_dpo(
        &mut self,
        _: &tsr_loop::ModelRef,
        _: &[tsr_loop::TrainPair],
        _: &Path,
        _: u64,
    ) -> Result<tsr_loop::TrainReport, tsr_loop::BackendError> {
        Err("stopped before training".into())
    }
    fn representation_similarity(
        &mut self,
        m: &tsr_loop::ModelRef,
        p: &[tsr_loop::TrainPair],
    ) -> Result<Vec<f64>, tsr_loop::BackendError> {
        self.0.representation_similarity(m, p)
    }
    fn provenance(&self) -> tsr_loop::Provenance {
        self.0.provenance()
    }
}

// ---------------------------------------------------------------------------------------------
// 3. metrics.jsonl

/// `(kind, iteration, stage)` of every line, and whether any repeats.
fn metric_keys(dir: &Path) -> Vec<(String, u64, String)> {
    read_jsonl(&dir.join("metrics.jsonl"))
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap_or_default().to_string(),
                l["iteration"].as_u64().unwrap_or_default(),
                l["stage"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn rerunning_finished_stages_never_duplicates_metrics_lines() {
    let reference = tempfile::tempdir().unwrap();
    run_fresh(reference.path(), Method::Tsr, 2, 6);
    let expected = metric_keys(reference.path());
    // 12 TSR stages and one iteration line, twice.
    assert_eq!(expected.len(), 2 * 13);
    let mut unique = expected.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), expected.len(), "{expected:?}");

    let t = tempfile::tempdir().unwrap();
    run_fresh(t.path(), Method::Tsr, 2, 6);
    // Resume a finished run (every stage skipped), twice.
    for _ in 0..2 {
        Run::open(t.path())
            .unwrap()
            .execute(&mut FakeBackend::new(), &mut NoObserver)
            .unwrap();
        assert_eq!(metric_keys(t.path()), expected);
    }
    // Rerun finished stages: drop their markers, as a user redoing them would.
    for marker in [
        "iter-001/done/summary.json",
        "iter-002/done/train.json",
        "iter-002/done/summary.json",
    ] {
        std::fs::remove_file(t.path().join(marker)).unwrap();
    }
    Run::open(t.path())
        .unwrap()
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap();
    assert_eq!(metric_keys(t.path()), expected);
    assert_same_run(reference.path(), t.path());
}

// ---------------------------------------------------------------------------------------------
// 4. An empty D_1

#[test]
fn empty_d1_records_no_future_model_and_phase2_samples_nothing() {
    // Every response gets the same score: Phase 1 has candidates but no margin, so D_1 is
    // empty (and with `future_prompts = "all"` each prompt would otherwise get P_f).
    let t = tempfile::tempdir().unwrap();
    let mut run = Run::create(t.path(), config(Method::Tsr, 1), prompts(4)).unwrap();
    let mut b = Shaped {
        constant_score: Some(3.0),
        ..Shaped::default()
    };
    let out = run.execute(&mut b, &mut NoObserver).unwrap();
    assert!(out.state.finished);
    let s = &out.summaries[0];
    assert_eq!(s["curation"]["phase1"]["kept"], 0);
    let future = &s["dpo_future"];
    assert_eq!(future["trained"], false, "{future}");
    assert_eq!(future["model"], "m0");
    let reason = future["skipped_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("D_1 is empty") && reason.contains("no future model"),
        "{s}"
    );
    // Phase 2: no P_f was sampled from M_i under a future model's name, nothing was trained.
    assert!(
        !b.inner.log.iter().any(|l| l.starts_with("train")),
        "{:?}",
        b.inner.log
    );
    let gens = b
        .inner
        .log
        .iter()
        .filter(|l| l.starts_with("generate"))
        .count();
    // P_i and P_0 (two chunks of two prompts each) and nothing for P_f.
    assert_eq!(gens, 4, "{:?}", b.inner.log);
    let done = read_json(&t.path().join("iter-001/done/gen-future.json"));
    assert_eq!(done["details"]["prompts"], 0);
    assert!(done["details"]["skipped_reason"].is_string());
    assert_eq!(s["chosen_from_future_share"], Value::Null);
    assert_eq!(s["pairs"], 0);
    assert_eq!(s["dpo"]["trained"], false);
    assert!(s["dpo"]["skipped_reason"].is_string());
    assert_eq!(out.state.model, "m0");
}

// ---------------------------------------------------------------------------------------------
// 5. Degenerate pairs

#[test]
fn identical_and_empty_chosen_pairs_are_dropped_with_a_reason_and_never_trained() {
    let t = tempfile::tempdir().unwrap();
    let mut run = Run::create(t.path(), config(Method::Tsr, 1), prompts(6)).unwrap();
    let mut b = Shaped {
        degenerate_texts: true,
        ..Shaped::default()
    };
    let out = run.execute(&mut b, &mut NoObserver).unwrap();
    let s = &out.summaries[0];
    for phase in ["phase1", "phase2"] {
        let dropped = &s["curation"][phase]["dropped"];
        assert!(
            dropped["identical_texts"].as_u64() >= Some(1),
            "{phase}: {dropped}"
        );
        assert!(
            dropped["empty_chosen"].as_u64() >= Some(1),
            "{phase}: {dropped}"
        );
    }
    for n in [1, 2] {
        for p in read_jsonl(&t.path().join(format!("iter-001/pairs-{n}.jsonl"))) {
            let (c, r) = (
                p["chosen"]["text"].as_str().unwrap(),
                p["rejected"]["text"].as_str().unwrap(),
            );
            assert!(!c.trim().is_empty() && c.trim() != r.trim(), "{p}");
        }
        // The decision file names the reason on the prompt's line.
        let reasons: Vec<Value> =
            read_jsonl(&t.path().join(format!("iter-001/decisions-{n}.jsonl")))
                .into_iter()
                .map(|d| d["dropped"].clone())
                .collect();
        assert!(
            reasons.contains(&Value::from("identical_texts")),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&Value::from("empty_chosen")),
            "{reasons:?}"
        );
    }
    // What reached the trainer.
    for pair in &b.trained {
        assert!(!pair.chosen.trim().is_empty() && pair.chosen.trim() != pair.rejected.trim());
    }
    assert!(!b.trained.is_empty(), "the other prompts still train");
}

/// The fake backend, shaped for one case: degenerate answers (prompt 0: every answer the same
/// text; prompt 1: every answer whitespace), one score for everything, or a failing trainer.
#[derive(Default)]
struct Shaped {
    inner: FakeBackend,
    degenerate_texts: bool,
    constant_score: Option<f64>,
    fail_training: bool,
    /// Every pair the trainer was given.
    trained: Vec<tsr_loop::TrainPair>,
}

impl tsr_loop::Backend for Shaped {
    fn generate(
        &mut self,
        m: &tsr_loop::ModelRef,
        r: &[tsr_judge::GenRequest],
        p: &tsr_judge::SamplingParams,
    ) -> Result<Vec<Vec<tsr_judge::Completion>>, tsr_loop::BackendError> {
        let mut out = self.inner.generate(m, r, p)?;
        if self.degenerate_texts {
            for (req, comps) in r.iter().zip(&mut out) {
                let prompt = serde_json::to_string(&req.prompt).unwrap();
                for (j, c) in comps.iter_mut().enumerate() {
                    if prompt.contains("topic number 0 ") {
                        c.text = "the same answer every time".into();
                    } else if prompt.contains("topic number 1 ") {
                        c.text = [" ", "\n", " \t "][j % 3].into();
                    }
                }
            }
        }
        Ok(out)
    }
    fn judge(
        &mut self,
        m: &tsr_loop::ModelRef,
        items: &[tsr_judge::JudgeItem],
        s: u64,
    ) -> Result<Vec<tsr_judge::Verdict>, tsr_loop::BackendError> {
        self.inner.unparsed_percent = 0;
        let mut v = self.inner.judge(m, items, s)?;
        if let Some(score) = self.constant_score {
            for verdict in &mut v {
                for sample in &mut verdict.samples {
                    sample.score = Some(score);
                    sample.failure = None;
                }
                verdict.score = Some(score);
            }
        } else if self.degenerate_texts {
            // Distinct scores per response index, so every prompt has a margin to keep.
            for (item, verdict) in items.iter().zip(&mut v) {
                let j: f64 = item.id.rsplit('/').next().unwrap().parse().unwrap();
                verdict.score = verdict.score.map(|x| x + 10.0 * j);
            }
        }
        Ok(v)
    }
    fn train_dpo(
        &mut self,
        m: &tsr_loop::ModelRef,
        p: &[tsr_loop::TrainPair],
        o: &Path,
        s: u64,
    ) -> Result<tsr_loop::TrainReport, tsr_loop::BackendError> {
        if self.fail_training {
            std::fs::write(o.join("model.safetensors"), vec![0u8; 4096])?;
            return Err("trainer ran out of memory".into());
        }
        self.trained.extend_from_slice(p);
        self.inner.train_dpo(m, p, o, s)
    }
    fn representation_similarity(
        &mut self,
        m: &tsr_loop::ModelRef,
        p: &[tsr_loop::TrainPair],
    ) -> Result<Vec<f64>, tsr_loop::BackendError> {
        self.inner.representation_similarity(m, p)
    }
    fn provenance(&self) -> tsr_loop::Provenance {
        self.inner.provenance()
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Error chains print each cause once

/// Format as the CLI does and check that no cause repeats.
fn assert_each_cause_once(e: LoopError, cause: &str) {
    let printed = format!("{:#}", anyhow::Error::from(e));
    assert_eq!(
        printed.matches(cause).count(),
        1,
        "the cause must appear exactly once: {printed}"
    );
}

#[test]
fn chained_errors_print_each_cause_once() {
    // An I/O error: the folder holds no readable config.
    let t = tempfile::tempdir().unwrap();
    Run::create(t.path(), config(Method::Sr, 1), prompts(2)).unwrap();
    std::fs::remove_file(t.path().join("config.toml")).unwrap();
    let e = Run::open(t.path()).unwrap_err();
    assert!(matches!(e, LoopError::Io { .. }), "{e:?}");
    let printed = format!("{:#}", anyhow::Error::from(e));
    assert!(printed.contains("config.toml"), "{printed}");
    assert_eq!(
        printed.matches("No such file or directory").count(),
        1,
        "{printed}"
    );

    // A backend failure.
    let t = tempfile::tempdir().unwrap();
    let mut run = Run::create(t.path(), config(Method::Sr, 1), prompts(2)).unwrap();
    let mut b = FakeBackend::new();
    b.fault = Some(Fault::ErrorAt(0));
    let e = run.execute(&mut b, &mut NoObserver).unwrap_err();
    assert_eq!(
        error_chain(&e),
        "iteration 1, stage gen-current: backend failed: injected failure at call 0"
    );
    assert_each_cause_once(e, "injected failure at call 0");

    // Every variant with a source, built by hand.
    assert_each_cause_once(
        LoopError::Io {
            path: "/x/y".into(),
            source: std::io::Error::other("disk on fire"),
        },
        "disk on fire",
    );
    assert_each_cause_once(
        LoopError::Backend {
            iteration: 2,
            stage: "train".into(),
            source: anyhow::anyhow!("cuda out of memory")
                .context("loading the model")
                .into(),
        },
        "cuda out of memory",
    );
}
