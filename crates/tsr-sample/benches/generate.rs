//! Generation throughput of tsr-sample against transformers `generate`, measured in the same run
//! on SmolLM2-135M-Instruct, float32, CPU, 2 threads (`cargo bench -p tsr-sample --profile dev`).
//!
//! Scenarios (both sides generate exactly `TOKENS` new tokens per sequence, EOS ignored):
//!   sampled: 2 chat prompts x 7 samples, T = 0.7, top_p = 0.9 (goal >= 4x transformers); tsr
//!            prefills each prompt once for its 7 samples (prefix sharing);
//!   unshared: the same 14 sequences as 14 one-sample requests, so tsr prefills every row as
//!            transformers does: the decoding gain at batch 14 alone (no goal), and
//!            sampled / unshared is what prefix sharing adds;
//!   greedy:  1 prompt, batch 1 (goal >= 2.5x transformers): the per-token decoding gain.
//! Then a per-step profile of the sampled scenario: the model step (forward_cached), of which the
//! linear layers alone (the same matmul shapes timed in isolation), the lm_head, the processors
//! and token choice, and the host bookkeeping.
//!
//! Environment: TSR_BENCH_MODEL (default `smollm2-135m-instruct`), TSR_REFERENCE_PYTHON (default
//! ~/.cache/tsr/venv-torch-2.11.0/bin/python), TSR_BENCH_SKIP_REF=1 to skip transformers,
//! TSR_BENCH_TOKENS (default 128), TSR_BENCH_DTYPE (`f32`, default; `bf16`: weights and
//! activations in bf16 on both sides; `bf16-weights` and `f16-weights`: tsr's weight-only bf16
//! or fp16 (`Model::set_weight_dtype`; fp16 through FBGEMM's packed kernels) against
//! transformers in f32, which has no such mode).

#![allow(clippy::print_stdout)]

use std::time::Instant;
use tch::{Kind, Tensor};
use tsr_judge::{GenRequest, Prompt, SamplingParams};
use tsr_model::{load, LoadOptions, Model};
use tsr_sample::{Processors, Sampler, SamplerOptions};

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
        .unwrap_or(128)
}

/// `TSR_BENCH_DTYPE`: its name, the model's kind, the weight-only kind, the reference's dtype.
fn dtype() -> (&'static str, Kind, Option<Kind>, &'static str) {
    match std::env::var("TSR_BENCH_DTYPE").as_deref() {
        Ok("bf16") => ("bf16", Kind::BFloat16, None, "bf16"),
        Ok("bf16-weights") => ("bf16-weights", Kind::Float, Some(Kind::BFloat16), "f32"),
        Ok("f16-weights") => ("f16-weights", Kind::Float, Some(Kind::Half), "f32"),
        Ok("f32") | Err(_) => ("f32", Kind::Float, None, "f32"),
        Ok(other) => panic!("TSR_BENCH_DTYPE={other}: use f32, bf16, bf16-weights or f16-weights"),
    }
}

fn reference(gguf: &std::path::Path) -> Option<serde_json::Value> {
    if std::env::var("TSR_BENCH_SKIP_REF").is_ok_and(|v| v == "1") {
        return None;
    }
    let python = std::env::var("TSR_REFERENCE_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tsr/venv-torch-2.11.0/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/generate_ref.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(gguf)
        .args(["--threads", "2", "--tokens", &tokens().to_string()])
        .args(["--dtype", dtype().3])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            serde_json::from_str(text.lines().last().unwrap_or("")).ok()
        }
        Ok(o) => {
            println!(
                "reference failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stdout)
            );
            None
        }
        Err(e) => {
            println!("reference python {python} not runnable: {e}");
            None
        }
    }
}

fn run(
    sampler: &mut Sampler<'_>,
    requests: &[GenRequest],
    params: &SamplingParams,
) -> (usize, f64) {
    let t0 = Instant::now();
    let out = sampler.sample(requests, params).expect("generation");
    let dt = t0.elapsed().as_secs_f64();
    let n: usize = out
        .iter()
        .flatten()
        .map(|s| s.completion.token_ids.len())
        .sum();
    (n, dt)
}

/// The allocator the `tsr` binary runs with (`tsr_model::allocator`), so the figures are the CLI's.
#[global_allocator]
static ALLOC: tsr_model::allocator::MiMalloc = tsr_model::allocator::MiMalloc;

