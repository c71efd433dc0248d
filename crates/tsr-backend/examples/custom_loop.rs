//! A self-rewarding loop of your own, built from tsr's crates instead of `tsr iterate`.
//!
//! Two iterations on a fresh chunk of prompts each: `M_i` samples `K` answers per prompt, judges
//! them itself, a curation rule of this example's own picks the pairs, and DPO trains
//! `M_{i+1}` from `M_i`. The rule: from the second iteration on, TSR's anchored rejection (the
//! rejected answer may come from `M_0`'s pool, `tsr_curate::anchored_rejection`), and in every
//! iteration a pair is kept only when its chosen answer beats the rejected one by at least
//! `MIN_MARGIN` judge points (a stricter filter than the papers' "any margin").
//!
//! ```sh
//! cargo run -p tsr-backend --example custom_loop -- MODEL OUT_DIR [--hash-judge]
//! ```
//! MODEL is a built-in name, a Hugging Face folder or a .gguf file; `--hash-judge` replaces the
//! LLM judge by a hash of the answer (for models too small to judge, as in the test that runs
//! this example on a tiny model: `tests/custom_loop.rs`).

#![allow(clippy::print_stdout)]

use std::path::Path;

use anyhow::{Context, Result};
use tsr_judge::{GenRequest, JudgeItem, Prompt, SamplingParams};
use tsr_loop::{Backend, Config, ModelRef, TrainPair};

/// The example's own curation threshold, in judge points.
pub const MIN_MARGIN: f64 = 0.5;
const K: usize = 3;
const PROMPTS: [&str; 8] = [
    "Name a colour of the sky.",
    "Give one tip for sleeping well.",
    "What is two plus three?",
    "Describe a cat in five words.",
    "Name a planet near the sun.",
    "Suggest a name for a dog.",
    "What do bees make?",
    "Say something kind.",
];

/// What one iteration did.
#[derive(Debug)]
pub struct Iteration {
    pub pairs: usize,
    pub dropped: usize,
    pub dpo_steps: usize,
    pub reward_margin: Option<f64>,
    pub model: ModelRef,
}

/// One answer with its score.
struct Scored {
    text: String,
    ids: Vec<u32>,
    score: Option<f64>,
}

fn sample_and_judge(
    backend: &mut dyn Backend,
    model: &ModelRef,
    prompts: &[(String, String)],
    seed: u64,
) -> Result<Vec<Vec<Scored>>> {
    let requests: Vec<GenRequest> = prompts
        .iter()
        .map(|(id, p)| GenRequest {
            prompt: Prompt::user(p.clone()),
            n: K,
            seed: tsr_loop::derive_seed(seed, &["gen", id]),
        })
        .collect();
    let params = SamplingParams {
        temperature: 0.8,
        max_new_tokens: 24,
        ..SamplingParams::default()
    };
    let pools = backend
        .generate(model, &requests, &params)
        .map_err(anyhow::Error::from_boxed)?;
    let items: Vec<JudgeItem> = prompts
        .iter()
        .zip(&pools)
        .flat_map(|((id, p), pool)| {
            pool.iter().enumerate().map(move |(j, c)| JudgeItem {
                id: format!("{}/{id}/{j}", model.name),
                prompt: p.clone(),
                response: c.text.clone(),
                reference: None,
            })
        })
        .collect();
    let verdicts = backend
        .judge(model, &items, seed)
        .map_err(anyhow::Error::from_boxed)?;
    let mut scores = verdicts.into_iter().map(|v| v.score);
    Ok(pools
        .into_iter()
        .map(|pool| {
            pool.into_iter()
                .map(|c| Scored {
                    text: c.text,
                    ids: c.token_ids,
                    score: scores.next().flatten(),
                })
                .collect()
        })
        .collect())
}

