//! `tsr iterate`: run Self-Rewarding / Temporal Self-Rewarding iterations (tsr-loop) with real
//! models (the libtorch backend of tsr-backend).
//!
//! `tsr iterate --config run.toml [--iterations N] [--run-dir DIR]` starts a run;
//! `tsr iterate --resume DIR [--iterations N]` continues one after a crash (or extends it);
//! `tsr iterate --default [--run-dir DIR]` runs the embedded default (one TSR iteration of
//! SmolLM2-135M-Instruct on 16 built-in instructions; `cargo xtask run-iteration`); when DIR
//! already holds a run, it is continued instead.

#![allow(clippy::print_stderr)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tsr_loop::{Config, Event, Observer, Run, RunOutcome};

use tsr_backend::TorchSettings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run configuration (TOML; see docs/configuration.md).
    #[arg(long, conflicts_with_all = ["resume", "default"])]
    config: Option<PathBuf>,
    /// Run the embedded default: one TSR iteration of SmolLM2-135M-Instruct on 16 instructions.
    #[arg(long, conflicts_with = "resume")]
    default: bool,
    /// Continue the run in this folder (after a crash, or with more --iterations).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Where to write the run (must not exist or be empty). Default: runs/<method>-<unix time>.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    run_dir: Option<PathBuf>,
    /// Override `run.iterations`.
    #[arg(long)]
    iterations: Option<u32>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// TEST DOUBLE: tsr-loop's deterministic fake backend instead of real models (tests the
    /// command and the run folder without a model). Nothing in such a run is a real result; the
    /// run folder's provenance.json and summaries say so.
    #[arg(long)]
    fake_backend: bool,
    /// TEST DOUBLE: real models, but scores from a hash instead of the LLM judge (checks
    /// sampling, DPO and the similarity measure without a judge). The scores mean nothing; the
    /// run folder's provenance.json and summaries say so.
    #[arg(long, conflicts_with = "fake_backend")]
    hash_judge: bool,
}

pub fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    let mut run = open_or_create(&args)?;
    let cfg = run.config().clone();
    let (method, n) = (cfg.run.method.as_str(), cfg.run.iterations);
    eprintln!(
        "tsr iterate: {method}, {n} iteration(s), K = {}, model {}, run folder {}",
        cfg.loop_.k,
        cfg.run.model,
        run.dir().display()
    );
    let mut obs = ProgressObserver::new();
    let outcome = if args.fake_backend {
        let mut b = tsr_loop::fake::FakeBackend::new();
        run.execute(&mut b, &mut obs)
    } else {
        let device = tsr_model::parse_device(&args.device)?;
        let mut b = tsr_backend::backend_for(&cfg, device, args.hash_judge, run.dir())?;
        run.execute(&mut *b, &mut obs)
    };
    obs.finish();
    let outcome = outcome.with_context(|| {
        format!(
            "the run stopped; continue it with `tsr iterate --resume {}`",
            run.dir().display()
        )
    })?;
    print_summary(&outcome, t0.elapsed().as_secs_f64());
    Ok(())
}

fn open_or_create(args: &Args) -> Result<Run> {
    if let Some(dir) = &args.resume {
        let mut run = Run::open(dir)?;
        if let Some(n) = args.iterations {
            run.set_iterations(n)?;
        }
        return Ok(run);
    }
    if let (true, Some(dir)) = (args.default, &args.run_dir) {
        // `cargo xtask run-iteration` twice, or after an interruption: continue the default run.
        if dir.join("run.json").exists() {
            eprintln!("tsr iterate: {} holds a run; continuing it", dir.display());
            let mut run = Run::open(dir)?;
            if let Some(n) = args.iterations {
                run.set_iterations(n)?;
            }
            return Ok(run);
        }
    }
    let (mut cfg, prompts) = if args.default {
        (
            tsr_loop::defaults::config()?,
            tsr_loop::defaults::prompts()?,
        )
    } else if let Some(path) = &args.config {
        let cfg = Config::load(path)?;
        let prompts = tsr_loop::load_prompts(&cfg.run.prompts)?;
        (cfg, prompts)
    } else {
        bail!("give --config FILE, --default or --resume DIR");
    };
    if let Some(n) = args.iterations {
        cfg.run.iterations = n;
    }
    cfg.validate()?;
    if !args.fake_backend {
        // Check the backend's sections before creating anything.
        TorchSettings::from_config(&cfg, tsr_model::Device::Cpu)?;
    }
    let dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Path::new("runs").join(format!("{}-{secs}", cfg.run.method.as_str()))
        }
    };
    Ok(Run::create(&dir, cfg, prompts)?)
}

