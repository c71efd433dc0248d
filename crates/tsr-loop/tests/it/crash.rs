//! Crash recovery: interrupt a run at many points (an error or a panic from the backend, and a
//! real `kill -9` of a child process), resume it, and compare every artifact with an
//! uninterrupted run of the same seed.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tsr_loop::fake::{FakeBackend, Fault};
use tsr_loop::{Method, NoObserver, Run};

fn interrupted_then_resumed(method: Method, fault: Fault) -> (tempfile::TempDir, usize, usize) {
    let t = tempfile::tempdir().unwrap();
    let mut run = Run::create(t.path(), config(method, 2), prompts(6)).unwrap();
    let mut b = FakeBackend::new();
    b.fault = Some(fault);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run.execute(&mut b, &mut NoObserver)
    }));
    match (fault, r) {
        (Fault::ErrorAt(_), Ok(Err(e))) => {
            let e = tsr_loop::error_chain(&e);
            assert!(e.contains("injected failure"), "{e}")
        }
        (Fault::PanicAt(_), Err(_)) => {}
        (_, other) => panic!(
            "the fault did not stop the run: {:?}",
            other.map(|r| r.map(|o| o.state))
        ),
    }
    let first = b.log.len();
    // Nothing may look finished.
    let state = read_json(&t.path().join("state.json"));
    assert_eq!(state["finished"], false);
    let mut run = Run::open(t.path()).unwrap();
    let mut b2 = FakeBackend::new();
    let out = run.execute(&mut b2, &mut NoObserver).unwrap();
    assert!(out.state.finished);
    (t, first, b2.log.len())
}

#[test]
fn resume_after_backend_failure_at_every_call_equals_uninterrupted_run() {
    for method in [
        Method::Tsr,
        Method::Sr,
        Method::PastOnly,
        Method::FutureOnly,
    ] {
        let reference = tempfile::tempdir().unwrap();
        let (_, b) = run_fresh(reference.path(), method, 2, 6);
        let total = b.log.len();
        // Every call for TSR; every third for the others (they share the same stage code).
        let stride = if method == Method::Tsr { 1 } else { 3 };
        for k in (0..total).step_by(stride) {
            let fault = if k % 2 == 0 {
                Fault::ErrorAt(k)
            } else {
                Fault::PanicAt(k)
            };
            let (t, first, second) = interrupted_then_resumed(method, fault);
            assert_same_run(reference.path(), t.path());
            // No completed call was redone: the two halves add up to one run's calls.
            assert_eq!(first + second, total, "{method:?} {fault:?}");
        }
    }
}

/// Not a test on its own: the child process the kill test starts (and kills).
#[test]
#[ignore = "helper process for kill_9_at_several_points_then_resume"]
fn child_run() {
    let Some(dir) = std::env::var_os("TSR_LOOP_CHILD_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut b = FakeBackend::new();
    b.delay = Duration::from_millis(15);
    let mut run = if dir.join("run.json").exists() {
        Run::open(&dir).unwrap()
    } else {
        Run::create(&dir, config(Method::Tsr, 2), prompts(6)).unwrap()
    };
    run.execute(&mut b, &mut NoObserver).unwrap();
}

fn spawn_child(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash::child_run",
            "--test-threads=1",
            "-q",
        ])
        .env("TSR_LOOP_CHILD_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn kill_9_at_several_points_then_resume() {
    let reference = tempfile::tempdir().unwrap();
    run_fresh(reference.path(), Method::Tsr, 2, 6);
    // Kill as soon as each of these appears: mid-stage, between stages, after a model, in iteration 2.
    let points = [
        "iter-001/gen-current/00000.jsonl",
        "iter-001/done/judge-initial.json",
        "iter-001/model-future",
        "iter-001/judge-future/00001.jsonl",
        "iter-002/gen-current/00001.jsonl",
        "iter-002/done/train.json",
    ];
    for point in points {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("run");
        let mut child = spawn_child(&dir);
        let t0 = Instant::now();
        while !dir.join(point).exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("child ended ({status}) before {point} appeared");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{point} never appeared"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let state = read_json(&dir.join("state.json"));
        if state["finished"] == true {
            // Killed after the very end; nothing to resume, still must equal.
            assert_same_run(reference.path(), &dir);
            continue;
        }
        let status = spawn_child(&dir).wait().unwrap();
        assert!(status.success(), "resume after kill at {point} failed");
        assert_same_run(reference.path(), &dir);
    }
}
