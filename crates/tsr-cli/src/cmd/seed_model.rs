//! `tsr seed-model`: make a judge-tuned seed model `M_0 = SFT(M_b, IFT ∪ EFT)` from a base model
//! and tsr's built-in instructions (`tsr_loop::seed_data`), deterministic from a seed.
//!
//! 1. `n` built-in instructions; a seeded share of their *topics* is held out.
//! 2. One sampled answer per instruction from the base model (`answers.jsonl`).
//! 3. EFT examples on the training topics (`tsr_judge::eft`): an instruction's own answer
//!    scores 4, the first sixth of it 2, the answer to an instruction of another topic 0
//!    (`eft-train.jsonl`, the judge prompt as user turn, `Score: k` as assistant turn).
//! 4. Held-out judge pairs on the held-out topics (`pairs-heldout.jsonl`): own answer vs another
//!    topic's answer (relevance), own answer vs its first sixth (truncation).
//! 5. IFT examples: a second, longer sampled answer of the base model to each training-topic
//!    instruction, kept when it ended by itself (`ift-train.jsonl`). Without them the model learns
//!    the judge's `Score: k` as its answer to everything: SFT on EFT alone (recipe 1) made the
//!    seed model reply `Score: 4` to 9 of tsr's 24 held-out instructions.
//! 6. SFT on IFT ∪ EFT (`tsr_dpo::train_sft`, loss on the assistant turn only).
//! 7. Judge accuracy of the base and of the tuned model on the held-out pairs, in `direct` mode,
//!    and how many of the tuned model's greedy answers to the held-out instructions read like a
//!    verdict (`Score: ...`) (`report.json`); the model saved as a Hugging Face folder with
//!    `seed-model.json`.
//!
//! The output folder defaults to `tsr_home()/models/smollm2-135m-judge`, which the model name
//! `smollm2-135m-judge` then loads. A folder whose `seed-model.json` holds the same recipe is
//! left as it is (rerun with `--force` to rebuild); the work files sit beside it in
//! `<out>.work/`, so an interrupted build resumes its SFT from the last checkpoint.

#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tsr_dpo::data::Message;
use tsr_dpo::{SftConfig, SftExample};
use tsr_judge::eft::{build_eft, EftInput, EftOptions};
use tsr_judge::judge_eval::evaluate_judge;
use tsr_judge::pairs::first_sixth;
use tsr_judge::{
    GenRequest, Generator, JudgeConfig, JudgeEvalReport, JudgeMode, JudgePair, JudgeTemplate,
    LlmJudge, PairKind, Prompt, SamplingParams,
};
use tsr_loop::seed_data::{seed_instructions, seed_topic};
use tsr_model::{load, parse_device, LoadOptions, Loaded};
use tsr_sample::Sampler;

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    /// Base model: built-in name, Hugging Face directory or .gguf file.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub base: String,
    /// Output folder [default: the tsr home's models/smollm2-135m-judge].
    #[arg(long)]
    #[serde(skip)]
    pub out: Option<PathBuf>,
    /// Seed of every stochastic step (instruction choice, split, sampling, SFT order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Built-in instructions to use (at most 360).
    #[arg(long, default_value_t = 240)]
    pub instructions: usize,
    /// Share of the topics held out for measuring judge accuracy.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// Answer length (new tokens) sampled from the base model for the judge examples.
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// Answer length limit of the instruction-following (IFT) examples: answers of the base model
    /// that end within it are trained on beside the judge examples (0: no IFT examples, the
    /// judge examples alone, which teaches the model to answer every instruction with a score).
    #[arg(long, default_value_t = 192)]
    pub ift_max_new_tokens: usize,
    /// Judge prompt the seed model learns: `short` or `additive`.
    #[arg(long, default_value = "short")]
    pub template: String,
    /// SFT peak learning rate (linear decay to 0).
    #[arg(long, default_value_t = 1e-4)]
    pub learning_rate: f64,
    /// SFT passes over the EFT examples.
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// SFT examples per optimizer step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Train only the last N decoder layers (faster; none = all).
    #[arg(long)]
    pub train_last_layers: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    #[serde(skip)]
    pub device: String,
    /// Rebuild even if the output folder holds a model of the same recipe.
    #[arg(long)]
    #[serde(skip)]
    pub force: bool,
}

/// Bumped whenever the recipe changes what is built from the same arguments (2: IFT examples).
const RECIPE: u32 = 2;