/// Bars on a terminal, one line per stage otherwise.
struct ProgressObserver {
    bar: Option<ProgressBar>,
    tty: bool,
}

impl ProgressObserver {
    fn new() -> Self {
        Self {
            bar: None,
            tty: std::io::stderr().is_terminal(),
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Observer for ProgressObserver {
    fn event(&mut self, e: &Event) {
        match e {
            Event::IterationStarted { iteration, of } => {
                tracing::info!("iteration {iteration} of {of}");
            }
            Event::StageStarted {
                iteration,
                stage,
                total,
            } => {
                self.finish();
                if self.tty {
                    let bar = ProgressBar::new(*total);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>22} [{bar:30}] {pos}/{len} prompts {elapsed}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(format!("iter {iteration} {stage}"));
                    self.bar = Some(bar);
                } else {
                    tracing::info!(iteration, stage, total, "stage started");
                }
            }
            Event::StageProgress {
                iteration,
                stage,
                done,
                total,
            } => match &self.bar {
                Some(b) => b.set_position(*done),
                None => tracing::info!(iteration, stage, done, total, "progress"),
            },
            Event::StageFinished {
                iteration,
                stage,
                wall_s,
            } => {
                self.finish();
                tracing::info!(
                    iteration,
                    stage,
                    wall_s = format!("{wall_s:.1}"),
                    "stage finished"
                );
            }
            Event::StageSkipped { iteration, stage } => {
                tracing::info!(iteration, stage, "already done (resumed run)");
            }
            _ => {}
        }
    }
}

fn fmt_opt(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

fn print_summary(outcome: &RunOutcome, wall: f64) {
    eprintln!();
    eprintln!("iter  pairs  chosen  rejected  gap    from-P0  from-Pf  cos(h)  dpo-margin  gen-tok  judge-tok  dpo-tok");
    for s in &outcome.summaries {
        let c = &s["compute"];
        eprintln!(
            "{:>4}  {:>5}  {:>6}  {:>8}  {:>5}  {:>7}  {:>7}  {:>6}  {:>10}  {:>7}  {:>9}  {:>7}",
            s["iteration"].to_string(),
            s["pairs"].to_string(),
            fmt_opt(&s["chosen_score_mean"], 2),
            fmt_opt(&s["rejected_score_mean"], 2),
            fmt_opt(&s["score_gap"], 2),
            fmt_opt(&s["rejected_from_initial_share"], 2),
            fmt_opt(&s["chosen_from_future_share"], 2),
            fmt_opt(&s["similarity_mean"], 3),
            fmt_opt(&s["dpo"]["reward_margin"], 4),
            c["tokens_generated"].to_string(),
            c["tokens_judged"].to_string(),
            c["tokens_trained"].to_string(),
        );
    }
    for s in &outcome.summaries {
        if s["pairs"].as_u64() == Some(0) {
            eprintln!(
                "note: iteration {} kept no preference pairs (drop reasons: {}), so nothing was trained. \
                 Most often the judge gave no parsable `Score:`: the seed model must be able to judge \
                 (the papers fine-tune it on EFT data first); see iter-NNN/judge-*/ and docs/configuration.md.",
                s["iteration"],
                s["curation"]["phase1"]["dropped"]
            );
        }
    }
    eprintln!();
    eprintln!(
        "tsr iterate: {} of {} iteration(s) done in {wall:.0} s; newest model: {}",
        outcome.state.completed_iterations, outcome.state.iterations, outcome.state.model
    );
    eprintln!("run folder: {}", outcome.dir.display());
    eprintln!("  summary.json, metrics.jsonl, iter-NNN/ (generations, verdicts, pairs, models)");
}
