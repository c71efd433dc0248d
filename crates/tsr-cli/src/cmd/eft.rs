//! `tsr eft build`: EFT data (judge examples that teach a seed model to judge) as TRL
//! conversational JSON lines, split by prompt into train and held-out files; the work is
//! `tsr_backend::eft`.
//!
//! Sources:
//! * `--from-file FILE`: judged responses `{prompt, response, score[, justification, id]}`,
//!   `score` an integer 0..=5;
//! * `--from-problems FILE --model M --samples N --seed S`: problems `{id, question, answer}`
//!   (answer ending in `#### N`); the model answers each question N times and the verifier
//!   labels each answer correct (`--correct-score`, 5) or incorrect (`--incorrect-score`, 1). The
//!   labelled answers are also written as `labelled.jsonl` (the `--from-file` format).
//!
//! Output in `--out-dir`: `eft-train.jsonl`, `eft-heldout.jsonl`, `manifest.json` (counts, seed,
//! template, source hashes). Prompts that are AlpacaEval instructions or GSM8K test problems are
//! refused (the evaluation data is fetched on first use; `--no-eval-guard` skips the check, and
//! the manifest says so).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tsr_backend::eft::{build_eft_files, EftBuildOptions, EftSource, ProblemSource};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Build EFT train and held-out files from judged responses or verified answers.
    Build(BuildArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from_file", "from_problems"])))]
pub struct BuildArgs {
    /// Judged responses: JSON lines `{prompt, response, score[, justification, id]}`.
    #[arg(long, value_name = "FILE.jsonl")]
    from_file: Option<PathBuf>,
    /// Problems with known answers: JSON lines `{id, question, answer}` (`#### N`).
    #[arg(long, value_name = "FILE.jsonl", requires = "model")]
    from_problems: Option<PathBuf>,
    /// The model that answers the problems (built-in name, HF directory or .gguf).
    #[arg(long)]
    model: Option<String>,
    /// Answers sampled per problem.
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Seeds the answers (per problem id) and the held-out split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    #[arg(long, default_value_t = 384)]
    max_new_tokens: usize,
    /// Score of an answer with the right final number.
    #[arg(long, default_value_t = 5)]
    correct_score: u8,
    /// Score of an answer with a wrong or no final number.
    #[arg(long, default_value_t = 1)]
    incorrect_score: u8,
    /// Judge prompt of the user turn: `additive` (the paper's), `short`, or a file with
    /// `{instruction}` and `{response}`.
    #[arg(long, default_value = "additive", value_name = "additive|short|PATH")]
    template: String,
    /// Share of the distinct prompts held out, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
    /// Output folder (created if needed).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Do not check prompts against the evaluation sets (recorded in the manifest).
    #[arg(long)]
    no_eval_guard: bool,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Build(a) => build(a),
    }
}

fn build(args: BuildArgs) -> Result<()> {
    let source = match (args.from_file, args.from_problems) {
        (Some(path), None) => EftSource::File(path),
        (None, Some(path)) => EftSource::Problems(ProblemSource {
            path,
            model: args.model.context("--from-problems needs --model")?,
            samples: args.samples,
            temperature: args.temperature,
            top_p: args.top_p,
            max_new_tokens: args.max_new_tokens,
            correct_score: args.correct_score,
            incorrect_score: args.incorrect_score,
            device: tsr_model::parse_device(&args.device)?,
            max_batch: args.max_batch,
        }),
        _ => bail!("give exactly one of --from-file and --from-problems"),
    };
    build_eft_files(&EftBuildOptions {
        source,
        seed: args.seed,
        template: args.template,
        holdout: args.holdout,
        out_dir: args.out_dir,
        eval_guard: !args.no_eval_guard,
    })?;
    Ok(())
}
