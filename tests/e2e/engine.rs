//! tsr on a real llama.cpp server (the `xllamacpp` wheel, installed by `cargo xtask engines`,
//! which `cargo xtask test` runs): a `tsr export-gguf` file serves the same greedy tokens and
//! judge scores as tsr computes locally, and `tsr iterate` with every sampling and judging stage
//! on the server (`[backend]`, a serve command per model, GGUF hand-off) survives the server
//! being killed mid-stage and tsr being killed with SIGKILL, ending with the same generations,
//! verdicts, pairs and models as an uninterrupted run.
//!
//! Needs `TSR_ENGINE_PYTHON` (else the tsr cache's `venv-engines`) and the built-in model; skipped
//! with a note when `TSR_SKIP_ENGINE_TESTS=1`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{assert_success, tsr};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/examples/engines/serve_llamacpp.py"
);

/// The Python with xllamacpp, or `None` when the engine tests are to be skipped.
fn engine_python() -> Option<PathBuf> {
    let cache = std::env::var_os("TSR_DEV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tsr")
        });
    crate::python_with(
        "xllamacpp",
        "TSR_ENGINE_PYTHON",
        Some(cache.join("venv-engines/bin/python")),
        "TSR_SKIP_ENGINE_TESTS",
        "run `cargo xtask engines` (cargo xtask test does it)",
    )
}

