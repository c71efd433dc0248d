//! DPO training throughput and peak memory, tsr vs TRL `DPOTrainer`.
//!
//! `cargo bench -p tsr-dpo --profile dev --bench dpo_train`
//!
//! Both sides train SmolLM2-135M-Instruct (fp32, CPU) on the same 32 conversational pairs
//! (generated here, deterministic), batch 4, one epoch (8 steps), β 0.1, lr 1e-6, max length
//! 256, reference log-probs precomputed before training, no dropout (TRL's `disable_dropout`
//! default; tsr's `dropout = 0`). The model is the built-in GGUF, dequantized and exported once
//! as a Hugging Face directory that both sides load. Each side runs in its own process:
//! - tsr: this binary re-executed (`TSR_DPO_BENCH_CHILD=tsr`);
//! - TRL: `benches/dpo_ref.py` with the tsr reference venv's Python (`TSR_PYTHON` overrides).
//!
//! Rows, one run after the other:
//! 1. tsr as configured by default for this run (`share_prompt = "auto"`, on without dropout:
//!    each pair's prompt runs once for both completions), activations kept
//!    (`gradient_checkpointing = "off"`); it writes its batch plan (the pairs of every step, in
//!    order; tsr groups pairs of similar length);
//! 2. the same with activation checkpointing (`"on"`), same batches;
//! 3. the same with selective checkpointing (`"selective"`: the MLP's products kept, only the
//!    attention recomputed), same batches;
//! 4. tsr in TRL's layout (`share_prompt = "off"`: chosen and rejected as separate padded rows),
//!    activations kept, same batches: what sharing the prompt is worth;
//! 5. TRL replaying tsr's plan (a sequential sampler over the pairs in plan order): the same
//!    batches in the same order, so both pad the same — the like-for-like comparison. It runs
//!    twice and its best figures count (the higher tokens/s, the lower peak), as TRL's own
//!    figures move between runs;
//! 6. TRL with its own random batches (its default), for reference.
//!
//! Training tokens/s = non-padding tokens of the training steps / summed step wall time (TRL's
//! `num_tokens` definition, on both sides the tokens of the chosen and rejected sequences, each
//! prompt counted twice whatever the layout; reference precomputation excluded on both sides).
//! Peak RSS = the process's high-water mark (`VmHWM` / `ru_maxrss`), loading included.
//! Goals (like for like, rows 1-4 against row 5): tsr/TRL tokens/s >= 1.5, tsr/TRL peak RSS <= 0.5.
//!
//! Timings of each micro-batch (forward, log-probs and loss, backward) and of the optimizer step:
//! `RUST_LOG=tsr_dpo=debug`.
//!
//! Knob: `TSR_DPO_BENCH_MICRO` = pairs per forward on the tsr side (4 = one forward per step;
//! 1 = four accumulated forwards of one pair, same optimizer batch).
//!
//! No padding-free TRL row: TRL 1.16's `padding_free=True` is switched off after its DPO
//! refactor (it warns and falls back to padded batches), so it would repeat row 3.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../../xtask/src/bench_record.rs"]
mod bench_record;
use bench_record::{record, Figure, Goal};

use tsr_dpo::{DpoConfig, VecSink};
use tsr_model::LoadOptions;

#[global_allocator]
static ALLOC: tsr_model::allocator::MiMalloc = tsr_model::allocator::MiMalloc;

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
    // `RUST_LOG=tsr_dpo=debug` shows each micro-batch's forward / log-probs / backward times.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
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
    let checkpointing = match std::env::var("TSR_DPO_BENCH_CHECKPOINTING").as_deref() {
        Ok("on") => tsr_dpo::GradientCheckpointing::On,
        Ok("selective") => tsr_dpo::GradientCheckpointing::Selective,
        _ => tsr_dpo::GradientCheckpointing::Off,
    };
    let share_prompt = if std::env::var("TSR_DPO_BENCH_SHARE_PROMPT").as_deref() == Ok("0") {
        tsr_dpo::PromptSharing::Off
    } else {
        tsr_dpo::PromptSharing::Auto
    };
    let cfg = DpoConfig {
        gradient_checkpointing: checkpointing,
        share_prompt,
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
    if let Some(path) = std::env::var_os("TSR_DPO_BENCH_PLAN") {
        // Steps of 4 pairs: the micro-batches of one step together.
        let plan: Vec<Vec<usize>> = trainer
            .batch_plan()
            .chunks(4 / micro)
            .map(|c| c.concat())
            .collect();
        std::fs::write(path, serde_json::to_vec(&plan).unwrap()).unwrap();
    }
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
            "peak_rss_mb": vm_hwm_mb(), "losses": losses, "threads": tch::get_num_threads(), "pairs_per_forward": micro,
            "gradient_checkpointing": format!("{checkpointing:?}").to_lowercase(),
            "share_prompt": share_prompt != tsr_dpo::PromptSharing::Off})
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
    tsr_model::allocator::configure();
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
    let plan = dir.join("plan.json");
    let tsr = |checkpointing: &str, share_prompt: bool| {
        let mut c = Command::new(&exe);
        c.env("TSR_DPO_BENCH_CHILD", "tsr")
            .env("TSR_DPO_BENCH_CHECKPOINTING", checkpointing)
            .env(
                "TSR_DPO_BENCH_SHARE_PROMPT",
                if share_prompt { "1" } else { "0" },
            )
            .stderr(std::process::Stdio::inherit());
        if checkpointing == "off" && share_prompt {
            c.env("TSR_DPO_BENCH_PLAN", &plan);
        }
        let r = result(&c.output().unwrap(), "tsr");
        println!(
            "dpo_train/tsr{}{}: {r}",
            match checkpointing {
                "off" => String::new(),
                other => format!("-checkpointing-{other}"),
            },
            if share_prompt { "" } else { "-trl-layout" }
        );
        r
    };
    let trl = |replay: bool| {
        let mut c = trl_command(&dir, &pairs, &model_dir);
        if replay {
            c.arg(&plan);
        }
        let r = result(&c.output().unwrap(), "trl");
        println!(
            "dpo_train/trl{}: {r}",
            if replay {
                "-same-batches"
            } else {
                "-own-batches"
            }
        );
        r
    };
    let plain = tsr("off", true);
    let checkpointed = tsr("on", true);
    let selective = tsr("selective", true);
    let unshared = tsr("off", false);
    // TRL's own figures move from run to run on the same batches (this machine: 77-112 tokens/s,
    // peaks of 4.9-6.4 GB), so it trains them twice and the comparison takes its best of each:
    // the higher tokens/s and the lower peak, the harder reference for tsr.
    let trl_runs = [trl(true), trl(true)];
    let trl_same = best_of(&trl_runs);
    let trl_own = trl(false);
    report(
        &[
            ("tsr", &plain),
            ("tsr, checkpointing", &checkpointed),
            ("tsr, selective checkpointing", &selective),
            ("tsr, TRL's layout", &unshared),
        ],
        &trl_same,
        &trl_own,
    );
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

