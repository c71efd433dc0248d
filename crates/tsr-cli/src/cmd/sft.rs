//! `tsr sft`: supervised fine-tuning on a JSONL file of chat examples.
//!
//! Writes into `--out` (TRL's `output_dir` layout): the trained model itself as a Hugging Face
//! folder, loadable from `--out`, `metrics.jsonl`
//! (one line per optimizer step, TRL's SFT metric names), `sft_config.json` (the resolved
//! configuration) and, with `checkpoint_every > 0` (the default is 50), `checkpoint/`; a run
//! started again with the same arguments resumes from that checkpoint. A folder that already holds
//! a trained model is refused unless `--overwrite` is given (see
//! [`super::prepare_training_output`]); bad input is reported before the folder changes.
//!
//! `--config` is a TOML file with the fields of `tsr_dpo::SftConfig`, either at top level or in
//! an `[sft]` table.

#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use tsr_dpo::SftConfig;
use tsr_model::{Kind, LoadOptions};

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
    let mut cfg: SftConfig = super::read_config_section(args.config.as_deref(), "sft")?;
    if let Some(s) = args.max_steps {
        cfg.max_steps = Some(s);
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    let checked = cfg.validate()?;
    let device = tsr_model::parse_device(&args.device)?;
    let opts = LoadOptions {
        device,
        kind: Kind::Float,
    };
    // Everything that can fail on bad input comes before the output folder changes.
    let examples = tsr_dpo::read_examples(&args.data)?;
    let mut loaded = tsr_model::load(&args.model, &opts)
        .with_context(|| format!("loading model {}", args.model))?;
    super::prepare_training_output(
        &args.out,
        "sft_config.json",
        &serde_json::to_string_pretty(&cfg)?,
        args.overwrite,
    )?;

    eprintln!(
        "sft: {} examples from {}, model {}",
        examples.len(),
        args.data.display(),
        args.model
    );
    let report = tsr_dpo::train_sft(
        &mut loaded.model,
        &loaded.tokenizer,
        &examples,
        &checked,
        &args.out,
        |m, total| {
            eprintln!(
                "step {}/{} epoch {:.2} loss {:.4} acc {:.3} grad_norm {:.3} lr {:.2e} {:.0} tok/s {:.2} s",
                m.step, total, m.epoch, m.loss, m.mean_token_accuracy, m.grad_norm, m.learning_rate, m.tokens_per_s, m.step_seconds
            );
        },
    )?;
    if !report.dropped.is_empty() {
        eprintln!(
            "sft: {} examples dropped (no assistant token within max_length)",
            report.dropped.len()
        );
    }
    if let Some(s) = report.resumed_from {
        eprintln!("sft: resumed from step {s}");
    }
    tsr_dpo::save_model_in(
        &loaded.model,
        &loaded.tokenizer,
        &loaded.generation,
        &args.out,
    )
    .with_context(|| format!("saving the model to {}", args.out.display()))?;
    eprintln!(
        "sft: {} steps, mean {:.0} tok/s; the model, metrics.jsonl and the settings are in {}",
        report.summary.steps,
        report.summary.mean_tokens_per_s,
        args.out.display()
    );
    Ok(())
}
