use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use tsr_loop::fake::FakeBackend;
use tsr_loop::{Config, Method, NoObserver, PromptRecord, Run, RunOutcome};

pub fn prompts(n: usize) -> Vec<PromptRecord> {
    (0..n)
        .map(|i| PromptRecord {
            id: format!("p{i:02}"),
            prompt: format!("Explain topic number {i} briefly."),
        })
        .collect()
}

pub fn config(method: Method, iterations: u32) -> Config {
    let mut c = Config::default();
    c.run.model = "fake-m0".into();
    c.run.method = method;
    c.run.iterations = iterations;
    c.run.seed = 7;
    c.loop_.k = 3;
    c.loop_.chunk_prompts = 2;
    c.sampling.max_new_tokens = 16;
    c
}

pub fn run_fresh(
    dir: &Path,
    method: Method,
    iterations: u32,
    n_prompts: usize,
) -> (RunOutcome, FakeBackend) {
    let mut run = Run::create(dir, config(method, iterations), prompts(n_prompts)).unwrap();
    let mut b = FakeBackend::new();
    let out = run.execute(&mut b, &mut NoObserver).unwrap();
    (out, b)
}

/// Every file of a run folder but the lock file, wall times removed (see
/// [`tsr_loop::compare::snapshot`]).
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    tsr_loop::compare::snapshot(dir).unwrap()
}

pub fn assert_same_run(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    let ka: Vec<_> = sa.keys().collect();
    let kb: Vec<_> = sb.keys().collect();
    assert_eq!(ka, kb, "different file sets");
    for (k, va) in &sa {
        assert!(
            va == &sb[k],
            "{k} differs:\n{}\n---\n{}",
            String::from_utf8_lossy(va),
            String::from_utf8_lossy(&sb[k])
        );
    }
}

pub fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}