#[derive(Serialize)]
struct Manifest {
    recipe: u32,
    args: Args,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.holdout) && args.holdout > 0.0,
        "--holdout must be in (0, 1)"
    );
    anyhow::ensure!(
        args.instructions >= 10,
        "--instructions must be at least 10"
    );
    let template = JudgeTemplate::builtin(&args.template)
        .with_context(|| format!("--template {}: use short or additive", args.template))?;
    let out = args.out.clone().unwrap_or_else(tsr_model::seed_model_dir);
    let manifest = Manifest {
        recipe: RECIPE,
        args: args.clone(),
    };
    let manifest_path = out.join("seed-model.json");
    if !args.force {
        // Compared as JSON: the fields that do not change the model are not serialized.
        let wanted = serde_json::to_value(&manifest)?;
        if let Ok(text) = std::fs::read_to_string(&manifest_path) {
            if serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .as_ref()
                == Some(&wanted)
            {
                eprintln!(
                    "tsr seed-model: {} already holds this seed model (use --force to rebuild)",
                    out.display()
                );
                return Ok(());
            }
        }
    }
    let work = out.with_extension("work");
    // The work files (answers, SFT checkpoints) resume an interrupted build of the same recipe
    // only: another recipe or other arguments start from scratch.
    let work_manifest = work.join("seed-model.json");
    let wanted = serde_json::to_string_pretty(&manifest)?;
    if work.exists() && std::fs::read_to_string(&work_manifest).ok().as_deref() != Some(&wanted) {
        eprintln!(
            "tsr seed-model: {} holds work of another recipe or other arguments: removing it",
            work.display()
        );
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    std::fs::write(&work_manifest, &wanted)
        .with_context(|| format!("writing {}", work_manifest.display()))?;
    let device = parse_device(&args.device)?;
    let opts = LoadOptions {
        device,
        ..Default::default()
    };

    // 1-2. Instructions, topic split, one answer each.
    let instructions = seed_instructions(args.instructions, args.seed);
    let topics: Vec<String> = instructions
        .iter()
        .map(|p| format!("{:03}", seed_topic(&p.id).unwrap_or(0)))
        .collect();
    let heldout_topics =
        tsr_judge::eft::heldout_prompts(topics.iter().map(String::as_str), args.holdout, args.seed);
    let base = load(&args.base, &opts).with_context(|| format!("loading {}", args.base))?;
    let answers = answers(&base, &instructions, &args, &work.join("answers.jsonl"))?;

    // 3-4. EFT examples (training topics) and judge pairs (held-out topics).
    let mut inputs = Vec::new();
    let mut pairs = Vec::new();
    let n = instructions.len();
    for (i, p) in instructions.iter().enumerate() {
        // The next instruction (cyclically) of another topic gives the unrelated answer.
        let other = (1..n)
            .map(|k| (i + k) % n)
            .find(|&j| topics[j] != topics[i])
            .context("the instructions need at least two topics")?;
        let own = answers[i].trim();
        let short = first_sixth(own).trim();
        if heldout_topics.contains(topics[i].as_str()) {
            for (kind, worse) in [
                (PairKind::Relevance, answers[other].trim()),
                (PairKind::Truncation, short),
            ] {
                pairs.push(JudgePair {
                    id: format!("{}-{}", p.id, kind.as_str()),
                    kind,
                    prompt: p.prompt.clone(),
                    better: own.to_string(),
                    worse: worse.to_string(),
                });
            }
            continue;
        }
        for (suffix, response, score) in [
            ("own", own, 4u8),
            ("sixth", short, 2),
            ("other", answers[other].trim(), 0),
        ] {
            inputs.push(EftInput {
                id: format!("{}-{suffix}", p.id),
                prompt: p.prompt.clone(),
                response: response.to_string(),
                score,
                justification: None,
            });
        }
    }
    let split = build_eft(
        &inputs,
        &template,
        &EftOptions {
            holdout: 0.0,
            seed: args.seed,
        },
        None,
        "built-in seed instructions",
    )?;
    write_jsonl(&work.join("eft-train.jsonl"), &split.train)?;
    write_jsonl(&work.join("pairs-heldout.jsonl"), &pairs)?;
    eprintln!(
        "tsr seed-model: {} EFT examples from {} training instructions; {} held-out pairs",
        split.train.len(),
        split.stats.train_prompts,
        pairs.len()
    );

    // 5. IFT examples: longer answers of the base model to the training-topic instructions.
    let train_instructions: Vec<tsr_loop::PromptRecord> = instructions
        .iter()
        .zip(&topics)
        .filter(|(_, t)| !heldout_topics.contains(t.as_str()))
        .map(|(p, _)| p.clone())
        .collect();
    let ift = if args.ift_max_new_tokens > 0 {
        ift_answers(
            &base,
            &train_instructions,
            &args,
            &work.join("ift-train.jsonl"),
        )?
    } else {
        Vec::new()
    };
    eprintln!(
        "tsr seed-model: {} IFT examples (answers that ended within {} tokens, of {})",
        ift.len(),
        args.ift_max_new_tokens,
        train_instructions.len()
    );

    // 7a. The base model as a judge.
    let before = judge_accuracy(&base, &template, &pairs)?;
    drop(base);

    // 6. SFT on IFT ∪ EFT.
    let mut model = load(&args.base, &opts)?;
    let ift_examples = ift.iter().map(|a| {
        SftExample::messages(vec![
            Message {
                role: "user".into(),
                content: a.prompt.clone(),
            },
            Message {
                role: "assistant".into(),
                content: a.text.clone(),
            },
        ])
    });
    let examples: Vec<SftExample> = split
        .train
        .iter()
        .map(|e| {
            SftExample::messages(
                e.messages
                    .iter()
                    .map(|m| Message {
                        role: m.role.clone(),
                        content: m.content.clone(),
                    })
                    .collect(),
            )
        })
        .chain(ift_examples)
        .collect();
    let cfg = SftConfig {
        learning_rate: args.learning_rate,
        epochs: args.epochs,
        batch_size: args.batch_size,
        max_length: 512,
        seed: args.seed,
        checkpoint_every: 10,
        train_last_layers: args.train_last_layers,
        ..SftConfig::default()
    }
    .validate()?;
    let report = tsr_dpo::train_sft(
        &mut model.model,
        &model.tokenizer,
        &examples,
        &cfg,
        &work.join("sft"),
        |m, total| {
            tracing::info!(
                step = m.step,
                total,
                loss = m.loss,
                accuracy = m.mean_token_accuracy,
                "sft step"
            );
        },
    )?;

    // 7b. The tuned model as a judge and as an assistant, then save.
    let after = judge_accuracy(&model, &template, &pairs)?;
    let heldout_instructions: Vec<&tsr_loop::PromptRecord> = instructions
        .iter()
        .zip(&topics)
        .filter(|(_, t)| heldout_topics.contains(t.as_str()))
        .map(|(p, _)| p)
        .collect();
    let verdict_like = verdict_like_answers(&model, &heldout_instructions)?;
    eprintln!(
        "tsr seed-model: {verdict_like} of {} greedy answers to held-out instructions read like \
         a verdict (`Score: ...`)",
        heldout_instructions.len()
    );
    let summary = json!({
        "base": args.base,
        "template": template.origin(),
        "eft_examples": split.train.len(),
        "ift_examples": ift.len(),
        "ift_candidates": train_instructions.len(),
        "verdict_like_answers": {"heldout_instructions": heldout_instructions.len(),
                                 "count": verdict_like},
        "heldout_pairs": pairs.len(),
        "sft": {"steps": report.summary.steps, "last": report.summary.last},
        "judge_accuracy_direct": {"base": accuracy_json(&before), "tuned": accuracy_json(&after)},
    });
    std::fs::write(
        work.join("report.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    tsr_dpo::save_model(&model.model, &model.tokenizer, &model.generation, &out)?;
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)?)?;
    std::fs::write(
        out.join("seed-model-report.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    eprintln!(
        "tsr seed-model: held-out judge accuracy (direct mode) {:.3} -> {:.3}; model at {}",
        before.overall.accuracy.unwrap_or(f64::NAN),
        after.overall.accuracy.unwrap_or(f64::NAN),
        out.display()
    );
    Ok(())
}

/// One answer per instruction (T = 0.7, top_p = 0.9), cached in `path`.
fn answers(
    base: &Loaded,
    instructions: &[tsr_loop::PromptRecord],
    args: &Args,
    path: &Path,
) -> Result<Vec<String>> {
    #[derive(Serialize, Deserialize)]
    struct Answer {
        id: String,
        text: String,
    }
    if let Ok(text) = std::fs::read_to_string(path) {
        let cached: Vec<Answer> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if cached.len() == instructions.len()
            && cached.iter().zip(instructions).all(|(a, p)| a.id == p.id)
        {
            return Ok(cached.into_iter().map(|a| a.text).collect());
        }
    }
    eprintln!(
        "tsr seed-model: sampling {} answers from {}",
        instructions.len(),
        args.base
    );
    let out = sample_one_each(
        base,
        instructions,
        args.seed,
        "seed-model",
        args.max_new_tokens,
    )
    .context("sampling answers")?;
    let answers: Vec<Answer> = instructions
        .iter()
        .zip(out)
        .map(|(p, c)| Answer {
            id: p.id.clone(),
            text: c.text,
        })
        .collect();
    write_jsonl(path, &answers)?;
    Ok(answers.into_iter().map(|a| a.text).collect())
}

/// One sampled answer per instruction from the base model (T = 0.7, top_p = 0.9), each seeded
/// from `seed`, `tag` and the instruction's id.
fn sample_one_each(
    base: &Loaded,
    instructions: &[tsr_loop::PromptRecord],
    seed: u64,
    tag: &str,
    max_new_tokens: usize,
) -> Result<Vec<tsr_judge::Completion>> {
    let requests: Vec<GenRequest> = instructions
        .iter()
        .map(|p| GenRequest {
            prompt: Prompt::user(p.prompt.clone()),
            n: 1,
            seed: tsr_loop::derive_seed(seed, &[tag, &p.id]),
        })
        .collect();
    let params = SamplingParams {
        max_new_tokens,
        ..SamplingParams::default()
    };
    let mut sampler =
        Sampler::new(&base.model, &base.tokenizer).with_generation_config(&base.generation);
    let out = sampler
        .generate(&requests, &params)
        .map_err(anyhow::Error::from_boxed)?;
    Ok(out.into_iter().map(|mut c| c.remove(0)).collect())
}

/// An IFT example: an instruction and an answer of the base model that ended by itself.
#[derive(Serialize, Deserialize)]
struct IftAnswer {
    id: String,
    prompt: String,
    text: String,
}

/// One sampled answer per instruction (T = 0.7, top_p = 0.9, `--ift-max-new-tokens`), kept when
/// it ended with EOS (a cut answer would teach the model to stop mid-sentence); cached in `path`.
fn ift_answers(
    base: &Loaded,
    instructions: &[tsr_loop::PromptRecord],
    args: &Args,
    path: &Path,
) -> Result<Vec<IftAnswer>> {
    let done = path.with_extension("jsonl.done");
    if done.exists() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return text
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("reading {}", path.display())))
            .collect();
    }
    eprintln!(
        "tsr seed-model: sampling {} instruction-following answers from {} (up to {} tokens)",
        instructions.len(),
        args.base,
        args.ift_max_new_tokens
    );
    let out = sample_one_each(
        base,
        instructions,
        args.seed,
        "seed-model-ift",
        args.ift_max_new_tokens,
    )
    .context("sampling IFT answers")?;
    let answers: Vec<IftAnswer> = instructions
        .iter()
        .zip(out)
        .filter_map(|(p, c)| {
            let text = c.text.trim();
            (c.finish_reason == tsr_judge::FinishReason::Eos && !text.is_empty()).then(|| {
                IftAnswer {
                    id: p.id.clone(),
                    prompt: p.prompt.clone(),
                    text: text.to_string(),
                }
            })
        })
        .collect();
    write_jsonl(path, &answers)?;
    std::fs::write(&done, "").with_context(|| format!("writing {}", done.display()))?;
    Ok(answers)
}

