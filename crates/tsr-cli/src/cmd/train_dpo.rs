//! `tsr train-dpo`: DPO training on a JSONL file of preference pairs.
//!
//! Writes into `--out` (TRL's `output_dir` layout): the trained model itself as a Hugging Face
//! folder, loadable from `--out` (`config.json`,
//! `model.safetensors`, tokenizer files, `generation_config.json`), `metrics.jsonl` (one line per
//! optimizer step, TRL's metric names), `dpo_config.json` (the resolved configuration),
//! `ref_cache/` (reference log-probs) and, with `checkpoint_every > 0`, `checkpoint/`; a run
//! started again with the same arguments resumes from that checkpoint. A folder that already holds
//! a trained model is refused unless `--overwrite` is given (see
//! [`super::prepare_training_output`]); bad input is reported before the folder changes.
//!
//! `--config` is a TOML file with the fields of `tsr_dpo::DpoConfig`, either at top level or in
//! a `[dpo]` table.

#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use tsr_dpo::DpoConfig;
use tsr_model::{Kind, LoadOptions};

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
    let mut cfg: DpoConfig = super::read_config_section(args.config.as_deref(), "dpo")?;
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
    let pairs = tsr_dpo::read_pairs(&args.pairs)?;
    let mut loaded = tsr_model::load(&args.model, &opts)
        .with_context(|| format!("loading model {}", args.model))?;
    super::prepare_training_output(
        &args.out,
        "dpo_config.json",
        &serde_json::to_string_pretty(&cfg)?,
        args.overwrite,
    )?;

    eprintln!(
        "train-dpo: {} pairs from {}, model {}",
        pairs.len(),
        args.pairs.display(),
        args.model
    );
    let report = tsr_dpo::train_dpo(
        &mut loaded.model,
        &loaded.tokenizer,
        &pairs,
        &checked,
        &args.out,
        |m, total| {
            eprintln!(
            "step {}/{} epoch {:.2} loss {:.4} margin {:+.4} acc {:.2} grad_norm {:.3} lr {:.2e} {:.0} tok/s",
            m.step, total, m.epoch, m.loss, m.rewards_margins, m.rewards_accuracies, m.grad_norm, m.learning_rate, m.tokens_per_s
        );
        },
    )?;
    if !report.dropped.is_empty() {
        eprintln!(
            "train-dpo: {} pairs dropped (prompt longer than max_length)",
            report.dropped.len()
        );
    }
    if let Some(s) = report.resumed_from {
        eprintln!("train-dpo: resumed from step {s}");
    }
    tsr_dpo::save_model_in(
        &loaded.model,
        &loaded.tokenizer,
        &loaded.generation,
        &args.out,
    )
    .with_context(|| format!("saving the model to {}", args.out.display()))?;
    eprintln!(
        "train-dpo: {} steps, mean {:.0} tok/s; the model, metrics.jsonl and the settings are in {}",
        report.summary.steps,
        report.summary.mean_tokens_per_s,
        args.out.display()
    );
    Ok(())
}
