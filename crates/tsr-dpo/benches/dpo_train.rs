//! DPO training throughput and peak memory, tsr vs TRL `DPOTrainer`.
//!
//! `cargo bench -p tsr-dpo --profile dev --bench dpo_train`
//!
//! Both sides train SmolLM2-135M-Instruct (fp32, CPU) on the same 32 conversational pairs
//! (generated here, deterministic), batch 4, one epoch (8 steps), β 0.1, lr 1e-6, max length
//! 256, reference log-probs precomputed before training, no dropout. The model is the built-in
//! GGUF, dequantized and exported once as a Hugging Face directory that both sides load.
//! Each side runs in its own process:
//! - tsr: this binary re-executed (`TSR_DPO_BENCH_CHILD=tsr`);
//! - TRL: `benches/dpo_ref.py` with the tsr reference venv's Python (`TSR_PYTHON` overrides).
//!
//! Training tokens/s = non-padding tokens of the training steps / summed step wall time (TRL's
//! `num_tokens` definition; reference precomputation excluded on both sides). Peak RSS = the
//! process's high-water mark (`VmHWM` / `ru_maxrss`), loading included.
//! Goals: tsr/TRL tokens/s >= 1.5, tsr/TRL peak RSS <= 0.5.
//!
//! Knobs: `TSR_DPO_BENCH_MICRO` = pairs per forward on the tsr side (4 = one forward per step;
//! 1 = four accumulated forwards of one pair, same optimizer batch); `TSR_DPO_BENCH_CONCURRENT=1`
//! runs both sides at the same time (use it on a shared, loaded machine: both see the same load);
//! `TSR_DPO_BENCH_ONLY=tsr|trl`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tsr_dpo::{DpoConfig, VecSink};
use tsr_model::LoadOptions;

const WORDS: &[&str] = &[
    "the",
    "model",
    "answer",
    "question",
    "because",
    "water",
    "energy",
    "simple",
    "people",
    "history",
    "between",
    "important",
    "example",
    "first",
    "second",
    "result",
    "number",
    "explain",
    "carefully",
    "small",
    "large",
    "city",
    "river",
    "light",
    "sound",
    "through",
    "reason",
    "always",
    "never",
    "often",
    "during",
    "science",
    "language",
    "value",
    "change",
    "should",
    "could",
    "would",
    "process",
    "system",
    "health",
    "market",
    "travel",
    "school",
    "student",
    "teacher",
    "write",
    "read",
    "think",
    "country",
    "world",
    "morning",
    "evening",
    "garden",
    "computer",
    "program",
    "function",
    "data",
    "table",
    "method",
    "paper",
    "story",
    "music",
    "color",
    "animal",
];

fn words(state: &mut u64, n: usize) -> String {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = WORDS[((*state >> 33) as usize) % WORDS.len()];
        out.push(if i % 12 == 11 {
            format!("{w}.")
        } else {
            w.to_string()
        });
    }
    out.join(" ")
}