fn main() {
    tsr_model::allocator::configure();
    tch::set_num_threads(2);
    let spec = std::env::var("TSR_BENCH_MODEL").unwrap_or_else(|_| "smollm2-135m-instruct".into());
    let opts = LoadOptions {
        kind: dtype().1,
        ..LoadOptions::default()
    };
    let mut loaded = load(&spec, &opts).expect("loading the bench model");
    if let Some(kind) = dtype().2 {
        loaded
            .model
            .set_weight_dtype(kind)
            .expect("weight-only dtype");
    }
    let new = tokens();
    let reference = if loaded.source.extension().is_some_and(|e| e == "gguf") {
        reference(&loaded.source)
    } else {
        println!(
            "reference skipped: {} is not a gguf file",
            loaded.source.display()
        );
        None
    };

    let options = SamplerOptions {
        ignore_eos: true,
        ..Default::default()
    };
    let mut sampler = Sampler::new(&loaded.model, &loaded.tokenizer).with_options(options);
    let sampled = SamplingParams {
        temperature: 0.7,
        top_p: 0.9,
        max_new_tokens: new,
        ..Default::default()
    };
    let greedy = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens: new,
        ..Default::default()
    };
    let two: Vec<GenRequest> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| GenRequest {
            prompt: Prompt::user(*p),
            n: 7,
            seed: i as u64,
        })
        .collect();
    // The same 14 sequences as 14 requests of one sample each: every row prefills its own copy
    // of the prompt, as transformers does, so its ratio is the decoding gain at batch 14 alone
    // and `sampled / unshared` is what prefix sharing adds.
    let fourteen: Vec<GenRequest> = two
        .iter()
        .flat_map(|r| {
            (0..r.n).map(move |j| GenRequest {
                prompt: r.prompt.clone(),
                n: 1,
                seed: 100 * r.seed + j as u64,
            })
        })
        .collect();
    let one = vec![GenRequest {
        prompt: Prompt::user(PROMPTS[0]),
        n: 1,
        seed: 0,
    }];

    // Warm-up, then timed runs.
    let warm = SamplingParams {
        max_new_tokens: 8,
        ..sampled.clone()
    };
    run(&mut sampler, &two, &warm);
    let (n_s, t_s) = run(&mut sampler, &two, &sampled);
    let (n_u, t_u) = run(&mut sampler, &fourteen, &sampled);
    let warm = SamplingParams {
        max_new_tokens: 8,
        ..greedy.clone()
    };
    run(&mut sampler, &one, &warm);
    let (n_g, t_g) = run(&mut sampler, &one, &greedy);

    let tps_s = n_s as f64 / t_s;
    let tps_u = n_u as f64 / t_u;
    let tps_g = n_g as f64 / t_g;
    let ref_tps = |k: &str| {
        reference
            .as_ref()
            .and_then(|r| r[k]["tokens_per_s"].as_f64())
    };
    let line = |name: &str, n: usize, t: f64, tps: f64, r: Option<f64>, goal: f64| {
        let ratio = r.map(|r| {
            format!(
                "{:.2}x transformers {} ({r:.1} tok/s; goal {goal}x)",
                tps / r,
                dtype().3
            )
        });
        println!(
            "{name:8} {n} tokens in {t:.2} s = {tps:.1} tok/s  {}",
            ratio.unwrap_or_else(|| "(no reference)".into())
        );
    };
    println!(
        "== generate, SmolLM2-135M {} CPU, {} threads, {new} new tokens ==",
        dtype().0,
        tch::get_num_threads()
    );
    line("sampled", n_s, t_s, tps_s, ref_tps("sampled"), 4.0);
    println!(
        "unshared {n_u} tokens in {t_u:.2} s = {tps_u:.1} tok/s  {} (the 14 samples as 14 prompts: no prefix sharing; sharing adds {:.2}x)",
        ref_tps("sampled").map_or_else(
            || "(no reference)".into(),
            |r| format!("{:.2}x transformers {}", tps_u / r, dtype().3)
        ),
        tps_s / tps_u
    );
    line("greedy", n_g, t_g, tps_g, ref_tps("greedy"), 2.5);
    for (figure, tps, key, goal) in [
        (
            format!("sampled 2x7x{new}, T 0.7, top_p 0.9"),
            tps_s,
            "sampled",
            Goal::AtLeast(4.0),
        ),
        (
            format!("sampled 2x7x{new} as 14 prompts (no prefix sharing)"),
            tps_u,
            "sampled",
            Goal::None,
        ),
        (
            format!("greedy 1x{new}"),
            tps_g,
            "greedy",
            Goal::AtLeast(2.5),
        ),
    ] {
        record(&Figure {
            bench: "generate".into(),
            figure: format!("{figure}, tsr {}", dtype().0),
            unit: "tok/s".into(),
            tsr: tps,
            reference: format!("transformers {}", dtype().3),
            reference_value: ref_tps(key),
            goal,
        });
    }

    if std::env::var("TSR_BENCH_PROFILE").map_or(true, |v| v != "0") {
        profile(&loaded.model, &loaded.tokenizer, &two, &sampled);
    }
}

