//! The seed-model recipe (`tsr seed-model`): make a judge-tuned seed model
//! `M_0 = SFT(M_b, IFT ∪ EFT)` from a base model and tsr's built-in instructions
//! (`tsr_loop::seed_data`), deterministic from a seed.
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
//! [`build_seed_model`] runs it. A folder whose `seed-model.json` holds the same recipe is left as
//! it is (unless `force`); the work files sit beside it in `<out>.work/`, so an interrupted build
//! resumes its SFT from the last checkpoint.

mod steps;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tsr_dpo::data::Message;
use tsr_dpo::{SftConfig, SftExample};
use tsr_judge::eft::{build_eft, EftInput, EftOptions};
use tsr_judge::pairs::first_sixth;
use tsr_judge::{JudgeEvalReport, JudgePair, JudgeTemplate, PairKind};
use tsr_loop::seed_data::{seed_instructions, seed_topic};
use tsr_model::{load, Device, LoadOptions};

use steps::{
    accuracy_json, answers, ift_answers, judge_accuracy, verdict_like_answers, write_jsonl,
};

/// What the seed model is built from: every setting that changes the model. Serialized (in this
/// field order) into the manifest `seed-model.json`, which decides whether an existing model is
/// reused, so a field added here must be skipped when it does not change the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedModelRecipe {
    /// Base model: built-in name, Hugging Face directory or .gguf file.
    pub base: String,
    /// Seed of every stochastic step (instruction choice, split, sampling, SFT order).
    pub seed: u64,
    /// Built-in instructions to use (at most 360; at least 10).
    pub instructions: usize,
    /// Share of the topics held out for measuring judge accuracy, in (0, 1).
    pub holdout: f64,
    /// Answer length (new tokens) sampled from the base model for the judge examples.
    pub max_new_tokens: usize,
    /// Answer length limit of the instruction-following (IFT) examples (0: none).
    pub ift_max_new_tokens: usize,
    /// Judge prompt the seed model learns: `short` or `additive`.
    pub template: String,
    /// SFT peak learning rate (linear decay to 0).
    pub learning_rate: f64,
    /// SFT passes over the examples.
    pub epochs: u64,
    /// SFT examples per optimizer step.
    pub batch_size: usize,
    /// Train only the last N decoder layers (none = all).
    pub train_last_layers: Option<usize>,
}

/// The defaults of `tsr seed-model` (the recipe of the default run's seed model).
impl Default for SeedModelRecipe {
    fn default() -> Self {
        SeedModelRecipe {
            base: "smollm2-135m-instruct".into(),
            seed: 0,
            instructions: 240,
            holdout: 0.2,
            max_new_tokens: 48,
            ift_max_new_tokens: 192,
            template: "short".into(),
            learning_rate: 5e-5,
            epochs: 1,
            batch_size: 8,
            train_last_layers: None,
        }
    }
}

/// Where and how [`build_seed_model`] builds.
#[derive(Debug, Clone)]
pub struct SeedModelOptions {
    pub recipe: SeedModelRecipe,
    /// The output folder (the model); the work files go to `<out>.work/`.
    pub out: PathBuf,
    pub device: Device,
    /// Rebuild even if `out` holds a model of the same recipe.
    pub force: bool,
}

/// Progress of [`build_seed_model`], in the order it happens.
#[derive(Debug)]
#[non_exhaustive]
pub enum SeedModelEvent<'a> {
    /// The work folder holds work of another recipe or other arguments and is removed.
    StaleWork { work: &'a Path },
    /// Sampling one answer per instruction from the base model (not cached).
    SamplingAnswers { count: usize, base: &'a str },
    /// The EFT examples (from `train_instructions` instructions) and held-out pairs are written.
    JudgeData {
        eft_examples: usize,
        train_instructions: usize,
        heldout_pairs: usize,
    },
    /// Sampling the instruction-following answers (not cached).
    SamplingIft {
        count: usize,
        base: &'a str,
        max_new_tokens: usize,
    },
    /// `kept` of `candidates` IFT answers ended within `max_new_tokens`.
    IftExamples {
        kept: usize,
        max_new_tokens: usize,
        candidates: usize,
    },
    /// `count` of the tuned model's greedy answers to `heldout_instructions` read like a verdict.
    VerdictLike {
        count: usize,
        heldout_instructions: usize,
    },
}

/// What [`build_seed_model`] did.
#[derive(Debug)]
pub enum SeedModelOutcome {
    /// `out` already held a model of this recipe and was left as it is.
    UpToDate { out: PathBuf },
    /// The model was built into `out`.
    Built(Box<SeedModelReport>),
}

/// A finished build.
#[derive(Debug)]
pub struct SeedModelReport {
    pub out: PathBuf,
    /// Direct-mode judge accuracy of the base model on the held-out pairs.
    pub before: JudgeEvalReport,
    /// The same of the tuned model.
    pub after: JudgeEvalReport,
    /// What `seed-model-report.json` holds.
    pub summary: serde_json::Value,
}

/// Bumped whenever the recipe changes what is built from the same arguments (2: IFT examples).
const RECIPE: u32 = 2;

#[derive(Serialize)]
struct Manifest<'a> {
    recipe: u32,
    args: &'a SeedModelRecipe,
}

