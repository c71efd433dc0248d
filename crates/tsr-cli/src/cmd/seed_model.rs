//! `tsr seed-model`: make a judge-tuned seed model `M_0 = SFT(M_b, IFT ∪ EFT)` from a base model
//! and tsr's built-in instructions, deterministic from a seed; the recipe is
//! `tsr_backend::seed_model`.
//!
//! The output folder defaults to `tsr_home()/models/smollm2-135m-judge`, which the model name
//! `smollm2-135m-judge` then loads. A folder whose `seed-model.json` holds the same recipe is
//! left as it is (rerun with `--force` to rebuild); the work files sit beside it in
//! `<out>.work/`, so an interrupted build resumes its SFT from the last checkpoint.

#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::Result;
use tsr_backend::seed_model::{
    build_seed_model, SeedModelEvent, SeedModelOptions, SeedModelOutcome, SeedModelRecipe,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Base model: built-in name, Hugging Face directory or .gguf file.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub base: String,
    /// Output folder [default: the tsr home's models/smollm2-135m-judge].
    #[arg(long)]
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
    #[arg(long, default_value_t = 5e-5)]
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
    pub device: String,
    /// Rebuild even if the output folder holds a model of the same recipe.
    #[arg(long)]
    pub force: bool,
}

impl Args {
    /// The settings that change the model (what `seed-model.json` records).
    fn recipe(&self) -> SeedModelRecipe {
        SeedModelRecipe {
            base: self.base.clone(),
            seed: self.seed,
            instructions: self.instructions,
            holdout: self.holdout,
            max_new_tokens: self.max_new_tokens,
            ift_max_new_tokens: self.ift_max_new_tokens,
            template: self.template.clone(),
            learning_rate: self.learning_rate,
            epochs: self.epochs,
            batch_size: self.batch_size,
            train_last_layers: self.train_last_layers,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let options = SeedModelOptions {
        recipe: args.recipe(),
        out: args.out.clone().unwrap_or_else(tsr_model::seed_model_dir),
        device: tsr_model::parse_device(&args.device)?,
        force: args.force,
    };
    let outcome = build_seed_model(&options, |event| match event {
        SeedModelEvent::StaleWork { work } => eprintln!(
            "tsr seed-model: {} holds work of another recipe or other arguments: removing it",
            work.display()
        ),
        SeedModelEvent::SamplingAnswers { count, base } => {
            eprintln!("tsr seed-model: sampling {count} answers from {base}")
        }
        SeedModelEvent::JudgeData {
            eft_examples,
            train_instructions,
            heldout_pairs,
        } => eprintln!(
            "tsr seed-model: {eft_examples} EFT examples from {train_instructions} training \
             instructions; {heldout_pairs} held-out pairs"
        ),
        SeedModelEvent::SamplingIft {
            count,
            base,
            max_new_tokens,
        } => eprintln!(
            "tsr seed-model: sampling {count} instruction-following answers from {base} (up to \
             {max_new_tokens} tokens)"
        ),
        SeedModelEvent::IftExamples {
            kept,
            max_new_tokens,
            candidates,
        } => eprintln!(
            "tsr seed-model: {kept} IFT examples (answers that ended within {max_new_tokens} \
             tokens, of {candidates})"
        ),
        SeedModelEvent::VerdictLike {
            count,
            heldout_instructions,
        } => eprintln!(
            "tsr seed-model: {count} of {heldout_instructions} greedy answers to held-out \
             instructions read like a verdict (`Score: ...`)"
        ),
        _ => {}
    })?;
    match outcome {
        SeedModelOutcome::UpToDate { out } => eprintln!(
            "tsr seed-model: {} already holds this seed model (use --force to rebuild)",
            out.display()
        ),
        SeedModelOutcome::Built(report) => eprintln!(
            "tsr seed-model: held-out judge accuracy (direct mode) {:.3} -> {:.3}; model at {}",
            report.before.overall.accuracy.unwrap_or(f64::NAN),
            report.after.overall.accuracy.unwrap_or(f64::NAN),
            report.out.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::Args,
    }

    /// The flags' defaults make the library's default recipe, whose manifest (pinned by the
    /// library's test) must stay the same, or every user's cached seed model would be rebuilt.
    #[test]
    fn the_default_arguments_make_the_default_manifest() {
        let args = Cli::parse_from(["tsr"]).args;
        assert_eq!(
            args.recipe(),
            tsr_backend::seed_model::SeedModelRecipe::default()
        );
    }
}
