//! Sampled-generation throughput of the local engine (tsr-sample) against a llama.cpp server
//! (the `xllamacpp` wheel) driven through tsr's OpenAI-compatible client, on the same prompts,
//! sampling settings and token budget, measured in the same run (`cargo xtask bench --bench
//! engine`).
//!
//! Workload: 2 chat prompts x 7 samples, T = 0.7, top_p = 0.9, at most `TOKENS` new tokens (EOS
//! ends a sample on both sides, so throughput is counted over the tokens each side generated).
//! The server runs with 2 threads and 4 slots; the client keeps 4 requests in flight (n = 7 is
//! split into requests of 4 and 3). It serves (a) the built-in Q4_1 GGUF (llama.cpp's quantized
//! kernels: what a user would serve) and (b) an f32 export of the same weights (`tsr export-gguf`,
//! the weights the local engine computes with), so the two gains are not confused.
//!
//! Environment: TSR_ENGINE_PYTHON (else ~/.cache/tsr/venv-engines/bin/python), TSR_BENCH_TOKENS
//! (default 64), TSR_BENCH_SKIP_ENGINE=1 to run the local engine only.

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tsr_judge::{GenRequest, Generator, OpenAiEngine, Prompt, RemoteConfig, SamplingParams};
use tsr_model::{load, LoadOptions};
use tsr_sample::Sampler;

#[path = "../../../xtask/src/bench_record.rs"]
mod bench_record;
use bench_record::{record, Figure, Goal};

const PROMPTS: [&str; 2] = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a refrigerator works to a ten-year-old.",
];

fn tokens() -> usize {
    std::env::var("TSR_BENCH_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(python: &Path, gguf: &Path) -> Server {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/engines/serve_llamacpp.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .arg(gguf)
        .args([
            "--parallel",
            "4",
            "--threads",
            "2",
            "--ctx-per-slot",
            "1024",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the llama.cpp server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or("")
        .to_string();
    let t0 = Instant::now();
    while !tsr_judge::remote::health_ok(&url, Duration::from_secs(5)) {
        assert!(t0.elapsed() < Duration::from_secs(120), "server not ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    Server(child, url)
}

fn timed(g: &mut dyn Generator, requests: &[GenRequest], params: &SamplingParams) -> (usize, f64) {
    let warm = SamplingParams {
        max_new_tokens: 8,
        ..params.clone()
    };
    g.generate(requests, &warm).expect("warm-up");
    let t0 = Instant::now();
    let out = g.generate(requests, params).expect("generation");
    let dt = t0.elapsed().as_secs_f64();
    let n = out.iter().flatten().map(|c| c.token_ids.len()).sum();
    (n, dt)
}

fn main() {
    tch::set_num_threads(2);
    let loaded = load("smollm2-135m-instruct", &LoadOptions::default()).expect("built-in model");
    let params = SamplingParams {
        temperature: 0.7,
        top_p: 0.9,
        max_new_tokens: tokens(),
        ..Default::default()
    };
    let requests: Vec<GenRequest> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| GenRequest {
            prompt: Prompt::user(*p),
            n: 7,
            seed: i as u64,
        })
        .collect();
    println!(
        "== sampled generation, 2 prompts x 7 samples, <= {} new tokens, 2 threads ==",
        tokens()
    );
    let mut local = Sampler::new(&loaded.model, &loaded.tokenizer);
    let (n, t) = timed(&mut local, &requests, &params);
    let local_tps = n as f64 / t;
    println!("local engine (f32)          {n:5} tokens in {t:6.2} s = {local_tps:6.1} tok/s");
    if std::env::var("TSR_BENCH_SKIP_ENGINE").is_ok_and(|v| v == "1") {
        return;
    }
    let python = std::env::var_os("TSR_ENGINE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/tsr/venv-engines/bin/python")
        });
    let dir = tempfile::tempdir().unwrap();
    let f32_gguf = dir.path().join("smollm2-f32.gguf");
    tsr_model::gguf_export::export_gguf(
        &loaded,
        &f32_gguf,
        tsr_model::gguf_export::ExportType::F32,
        None,
    )
    .expect("f32 export");
    for (name, gguf) in [
        ("llama.cpp server, Q4_1", loaded.source.clone()),
        ("llama.cpp server, f32", f32_gguf),
    ] {
        let server = serve(&python, &gguf);
        let mut engine = OpenAiEngine::new(&RemoteConfig {
            max_in_flight: 4,
            ..RemoteConfig::single(server.1.clone())
        })
        .unwrap();
        let (n, t) = timed(&mut engine, &requests, &params);
        let tps = n as f64 / t;
        println!(
            "{name:27} {n:5} tokens in {t:6.2} s = {tps:6.1} tok/s  ({:.2}x the local engine)",
            tps / local_tps
        );
        record(&Figure {
            bench: "engine".into(),
            figure: format!("sampled 2x7x<={}, T 0.7, top_p 0.9, tsr f32", tokens()),
            unit: "tok/s".into(),
            tsr: local_tps,
            reference: name.into(),
            reference_value: Some(tps),
            goal: Goal::None,
        });
    }
}