/// One TRL row from several runs of it: the highest tokens/s and the lowest peak RSS (with their
/// steps and seconds from the fastest run), the losses of the first.
fn best_of(runs: &[serde_json::Value]) -> serde_json::Value {
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let fastest = runs
        .iter()
        .max_by(|a, b| f(a, "tokens_per_s").total_cmp(&f(b, "tokens_per_s")))
        .expect("at least one run");
    let mut best = fastest.clone();
    best["peak_rss_mb"] = runs
        .iter()
        .map(|r| f(r, "peak_rss_mb"))
        .fold(f64::INFINITY, f64::min)
        .into();
    best["runs"] = runs
        .iter()
        .map(|r| serde_json::json!({"tokens_per_s": r["tokens_per_s"], "peak_rss_mb": r["peak_rss_mb"]}))
        .collect::<Vec<_>>()
        .into();
    println!("dpo_train/trl-same-batches, best of {}: {best}", runs.len());
    best
}

fn report(
    rows: &[(&str, &serde_json::Value)],
    trl_same: &serde_json::Value,
    trl_own: &serde_json::Value,
) {
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let row = |name: &str, v: &serde_json::Value| {
        println!(
            "dpo_train: {name:<30} {:>7.1} tokens/s ({:>5.2}x TRL same batches), {:>5.2} s/step, peak RSS {:>5.0} MB ({:.2}x)",
            f(v, "tokens_per_s"),
            f(v, "tokens_per_s") / f(trl_same, "tokens_per_s"),
            f(v, "seconds") / f(v, "steps"),
            f(v, "peak_rss_mb"),
            f(v, "peak_rss_mb") / f(trl_same, "peak_rss_mb"),
        )
    };
    for (name, v) in rows {
        row(name, v);
    }
    row("TRL, tsr's batches", trl_same);
    row("TRL, its own batches", trl_own);
    for (name, v) in rows {
        let figure = |what: &str| format!("DPO 32 pairs, batch 4, max length 256, {what}, {name}");
        record(&Figure {
            bench: "dpo_train".into(),
            figure: figure("non-pad tokens/s"),
            unit: "tok/s".into(),
            tsr: f(v, "tokens_per_s"),
            reference: "TRL, same batches".into(),
            reference_value: Some(f(trl_same, "tokens_per_s")),
            goal: Goal::AtLeast(1.5),
        });
        record(&Figure {
            bench: "dpo_train".into(),
            figure: figure("peak RSS"),
            unit: "MB".into(),
            tsr: f(v, "peak_rss_mb"),
            reference: "TRL, same batches".into(),
            reference_value: Some(f(trl_same, "peak_rss_mb")),
            goal: Goal::AtMost(0.5),
        });
    }
    let both: Vec<&str> = rows
        .iter()
        .filter(|(_, v)| {
            f(v, "tokens_per_s") >= 1.5 * f(trl_same, "tokens_per_s")
                && f(v, "peak_rss_mb") <= 0.5 * f(trl_same, "peak_rss_mb")
        })
        .map(|(n, _)| *n)
        .collect();
    println!(
        "dpo_train: goals (tokens/s >= 1.5x and peak RSS <= 0.5x TRL like for like) both met by: {}",
        if both.is_empty() {
            "none".to_string()
        } else {
            both.join("; ")
        }
    );
}
