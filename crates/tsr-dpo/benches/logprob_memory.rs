//! Peak memory and time of completion log-probs + backward: chunked vs naive.
//!
//! `cargo bench -p tsr-dpo --profile dev --bench logprob_memory`
//!
//! Shape: B = 8 sequences, T = 512, V = 49152 (SmolLM2), H = 576; each row has a 128-token prompt
//! and a 384-token completion. Each variant runs in its own child process (this binary
//! re-executed) that builds the inputs, resets the kernel's peak-RSS counter
//! (`/proc/self/clear_refs`), runs forward + backward (gradients into hidden states and LM-head
//! weight) `REPS` times, and reports the peak RSS above the post-setup RSS and the mean time.
//! The two variants run interleaved, `ROUNDS` times each; each side's figures are its fastest
//! time and its largest peak.
//! Goal: chunked peak <= 1/8 of naive at equal or better speed.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use tsr_dpo::{completion_logps_naive, ChunkedLogProbs, ScoredPositions};

#[path = "../../../xtask/src/bench_record.rs"]
mod bench_record;
use bench_record::{record, Figure, Goal};

const B: i64 = 8;
const T: i64 = 512;
const V: i64 = 49152;
const H: i64 = 576;
const PROMPT: i64 = 128;
const REPS: usize = 3;
const ROUNDS: usize = 2;

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn child(variant: &str) {
    tch::manual_seed(0);
    let hidden = Tensor::randn([B, T, H], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let weight = (Tensor::randn([V, H], (Kind::Float, Device::Cpu)) * 0.02).set_requires_grad(true);
    let ids = Tensor::randint(V, [B, T], (Kind::Int64, Device::Cpu));
    let mask = Tensor::ones([B, T], (Kind::Int64, Device::Cpu));
    let _ = mask.narrow(1, 0, PROMPT).fill_(0);
    let g = Tensor::ones([B], (Kind::Float, Device::Cpu));
    let chunk = std::env::var("CHUNK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let run = || match variant {
        "naive" => {
            let lp = completion_logps_naive(&hidden, &weight, &ids, &mask).unwrap();
            (lp * &g).sum(Kind::Float).backward();
        }
        _ => {
            let c = ChunkedLogProbs::new(chunk).unwrap();
            let pos = ScoredPositions::new(&ids, &mask).unwrap();
            let _lp = c.forward(&hidden, &weight, &pos).unwrap();
            c.backward(&hidden, &weight, &pos, &g).unwrap();
        }
    };
    run(); // warm-up: allocator pools, gradient buffers
    let base = status_kb("VmRSS:");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t0 = Instant::now();
    for _ in 0..REPS {
        run();
    }
    let secs = t0.elapsed().as_secs_f64() / REPS as f64;
    let peak = status_kb("VmHWM:");
    println!("RESULT {variant} {} {secs}", peak.saturating_sub(base));
}

fn main() {
    if let Ok(v) = std::env::var("TSR_LOGPROB_BENCH_CHILD") {
        child(&v);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("logprob_memory: bench");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // Two rounds, the variants interleaved (naive, chunked, naive, chunked) so that a slow spell
    // of the machine does not fall on one side only: the fastest time and the largest peak of each.
    let mut res = [(0f64, f64::INFINITY); 2];
    for round in 0..ROUNDS {
        for (v, variant) in ["naive", "chunked"].into_iter().enumerate() {
            let out = Command::new(&exe)
                .env("TSR_LOGPROB_BENCH_CHILD", variant)
                .output()
                .expect("run child");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find(|l| l.starts_with("RESULT"))
                .unwrap_or_else(|| {
                    panic!(
                        "child {variant} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            let f: Vec<&str> = line.split_whitespace().collect();
            let kb: u64 = f[2].parse().unwrap();
            let secs: f64 = f[3].parse().unwrap();
            println!("logprob_memory/{variant} (round {}): peak +{:.1} MiB, {:.3} s per forward+backward (B={B} T={T} V={V}, completion {} tokens/row)", round + 1, kb as f64 / 1024.0, secs, T - PROMPT);
            res[v] = (res[v].0.max(kb as f64), res[v].1.min(secs));
        }
    }
    let (naive, chunked) = (res[0], res[1]);
    for (what, unit, tsr, naive, goal) in [
        (
            "peak memory above set-up",
            "MiB",
            chunked.0 / 1024.0,
            naive.0 / 1024.0,
            0.125,
        ),
        ("seconds per forward+backward", "s", chunked.1, naive.1, 1.0),
    ] {
        record(&Figure {
            bench: "logprob_memory".into(),
            figure: format!("completion log-probs B={B} T={T} V={V}, chunked: {what}"),
            unit: unit.into(),
            tsr,
            reference: "naive log-softmax, same bench".into(),
            reference_value: Some(naive),
            goal: Goal::AtMost(goal),
        });
    }
    println!("logprob_memory: chunked/naive peak memory = {:.3} (goal <= 0.125), time = {:.3} (goal <= 1.0)", chunked.0 / naive.0, chunked.1 / naive.1);
}