/// How many greedy answers (48 new tokens) of `model` to `instructions` start like a judge's
/// verdict (`Score:`), i.e. the model answers an instruction as if asked to grade it.
fn verdict_like_answers(model: &Loaded, instructions: &[&tsr_loop::PromptRecord]) -> Result<usize> {
    let requests: Vec<GenRequest> = instructions
        .iter()
        .map(|p| GenRequest {
            prompt: Prompt::user(p.prompt.clone()),
            n: 1,
            seed: 0,
        })
        .collect();
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 48,
        ..SamplingParams::default()
    };
    let mut sampler =
        Sampler::new(&model.model, &model.tokenizer).with_generation_config(&model.generation);
    let out = sampler
        .generate(&requests, &params)
        .map_err(|e| anyhow::Error::from_boxed(e).context("sampling held-out answers"))?;
    Ok(out
        .iter()
        .filter(|c| looks_like_verdict(&c[0].text))
        .count())
}

/// An answer that starts with a `Score:` line (any case, leading whitespace ignored).
fn looks_like_verdict(text: &str) -> bool {
    text.trim_start().to_ascii_lowercase().starts_with("score:")
}

/// Direct-mode judge accuracy of `model` on `pairs`.
fn judge_accuracy(
    model: &Loaded,
    template: &JudgeTemplate,
    pairs: &[JudgePair],
) -> Result<JudgeEvalReport> {
    let settings = JudgeConfig {
        mode: JudgeMode::Direct,
        min_digit_mass: 0.0,
        ..JudgeConfig::default()
    }
    .validate()?
    .with_template(template.clone());
    let sampler =
        Sampler::new(&model.model, &model.tokenizer).with_generation_config(&model.generation);
    let mut judge = LlmJudge::new(sampler, settings);
    Ok(evaluate_judge(&mut judge, pairs)?)
}

fn accuracy_json(r: &JudgeEvalReport) -> serde_json::Value {
    json!({
        "overall": r.overall,
        "by_kind": r.by_kind,
        "digit_mass_mean": r.judge_stats.digit_mass_mean(),
        "digit_mass_min": r.judge_stats.digit_mass_min,
    })
}

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::looks_like_verdict;

    #[test]
    fn verdict_like_answers_are_told_from_answers() {
        assert!(looks_like_verdict("Score: 4"));
        assert!(looks_like_verdict("  score: 2\nGood."));
        assert!(!looks_like_verdict("The score: 4 goals were scored."));
        assert!(!looks_like_verdict("Tides come from the moon."));
    }
}