/// Runs the two iterations from `model`, writing models under `out`.
pub fn run(
    backend: &mut dyn Backend,
    model: &str,
    out: &Path,
    seed: u64,
) -> Result<Vec<Iteration>> {
    let m0 = ModelRef::initial(model);
    let mut current = m0.clone();
    let mut report = Vec::new();
    for (it, chunk) in PROMPTS.chunks(PROMPTS.len() / 2).enumerate() {
        let prompts: Vec<(String, String)> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("it{it}-p{i}"), p.to_string()))
            .collect();
        let s = tsr_loop::derive_seed(seed, &["iteration", &it.to_string()]);
        let pools = sample_and_judge(backend, &current, &prompts, s)?;
        // M_0's pool for this chunk (in iteration 1, M_0 is the current model).
        let initial = if it == 0 {
            None
        } else {
            Some(sample_and_judge(backend, &m0, &prompts, s)?)
        };
        let mut pairs = Vec::new();
        let mut dropped = 0;
        for (i, pool) in pools.iter().enumerate() {
            let cur: Vec<Option<f64>> = pool.iter().map(|a| a.score).collect();
            let decision = match &initial {
                Some(p0) => {
                    let ini: Vec<Option<f64>> = p0[i].iter().map(|a| a.score).collect();
                    tsr_curate::anchored_rejection(&cur, &ini)
                }
                None => tsr_curate::self_rewarding(&cur),
            };
            let (Some(c), Some(r)) = (&decision.chosen, &decision.rejected) else {
                dropped += 1;
                continue;
            };
            // This example's own rule on top of the paper's.
            if !decision.is_kept() || c.score - r.score < MIN_MARGIN {
                dropped += 1;
                continue;
            }
            let pick = |p: &tsr_curate::Pick| -> &Scored {
                match p.pool {
                    tsr_curate::Pool::Initial => {
                        &initial.as_ref().expect("initial pool")[i][p.index]
                    }
                    _ => &pool[p.index],
                }
            };
            let (chosen, rejected) = (pick(c), pick(r));
            pairs.push(TrainPair {
                prompt_id: prompts[i].0.clone(),
                prompt: prompts[i].1.clone(),
                chosen: chosen.text.clone(),
                rejected: rejected.text.clone(),
                chosen_token_ids: chosen.ids.clone(),
                rejected_token_ids: rejected.ids.clone(),
            });
        }
        let next = ModelRef::checkpoint(out, &format!("model-{}", it + 1));
        let train = if pairs.is_empty() {
            None
        } else {
            let dir = Path::new(&next.location);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(
                backend
                    .train_dpo(&current, &pairs, dir, s)
                    .map_err(anyhow::Error::from_boxed)?,
            )
        };
        println!(
            "iteration {}: {} pairs kept, {dropped} dropped, {} DPO steps, reward margin {:?}",
            it + 1,
            pairs.len(),
            train.as_ref().map_or(0, |t| t.steps),
            train.as_ref().and_then(|t| t.reward_margin)
        );
        if train.is_some() {
            current = next;
        }
        report.push(Iteration {
            pairs: pairs.len(),
            dropped,
            dpo_steps: train.as_ref().map_or(0, |t| t.steps),
            reward_margin: train.as_ref().and_then(|t| t.reward_margin),
            model: current.clone(),
        });
    }
    Ok(report)
}

/// The libtorch backend with small DPO settings for this example.
pub fn backend(hash_judge: bool) -> Result<Box<dyn Backend>> {
    let cfg: Config = Config::from_toml_str(
        "[judge]\nsamples = 1\nmax_new_tokens = 64\n\
         [dpo]\nlearning_rate = 1e-3\nlr_schedule = \"constant\"\nbatch_size = 2\ngradient_accumulation_steps = 1\nepochs = 2\n\
         max_length = 128\n",
        Path::new("custom_loop"),
    )?;
    let dir = std::env::temp_dir();
    tsr_backend::backend_for(&cfg, tsr_model::Device::Cpu, hash_judge, &dir)
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(model), Some(out)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: custom_loop MODEL OUT_DIR [--hash-judge]");
    };
    let hash = args.iter().any(|a| a == "--hash-judge");
    let mut b = backend(hash)?;
    run(&mut *b, model, Path::new(out), 0)?;
    Ok(())
}
