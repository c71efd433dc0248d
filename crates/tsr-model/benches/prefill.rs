//! Prefill throughput of SmolLM2-135M on CPU: tsr's full forward (logits for every position)
//! against transformers' on the same input, measured in the same run.
//!
//! The reference runs in a Python process (`benches/prefill_ref.py --serve`, interpreter from
//! `TSR_REFERENCE_PYTHON`, default `~/.cache/tsr/venv-torch-2.11.0/bin/python`) that loads the same
//! GGUF with transformers' own loader. tsr and reference forwards are interleaved one by one, so
//! both see the same machine load; the printed ratio is tsr tokens/s over transformers tokens/s
//! (medians). Criterion additionally records tsr's own timing.
//!
//! If the built-in model cannot be loaded, both sides use random weights of SmolLM2's config.
//! `TSR_BENCH_SKIP_REFERENCE=1` skips the Python side.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../xtask/src/bench_record.rs"]
mod bench_record;
use bench_record::{record, Figure, Goal};

use criterion::{BenchmarkId, Criterion, Throughput};
use tsr_model::{Kind, LoadOptions, Model, ModelConfig, Tensor};

/// (batch, tokens per row) of the measured inputs.
const SHAPES: [(i64, i64); 2] = [(1, 128), (4, 128)];
/// Interleaved tsr/reference pairs per shape for the ratio.
const PAIRS: usize = 7;

const SMOLLM2_CONFIG: &str = r#"{
  "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
  "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
  "num_key_value_heads": 3, "head_dim": 64, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
  "vocab_size": 49152, "tie_word_embeddings": true, "max_position_embeddings": 8192,
  "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2
}"#;

enum Source {
    Gguf(PathBuf),
    RandomConfig(PathBuf),
}

struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Reference {
    fn spawn(source: &Source, threads: i32) -> Result<Reference, String> {
        let python = std::env::var("TSR_REFERENCE_PYTHON").unwrap_or_else(|_| {
            format!(
                "{}/.cache/tsr/venv-torch-2.11.0/bin/python",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/prefill_ref.py");
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .arg("--serve")
            .arg("--threads")
            .arg(threads.to_string());
        match source {
            Source::Gguf(p) => cmd.arg("--gguf").arg(p),
            Source::RandomConfig(dir) => cmd.arg("--config").arg(dir),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.contains("\"ready\"") {
            let _ = child.kill();
            return Err(format!("reference did not start (got {line:?})"));
        }
        println!("reference: {}", line.trim());
        Ok(Reference {
            child,
            stdin,
            stdout,
        })
    }

    fn run(&mut self, ids_file: &Path) -> Result<f64, String> {
        writeln!(self.stdin, "run {}", ids_file.display()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))?;
        v["s"].as_f64().ok_or_else(|| format!("bad reply {line:?}"))
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// Deterministic token ids (no special tokens).
fn input_ids(batch: i64, len: i64, vocab: i64) -> Vec<Vec<i64>> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..batch)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    3 + ((state >> 33) as i64) % (vocab - 3)
                })
                .collect()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

fn forward(model: &Model, ids: &Tensor, mask: &Tensor) -> Tensor {
    tch::no_grad(|| model.logits(ids, mask, false)).expect("forward")
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let opts = LoadOptions::default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (model, source) = match tsr_model::load("smollm2-135m-instruct", &opts) {
        Ok(loaded) => {
            println!(
                "model: SmolLM2-135M-Instruct from {}",
                loaded.source.display()
            );
            (loaded.model, Source::Gguf(loaded.source))
        }
        Err(e) => {
            println!("model: built-in SmolLM2 unavailable ({e}); random weights of its config on both sides");
            let config = ModelConfig::from_json_str(SMOLLM2_CONFIG).expect("config");
            std::fs::write(tmp.path().join("config.json"), SMOLLM2_CONFIG).expect("write config");
            (
                Model::random(config, 0, &opts).expect("model"),
                Source::RandomConfig(tmp.path().to_path_buf()),
            )
        }
    };
    let threads = tch::get_num_threads();
    let mut reference = if std::env::var_os("TSR_BENCH_SKIP_REFERENCE").is_some() {
        None
    } else {
        match Reference::spawn(&source, threads) {
            Ok(r) => Some(r),
            Err(e) => {
                println!("reference unavailable: {e}");
                None
            }
        }
    };
    let vocab = model.config().vocab_size as i64;
    let mut group = criterion.benchmark_group("prefill");
    for (batch, len) in SHAPES {
        let rows = input_ids(batch, len, vocab);
        let ids_file = tmp.path().join(format!("ids_{batch}x{len}.json"));
        std::fs::write(&ids_file, serde_json::to_string(&rows).expect("json")).expect("write ids");
        let flat: Vec<i64> = rows.concat();
        let ids = Tensor::from_slice(&flat).view([batch, len]);
        let mask = ids.ones_like();
        let tokens = (batch * len) as f64;

        let _ = forward(&model, &ids, &mask);
        if let Some(r) = reference.as_mut() {
            let _ = r.run(&ids_file);
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..PAIRS {
                let t = Instant::now();
                let logits = forward(&model, &ids, &mask);
                assert_eq!(logits.kind(), Kind::Float);
                ours.push(t.elapsed().as_secs_f64());
                match r.run(&ids_file) {
                    Ok(s) => theirs.push(s),
                    Err(e) => {
                        println!("reference failed: {e}");
                        break;
                    }
                }
            }
            if theirs.len() == PAIRS {
                let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
                let (a, b) = (
                    tokens / median(ours.clone()),
                    tokens / median(theirs.clone()),
                );
                let (a_best, b_best) = (tokens / best(&ours), tokens / best(&theirs));
                println!(
                    "prefill {batch}x{len} ({threads} threads): median tsr {a:.1} tok/s, transformers {b:.1} tok/s, ratio {:.2}x; \
                     best tsr {a_best:.1} tok/s, transformers {b_best:.1} tok/s, ratio {:.2}x",
                    a / b,
                    a_best / b_best
                );
                record(&Figure {
                    bench: "prefill".into(),
                    figure: format!("prefill {batch}x{len}, f32, median of interleaved runs"),
                    unit: "tok/s".into(),
                    tsr: a,
                    reference: "transformers f32".into(),
                    reference_value: Some(b),
                    goal: Goal::AtLeast(1.0),
                });
            }
        }
        group.throughput(Throughput::Elements(tokens as u64));
        group.bench_with_input(
            BenchmarkId::new("tsr", format!("{batch}x{len}")),
            &(),
            |bench, _| bench.iter(|| forward(&model, &ids, &mask)),
        );
    }
    group.finish();
    drop(reference);

    // Incremental decoding with the KV cache: 16 one-token steps after a 32-token prompt.
    let mut group = criterion.benchmark_group("decode");
    let (batch, prompt, steps) = (2i64, 32i64, 16i64);
    let flat: Vec<i64> = input_ids(batch, prompt + steps, vocab).concat();
    let ids = Tensor::from_slice(&flat).view([batch, prompt + steps]);
    let mask = ids.ones_like();
    let pos = Tensor::arange(prompt + steps, (Kind::Int64, tch::Device::Cpu))
        .unsqueeze(0)
        .repeat([batch, 1]);
    group.throughput(Throughput::Elements((batch * steps) as u64));
    group.bench_function(format!("tsr/{batch}x{prompt}+{steps}"), |bench| {
        bench.iter(|| {
            let mut cache = model.new_cache(batch as usize);
            let f = |start: i64, len: i64, cache: &mut tsr_model::KvCache| {
                let h = model
                    .forward_cached(
                        &ids.narrow(1, start, len),
                        &pos.narrow(1, start, len),
                        &mask.narrow(1, 0, start + len),
                        cache,
                    )
                    .expect("decode");
                model.lm_head(&h.narrow(1, len - 1, 1))
            };
            let _ = f(0, prompt, &mut cache);
            for s in 0..steps {
                let _ = f(prompt + s, 1, &mut cache);
            }
        })
    });
    group.finish();
    criterion.final_summary();
}