/// Time the pieces of one decoding step at batch 14 with ~150 cached positions.
fn profile(
    model: &Model,
    tok: &tsr_model::ChatTokenizer,
    two: &[GenRequest],
    params: &SamplingParams,
) {
    let _g = tch::no_grad_guard();
    let cfg = model.config();
    let rows = 14i64;
    let ids = match &two[0].prompt {
        Prompt::Chat(m) => tok
            .encode(&tok.apply_chat_template(m, true).unwrap(), false)
            .unwrap(),
        Prompt::Text(t) => tok.encode(t, true).unwrap(),
    };
    let past = 150i64;
    let mut prompt: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    prompt.resize(past as usize, 42);
    let input = Tensor::from_slice(&prompt)
        .reshape([1, past])
        .repeat([rows, 1]);
    let pos = Tensor::arange(past, (Kind::Int64, model.device()))
        .unsqueeze(0)
        .repeat([rows, 1]);
    let mask = Tensor::ones([rows, past], (Kind::Int64, model.device()));
    let reps = 20;
    let time = |f: &mut dyn FnMut()| {
        f();
        let t0 = Instant::now();
        for _ in 0..reps {
            f();
        }
        t0.elapsed().as_secs_f64() * 1e3 / reps as f64
    };
    // Model step (forward_cached for one new token), on a copy of a prefilled cache each time.
    // Each copy has taken one decoding step already, so its buffers have grown past the prompt
    // (a cache grows geometrically; the measured step appends into spare capacity, as most
    // decoding steps do).
    let step = |at: i64| {
        (
            Tensor::full([rows, 1], 42, (Kind::Int64, model.device())),
            Tensor::full([rows, 1], at, (Kind::Int64, model.device())),
            Tensor::ones([rows, at + 1], (Kind::Int64, model.device())),
        )
    };
    let (first_ids, first_pos, first_mask) = step(past);
    let (step_ids, step_pos, step_mask) = step(past + 1);
    let mut hidden = Tensor::zeros(
        [rows, 1, cfg.hidden_size as i64],
        (Kind::Float, model.device()),
    );
    let mut caches: Vec<_> = (0..reps + 1)
        .map(|_| {
            let mut c = model.new_cache(rows as usize);
            let _ = model.forward_cached(&input, &pos, &mask, &mut c).unwrap();
            let _ = model
                .forward_cached(&first_ids, &first_pos, &first_mask, &mut c)
                .unwrap();
            c
        })
        .collect();
    let step_ms = time(&mut || {
        let mut c = caches.pop().unwrap();
        hidden = model
            .forward_cached(&step_ids, &step_pos, &step_mask, &mut c)
            .unwrap();
    });
    let h = hidden.select(1, 0);
    let lm_ms = time(&mut || {
        let _ = model.lm_head(&h);
    });
    // The linear layers of one step alone: x[14, H] times every weight matrix.
    let weights: Vec<Tensor> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(n, t)| n.starts_with("model.layers.") && t.dim() == 2)
        .map(|(_, t)| t)
        .collect();
    let x_h = Tensor::randn(
        [rows, cfg.hidden_size as i64],
        (Kind::Float, model.device()),
    );
    let x_i = Tensor::randn(
        [rows, cfg.intermediate_size as i64],
        (Kind::Float, model.device()),
    );
    let linear_ms = time(&mut || {
        for w in &weights {
            let x = if w.size()[1] == x_h.size()[1] {
                &x_h
            } else {
                &x_i
            };
            let _ = x.matmul(&w.tr());
        }
    });
    let logits = model.lm_head(&h);
    let procs = Processors::from_params(params).unwrap();
    let us: Vec<f64> = (0..rows).map(|i| (i as f64 + 0.5) / rows as f64).collect();
    // What the sampler runs: candidate sets (no full-vocabulary sort), vocab-order inverse CDF.
    let sample_ms = time(&mut || {
        let c = procs.apply_candidates(&logits, None).unwrap();
        let (t, _) = tsr_sample::select::sample_candidates(&c, &us).unwrap();
        let _ = Vec::<i64>::try_from(&t).unwrap();
    });
    // The dense chain (transformers' algorithm: full sort for top-p), for comparison.
    let dense_ms = time(&mut || {
        let p = procs.apply(&logits, None).unwrap();
        let t = tsr_sample::select::sample_inverse_cdf(&p, &us).unwrap();
        let _ = Vec::<i64>::try_from(&t).unwrap();
    });
    let topp_ms = time(&mut || {
        let _ = tsr_sample::processors::top_p(&logits, 0.9).unwrap();
    });
    let total = step_ms + lm_ms + sample_ms;
    println!(
        "== profile: one decoding step, batch {rows}, {} cached positions ==",
        past + 1
    );
    println!("model step (forward_cached)   {step_ms:7.2} ms");
    if dtype().2.is_none() {
        println!("  of which linear layers      {linear_ms:7.2} ms (same matmul shapes alone)");
        println!(
            "  attention, norms, rope, etc {:7.2} ms (the rest)",
            step_ms - linear_ms
        );
    } else {
        // The weight-only formats multiply copies this split does not time.
        println!("  linear layers in f32 alone  {linear_ms:7.2} ms (the model's own weights)");
    }
    println!("lm_head                       {lm_ms:7.2} ms");
    println!("processors + sampling + copy  {sample_ms:7.2} ms (dense chain {dense_ms:.2} ms, of which top-p sort {topp_ms:.2} ms)");
    println!(
        "sum                           {total:7.2} ms/step = {:.0} tok/s upper bound",
        rows as f64 * 1e3 / total
    );
}