/// A server started by the test, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(python: &Path, gguf: &Path) -> Server {
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .arg(gguf)
        .args(["--parallel", "2", "--threads", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("the server said {line:?}"))
        .trim()
        .to_string();
    let server = Server { child, url };
    let t0 = Instant::now();
    while !tsr_judge::remote::health_ok(&server.url, Duration::from_secs(5)) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{} never got healthy",
            server.url
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

fn jsonl(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The built-in model exported as f32 GGUF: llama.cpp's greedy tokens equal tsr's, and its
/// `direct` judge scores (from the server's top-k log-probs) are within 1e-2 of tsr's.
#[test]
fn an_exported_gguf_serves_what_tsr_computes() {
    let Some(python) = engine_python() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let gguf = t.path().join("m.gguf");
    let out = tsr()
        .args([
            "export-gguf",
            "--model",
            "smollm2-135m-instruct",
            "--type",
            "f32",
            "--out",
        ])
        .arg(&gguf)
        .output()
        .unwrap();
    assert_success(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["pre_tokenizer"], "smollm", "{report}");
    let server = serve(&python, &gguf);

    let prompts = t.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": 1, \"prompt\": \"Name three colors.\"}\n\
         {\"id\": 2, \"prompt\": \"What is the capital of Italy?\"}\n\
         {\"id\": 3, \"prompt\": \"Explain gravity in one sentence.\"}\n",
    )
    .unwrap();
    let gen = |engine: bool| {
        let mut c = tsr();
        c.args([
            "generate",
            "--chat",
            "--greedy",
            "--max-new-tokens",
            "16",
            "--prompts",
        ])
        .arg(&prompts);
        if engine {
            c.args(["--engine-url", &server.url]);
        } else {
            c.args(["--model", "smollm2-135m-instruct"]);
        }
        let out = c.output().unwrap();
        assert_success(&out);
        jsonl(&out.stdout)
            .into_iter()
            .map(|r| r["token_ids"].clone())
            .collect::<Vec<_>>()
    };
    let (remote, local) = (gen(true), gen(false));
    assert_eq!(remote.len(), 3);
    assert_eq!(
        remote, local,
        "greedy tokens differ between llama.cpp and tsr"
    );

    let items = t.path().join("j.jsonl");
    std::fs::write(
        &items,
        "{\"id\": \"a\", \"prompt\": \"What is 2+2?\", \"response\": \"2+2 equals 4.\"}\n\
         {\"id\": \"b\", \"prompt\": \"What is 2+2?\", \"response\": \"Paris is in France.\"}\n\
         {\"id\": \"c\", \"prompt\": \"Name a fruit.\", \"response\": \"Apple.\"}\n",
    )
    .unwrap();
    let judge = |engine: bool| {
        let mut c = tsr();
        c.args([
            "judge",
            "--mode",
            "direct",
            "--template",
            "short",
            "--input",
        ])
        .arg(&items);
        if engine {
            c.args(["--engine-url", &server.url]);
        } else {
            c.args(["--model", "smollm2-135m-instruct"]);
        }
        let out = c.output().unwrap();
        assert_success(&out);
        jsonl(&out.stdout)
            .into_iter()
            .map(|r| r["score"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let (remote, local) = (judge(true), judge(false));
    assert_eq!(remote.len(), 3);
    for (r, l) in remote.iter().zip(&local) {
        assert!(
            (r - l).abs() < 1e-2,
            "judge scores: server {remote:?}, tsr {local:?}"
        );
    }
}

fn write_config(dir: &Path, python: &Path) -> PathBuf {
    let prompts: String = [
        "Name three colors.",
        "What is the capital of Italy?",
        "Give one tip for sleeping well.",
        "Explain gravity in one sentence.",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| format!("{{\"id\": \"q{i}\", \"prompt\": {p:?}}}\n"))
    .collect();
    std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[run]
model = "smollm2-135m-instruct"
prompts = "prompts.jsonl"
method = "tsr"
iterations = 1
seed = 5
[loop]
k = 2
chunk_prompts = 2
[sampling]
max_new_tokens = 16
[judge]
mode = "direct"
template = "short"
[dpo]
learning_rate = 5e-6
batch_size = 2
epochs = 2
max_length = 256
[backend]
generate = "openai"
judge = "openai"
[backend.openai]
max_in_flight = 1
timeout_s = 120
retries = 1
[backend.serve]
command = "{} {SCRIPT} {{gguf}} --port {{port}} --parallel 1 --threads 2"
gguf = "f16"
ready_timeout_s = 120
"#,
            python.display()
        ),
    )
    .unwrap();
    cfg
}

fn iterate(cfg: &Path, dir: &Path) -> Command {
    let mut c = tsr();
    c.arg("iterate");
    if dir.join("run.json").exists() {
        c.arg("--resume").arg(dir);
    } else {
        c.arg("--config").arg(cfg).arg("--run-dir").arg(dir);
    }
    c
}

fn served(dir: &Path) -> Vec<Value> {
    std::fs::read(dir.join("engine/served.jsonl"))
        .map(|b| jsonl(&b))
        .unwrap_or_default()
}

/// Waits until `cond` holds on the run folder (polled), or panics after `limit`.
fn wait_for(dir: &Path, limit: Duration, what: &str, cond: impl Fn(&Path) -> bool) {
    let t0 = Instant::now();
    while !cond(dir) {
        assert!(t0.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Servers whose command line names `dir` (the serve command gets GGUF paths inside it).
fn server_pids(dir: &Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(format!("{}/engine/", dir.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn iterate_on_a_llama_cpp_server_survives_server_and_tsr_kills() {
    let Some(python) = engine_python() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(t.path(), &python);

    // The uninterrupted run.
    let reference = t.path().join("reference");
    let out = iterate(&cfg, &reference).output().unwrap();
    assert_success(&out);
    let summary: Value =
        serde_json::from_slice(&std::fs::read(reference.join("summary.json")).unwrap()).unwrap();
    let it = &summary["iterations"][0];
    assert!(it["pairs"].as_u64().unwrap_or(0) > 0, "no pairs: {summary}");
    assert!(
        it["dpo"]["steps"].as_u64().unwrap_or(0) > 0,
        "no training: {summary}"
    );
    let models: Vec<String> = served(&reference)
        .iter()
        .map(|s| s["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        models,
        ["m0", "iter-001/model-future", "m0"],
        "servers started"
    );
    assert!(served(&reference)
        .iter()
        .all(|s| s["gguf_sha256"].as_str().is_some_and(|h| h.len() == 64)));
    let provenance = std::fs::read_to_string(reference.join("provenance.json")).unwrap();
    assert!(provenance.contains("OpenAI-compatible"), "{provenance}");
    assert!(
        server_pids(&reference).is_empty(),
        "the server outlived tsr"
    );

    // 1. The server is killed while M_0's pool is sampled: retries, then an error naming the URL.
    let dir = t.path().join("killed");
    let child = iterate(&cfg, &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&dir, Duration::from_secs(120), "the first server", |d| {
        !served(d).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let pids = server_pids(&dir);
    assert!(!pids.is_empty(), "no server process found");
    Command::new("kill").arg("-9").args(&pids).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "tsr went on without its server: {stderr}"
    );
    let url = served(&dir)[0]["urls"][0].as_str().unwrap().to_string();
    assert!(
        stderr.contains(&url) && stderr.contains("--resume"),
        "the error should name {url} and say how to resume: {stderr}"
    );

    // 2. Resumed, then tsr is killed with SIGKILL once the future model is on the server: its
    // server goes down with it.
    let mut child = iterate(&cfg, &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        &dir,
        Duration::from_secs(300),
        "the future model's server",
        |d| {
            served(d)
                .iter()
                .any(|s| s["model"] == "iter-001/model-future")
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(
        &dir,
        Duration::from_secs(30),
        "the server to exit with tsr",
        |d| server_pids(d).is_empty(),
    );

    // 3. Resumed to the end: the same files as the uninterrupted run. `engine/` is a cache whose
    // file names carry a fingerprint of the model folder's path and times; what counts there is
    // that each model's GGUF has the same digest.
    assert_success(&iterate(&cfg, &dir).output().unwrap());
    let diff: Vec<String> = tsr_loop::compare::differences(&reference, &dir)
        .unwrap()
        .into_iter()
        .filter(|p| !p.starts_with("engine/"))
        .collect();
    assert!(
        diff.is_empty(),
        "files differ from the uninterrupted run: {diff:?}"
    );
    let digests = |d: &Path| {
        served(d)
            .iter()
            .map(|s| (s["model"].to_string(), s["gguf_sha256"].to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(digests(&reference), digests(&dir));
}