/// The manifest `seed-model.json` of a recipe, as written (pretty JSON).
pub fn manifest_json(recipe: &SeedModelRecipe) -> Result<String> {
    Ok(serde_json::to_string_pretty(&Manifest {
        recipe: RECIPE,
        args: recipe,
    })?)
}

/// Builds the seed model of `options` (see the module docs); `on_event` sees its progress.
pub fn build_seed_model(
    options: &SeedModelOptions,
    mut on_event: impl FnMut(SeedModelEvent<'_>),
) -> Result<SeedModelOutcome> {
    let args = &options.recipe;
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
    let out = options.out.clone();
    let manifest = Manifest {
        recipe: RECIPE,
        args,
    };
    let manifest_path = out.join("seed-model.json");
    if !options.force {
        // Compared as JSON: the fields that do not change the model are not serialized.
        let wanted = serde_json::to_value(&manifest)?;
        if let Ok(text) = std::fs::read_to_string(&manifest_path) {
            if serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .as_ref()
                == Some(&wanted)
            {
                return Ok(SeedModelOutcome::UpToDate { out });
            }
        }
    }
    let work = out.with_extension("work");
    // The work files (answers, SFT checkpoints) resume an interrupted build of the same recipe
    // only: another recipe or other arguments start from scratch.
    let work_manifest = work.join("seed-model.json");
    let wanted = serde_json::to_string_pretty(&manifest)?;
    if work.exists() && std::fs::read_to_string(&work_manifest).ok().as_deref() != Some(&wanted) {
        on_event(SeedModelEvent::StaleWork { work: &work });
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    crate::write_atomic(&work_manifest, &wanted)?;
    let opts = LoadOptions {
        device: options.device,
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
    let answers = answers(
        &base,
        &instructions,
        args,
        &work.join("answers.jsonl"),
        &mut on_event,
    )?;

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
    on_event(SeedModelEvent::JudgeData {
        eft_examples: split.train.len(),
        train_instructions: split.stats.train_prompts,
        heldout_pairs: pairs.len(),
    });

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
            args,
            &work.join("ift-train.jsonl"),
            &mut on_event,
        )?
    } else {
        Vec::new()
    };
    on_event(SeedModelEvent::IftExamples {
        kept: ift.len(),
        max_new_tokens: args.ift_max_new_tokens,
        candidates: train_instructions.len(),
    });

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
    on_event(SeedModelEvent::VerdictLike {
        count: verdict_like,
        heldout_instructions: heldout_instructions.len(),
    });
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
    crate::write_atomic(
        &work.join("report.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    tsr_dpo::save_model(&model.model, &model.tokenizer, &model.generation, &out)?;
    crate::write_atomic(&manifest_path, serde_json::to_string_pretty(&manifest)?)?;
    crate::write_atomic(
        &out.join("seed-model-report.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(SeedModelOutcome::Built(Box::new(SeedModelReport {
        out,
        before,
        after,
        summary,
    })))
}

#[cfg(test)]
mod tests {
    use super::{manifest_json, SeedModelRecipe};

    /// The manifest decides whether a cached seed model is reused: its text must not change for
    /// the same recipe (this is the manifest of `tsr seed-model` with its defaults).
    #[test]
    fn the_manifest_of_a_recipe_is_stable() {
        let recipe = SeedModelRecipe::default();
        let want = r#"{
  "recipe": 2,
  "args": {
    "base": "smollm2-135m-instruct",
    "seed": 0,
    "instructions": 240,
    "holdout": 0.2,
    "max_new_tokens": 48,
    "ift_max_new_tokens": 192,
    "template": "short",
    "learning_rate": 0.00005,
    "epochs": 1,
    "batch_size": 8,
    "train_last_layers": null
  }
}"#;
        assert_eq!(manifest_json(&recipe).unwrap(), want);
    }
}
