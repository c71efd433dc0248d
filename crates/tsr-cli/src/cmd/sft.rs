//! `tsr sft`: supervised fine-tuning on a JSONL file of chat examples.
//!
//! Writes into `--out` (TRL's `output_dir` layout): the trained model itself as a Hugging Face
//! folder, loadable from `--out`, `metrics.jsonl`
//! (one line per optimizer step, TRL's SFT metric names), `sft_config.json` (the resolved
//! configuration) and, with `checkpoint_every > 0` (the default is 50), `checkpoint/`; a run
//! started again with the same arguments resumes from that checkpoint. A folder that already holds
//! a trained model is refused unless `--overwrite` is given (see
//! `tsr_backend::train::prepare_training_output`); bad input is reported before the folder changes.
//!
//! `--config` is a TOML file with the fields of `tsr_dpo::SftConfig`, either at top level or in
//! an `[sft]` table.

#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::Result;
use tsr_backend::train::{self, TrainEvent, TrainOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Built-in model name (smollm2-135m-instruct), Hugging Face directory or .gguf file.
    #[arg(long)]
    model: String,
    /// JSON lines of {"messages": [...]} or {"prompt", "completion"} (strings or chat messages).
    #[arg(long)]
    data: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// TOML file with SFT settings (see `tsr_dpo::SftConfig`).
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
        data: args.data.clone(),
        out: args.out.clone(),
        config: args.config,
        device: tsr_model::parse_device(&args.device)?,
        max_steps: args.max_steps,
        seed: args.seed,
        overwrite: args.overwrite,
    };
    let report = train::sft(&options, |event| match event {
        TrainEvent::Started { items } => eprintln!(
            "sft: {items} examples from {}, model {}",
            args.data.display(),
            args.model
        ),
        TrainEvent::Step { metrics: m, total } => {
            eprintln!(
                "step {}/{} epoch {:.2} loss {:.4} acc {:.3} grad_norm {:.3} lr {:.2e} {:.0} tok/s {:.2} s",
                m.step, total, m.epoch, m.loss, m.mean_token_accuracy, m.grad_norm, m.learning_rate, m.tokens_per_s, m.step_seconds
            );
        }
        TrainEvent::Trained {
            dropped,
            resumed_from,
        } => {
            if dropped > 0 {
                eprintln!("sft: {dropped} examples dropped (no assistant token within max_length)");
            }
            if let Some(s) = resumed_from {
                eprintln!("sft: resumed from step {s}");
            }
        }
        _ => {}
    })?;
    eprintln!(
        "sft: {} steps, mean {:.0} tok/s; the model, metrics.jsonl and the settings are in {}",
        report.summary.steps,
        report.summary.mean_tokens_per_s,
        args.out.display()
    );
    Ok(())
}
