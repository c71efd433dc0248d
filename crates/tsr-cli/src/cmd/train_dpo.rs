//! `tsr train-dpo`: DPO training on a JSONL file of preference pairs.
//!
//! Writes into `--out` (TRL's `output_dir` layout): the trained model itself as a Hugging Face
//! folder, loadable from `--out` (`config.json`,
//! `model.safetensors`, tokenizer files, `generation_config.json`), `metrics.jsonl` (one line per
//! optimizer step, TRL's metric names), `dpo_config.json` (the resolved configuration),
//! `ref_cache/` (reference log-probs) and, with `checkpoint_every > 0`, `checkpoint/`; a run
//! started again with the same arguments resumes from that checkpoint. A folder that already holds
//! a trained model is refused unless `--overwrite` is given (see
//! `tsr_backend::train::prepare_training_output`); bad input is reported before the folder changes.
//!
//! `--config` is a TOML file with the fields of `tsr_dpo::DpoConfig`, either at top level or in
//! a `[dpo]` table.

#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::Result;
use tsr_backend::train::{self, TrainEvent, TrainOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Built-in model name (smollm2-135m-instruct), Hugging Face directory or .gguf file.
    #[arg(long)]
    model: String,
    /// JSON lines of {prompt, chosen, rejected} (strings or chat messages).
    #[arg(long)]
    pairs: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// TOML file with DPO settings (see `tsr_dpo::DpoConfig`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Override `max_steps` of the configuration.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Override `seed` of the configuration.
    #[arg(long)]
    seed: Option<u64>,
    /// Train again into an --out folder that already holds a trained model (or an unfinished run
    /// of other settings), replacing it.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: Args) -> Result<()> {
    let options = TrainOptions {
        model: args.model.clone(),
        data: args.pairs.clone(),
        out: args.out.clone(),
        config: args.config,
        device: tsr_model::parse_device(&args.device)?,
        max_steps: args.max_steps,
        seed: args.seed,
        overwrite: args.overwrite,
    };
    let report = train::dpo(&options, |event| match event {
        TrainEvent::Started { items } => eprintln!(
            "train-dpo: {items} pairs from {}, model {}",
            args.pairs.display(),
            args.model
        ),
        TrainEvent::Step { metrics: m, total } => {
            eprintln!(
            "step {}/{} epoch {:.2} loss {:.4} margin {:+.4} acc {:.2} grad_norm {:.3} lr {:.2e} {:.0} tok/s",
            m.step, total, m.epoch, m.loss, m.rewards_margins, m.rewards_accuracies, m.grad_norm, m.learning_rate, m.tokens_per_s
        );
        }
        TrainEvent::Trained {
            dropped,
            resumed_from,
        } => {
            if dropped > 0 {
                eprintln!("train-dpo: {dropped} pairs dropped (prompt longer than max_length)");
            }
            if let Some(s) = resumed_from {
                eprintln!("train-dpo: resumed from step {s}");
            }
        }
        _ => {}
    })?;
    eprintln!(
        "train-dpo: {} steps, mean {:.0} tok/s; the model, metrics.jsonl and the settings are in {}",
        report.summary.steps,
        report.summary.mean_tokens_per_s,
        args.out.display()
    );
    Ok(())
}