fn write_pairs(path: &Path) {
    let mut s = 20240611u64;
    let mut lines = Vec::new();
    for i in 0..32 {
        let mut len = |lo: usize, hi: usize| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + ((s >> 33) as usize) % (hi - lo)
        };
        let (p, c, r) = (len(10, 60), len(30, 150), len(30, 150));
        let mut st = i as u64 + 1;
        let prompt = words(&mut st, p);
        let chosen = words(&mut st, c);
        let rejected = words(&mut st, r);
        lines.push(
            serde_json::json!({
                "prompt": [{"role": "user", "content": format!("Question {i}: {prompt}?")}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            })
            .to_string(),
        );
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn vm_hwm_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn child_export(dir: &Path) {
    let loaded = tsr_model::load("smollm2-135m-instruct", &LoadOptions::default()).unwrap();
    tsr_dpo::save_model(&loaded.model, &loaded.tokenizer, &loaded.generation, dir).unwrap();
}

fn child_tsr(pairs: &Path, model_dir: &Path) {
    let mut loaded = tsr_model::load(model_dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    // Pairs per forward (TSR_DPO_BENCH_MICRO, default 4); the optimizer batch stays 4 pairs.
    let micro: usize = std::env::var("TSR_DPO_BENCH_MICRO")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    assert!(
        micro > 0 && 4 % micro == 0,
        "TSR_DPO_BENCH_MICRO must divide 4"
    );
    let cfg = DpoConfig {
        batch_size: micro,
        gradient_accumulation_steps: 4 / micro,
        epochs: 1,
        beta: 0.1,
        learning_rate: 1e-6,
        max_length: 256,
        dropout: 0.0,
        ref_batch_size: 4,
        ..DpoConfig::default()
    }
    .validate()
    .unwrap();
    let raw = tsr_dpo::read_pairs(pairs).unwrap();
    let (tokenized, _) =
        tsr_dpo::tokenize_pairs(&loaded.tokenizer, &raw, 256, tsr_dpo::Truncation::KeepStart)
            .unwrap();
    let pad = loaded.tokenizer.pad_id();
    let reference =
        tsr_dpo::compute_reference_logps(&loaded.model, &tokenized, pad, 4, cfg.logprobs())
            .unwrap();
    let mut sink = VecSink::default();
    let mut trainer =
        tsr_dpo::Trainer::new(&mut loaded.model, cfg, tokenized, reference, pad).unwrap();
    trainer
        .run(&mut sink, None, |m, total| {
            eprintln!(
                "tsr step {}/{total}: {:.1} s, loss {:.4}",
                m.step, m.step_seconds, m.loss
            )
        })
        .unwrap();
    let secs: f64 = sink.0.iter().map(|m| m.step_seconds).sum();
    let tokens: f64 = sink.0.iter().map(|m| m.tokens_per_s * m.step_seconds).sum();
    let losses: Vec<f64> = sink.0.iter().map(|m| m.loss).collect();
    println!(
        "RESULT {}",
        serde_json::json!({"tokens": tokens.round(), "seconds": secs, "tokens_per_s": tokens / secs, "steps": sink.0.len(),
            "peak_rss_mb": vm_hwm_mb(), "losses": losses, "threads": tch::get_num_threads(), "pairs_per_forward": micro})
    );
}

fn result(out: &std::process::Output, what: &str) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "{what} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(&line["RESULT ".len()..]).unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("dpo_train: bench");
        return;
    }
    let dir = std::env::var_os("TSR_DPO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dpo-bench"));
    let pairs = dir.join("pairs.jsonl");
    let model_dir = dir.join("smollm2-135m-instruct-hf");
    match std::env::var("TSR_DPO_BENCH_CHILD").as_deref() {
        Ok("export") => return child_export(&model_dir),
        Ok("tsr") => return child_tsr(&pairs, &model_dir),
        _ => {}
    }
    std::fs::create_dir_all(&dir).unwrap();
    write_pairs(&pairs);
    let exe = std::env::current_exe().unwrap();
    if !model_dir.join("config.json").exists() {
        let st = Command::new(&exe)
            .env("TSR_DPO_BENCH_CHILD", "export")
            .status()
            .unwrap();
        assert!(st.success(), "exporting the model failed");
    }
    let only = std::env::var("TSR_DPO_BENCH_ONLY").unwrap_or_default();
    if std::env::var("TSR_DPO_BENCH_CONCURRENT").as_deref() == Ok("1") {
        // Both sides at once, so that they share whatever else loads the machine.
        let tsr = Command::new(&exe)
            .env("TSR_DPO_BENCH_CHILD", "tsr")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let trl = trl_command(&dir, &pairs, &model_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let a = result(&tsr.wait_with_output().unwrap(), "tsr");
        let b = result(&trl.wait_with_output().unwrap(), "trl");
        println!("dpo_train/tsr: {a}");
        println!("dpo_train/trl: {b}");
        report(&a, &b);
        return;
    }
    let tsr = (only != "trl").then(|| {
        let out = Command::new(&exe)
            .env("TSR_DPO_BENCH_CHILD", "tsr")
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        let r = result(&out, "tsr");
        println!("dpo_train/tsr: {r}");
        r
    });
    let trl = (only != "tsr").then(|| {
        let out = trl_command(&dir, &pairs, &model_dir).output().unwrap();
        let r = result(&out, "trl");
        println!("dpo_train/trl: {r}");
        r
    });
    if let (Some(a), Some(b)) = (tsr, trl) {
        report(&a, &b);
    }
}

fn trl_command(dir: &Path, pairs: &Path, model_dir: &Path) -> Command {
    let python = std::env::var_os("TSR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| tsr_model::tsr_home().join("venv-torch-2.11.0/bin/python"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/dpo_ref.py");
    let mut c = Command::new(python);
    c.arg(script)
        .arg(pairs)
        .arg(model_dir)
        .arg(dir.join("trl-out"))
        .env("TQDM_DISABLE", "1");
    c
}

fn report(a: &serde_json::Value, b: &serde_json::Value) {
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    println!(
        "dpo_train: tsr/trl training tokens/s = {:.2} (goal >= 1.5; tsr {:.1}, trl {:.1}), peak RSS = {:.2} (goal <= 0.5; tsr {:.0} MB, trl {:.0} MB)",
        f(a, "tokens_per_s") / f(b, "tokens_per_s"),
        f(a, "tokens_per_s"),
        f(b, "tokens_per_s"),
        f(a, "peak_rss_mb") / f(b, "peak_rss_mb"),
        f(a, "peak_rss_mb"),
        f(b, "peak_rss_mb"),
    );
}
