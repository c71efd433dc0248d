//! `tsr judge-eval`: how often a judge ranks the better answer of a pair above the worse one.
//!
//! Pairs come from `--pairs FILE.jsonl` (`{id, kind, prompt, better, worse}`) or, by default,
//! the built-in set (`tsr_judge::pairs`) built from the evaluation data, fetched on first use.
//! Each answer is judged on its own by the LLM judge (the options of `tsr judge`); the report
//! (`--out`, else stdout) has pairwise accuracy overall and per kind with Wilson 95% intervals,
//! ties and unscored pairs counted apart (`tsr_judge::judge_eval`); `--records` gets one line
//! per pair with both scores and full verdicts. The evaluation is
//! `tsr_backend::judging::judge_eval`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use tsr_backend::judging::{judge_eval, JudgeEvalOptions};
use tsr_judge::{PairKind, PairSetOptions};
use tsr_loop::fsio::{write_json, write_jsonl};

use super::judge::JudgeOptions;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Judge model: built-in name, Hugging Face directory, or .gguf file.
    #[arg(long)]
    model: String,
    /// Pairs (JSON lines `{id, kind, prompt, better, worse}`) [default: the built-in set].
    #[arg(long, value_name = "FILE.jsonl")]
    pairs: Option<PathBuf>,
    /// Only these kinds (comma-separated): relevance, truncation, gsm8k-wrong-answer.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<PairKind>,
    /// At most N pairs of each kind (the first ones, in file order).
    #[arg(long)]
    limit: Option<usize>,
    /// Built-in set: pairs of each kind.
    #[arg(long, default_value_t = PairSetOptions::default().per_kind)]
    per_kind: usize,
    /// Built-in set: chooses the instructions and problems.
    #[arg(long, default_value_t = 0)]
    pair_seed: u64,
    /// The report (JSON); stdout when absent.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// One JSON line per pair: scores, outcome and both verdicts.
    #[arg(long, value_name = "FILE.jsonl")]
    records: Option<PathBuf>,
    #[command(flatten)]
    judge: JudgeOptions,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Most sequences the sampler decodes together.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Pairs judged per block (progress is logged after each).
    #[arg(long, default_value_t = 64)]
    block: usize,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.block > 0, "--block must be at least 1");
    let options = JudgeEvalOptions {
        judge: args.judge.overrides().config(),
        device: tsr_model::parse_device(&args.device)?,
        model: args.model,
        pairs: args.pairs,
        kinds: args.kinds,
        limit: args.limit,
        builtin: PairSetOptions {
            per_kind: args.per_kind,
            seed: args.pair_seed,
            ..PairSetOptions::default()
        },
        max_batch: args.max_batch,
        block: args.block,
    };
    let outcome = judge_eval(&options)?;
    if let Some(path) = &args.records {
        write_jsonl(path, &outcome.report.records)?;
    }
    match &args.out {
        Some(path) => write_json(path, &outcome.document)?,
        None => {
            let mut text = serde_json::to_vec_pretty(&outcome.document)?;
            text.push(b'\n');
            std::io::stdout().write_all(&text)?;
        }
    }
    Ok(())
}
