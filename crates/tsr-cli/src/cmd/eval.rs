//! `tsr eval`: is a model better? Win rates, GSM8K accuracy, AlpacaEval export, judge accuracy.
//!
//! * `winrate`: answers of a model and a baseline (generated, or read from answer files) on a
//!   prompt set (a file, or the AlpacaEval instructions), compared pairwise in both orders by a
//!   judge model (`tsr_judge::LlmPairwiseJudge`) or a style rule (`tsr_judge::RuleJudge`).
//! * `gsm8k`: accuracy on the 100 offline GSM8K problems, greedy and sampled.
//! * `alpaca-export`: a model's answers to the 805 AlpacaEval instructions in AlpacaEval's format.
//! * `judge`: judge accuracy on pairs with a known better answer (`tsr judge-eval`).
//!
//! Every kind but `judge` writes into `--out DIR`: `result.json` (tsr version, model identities
//! as path and content hash, the prompts' hash, seeds, settings, counts and the report) and
//! `records.jsonl` (one line per item), plus the answers it generated (`answers-*.jsonl`, lines
//! `{id, prompt, response, finish_reason, tokens}`, reusable with `--answers`). The evaluations
//! are `tsr_backend::eval`.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use tsr_backend::eval::{
    AlpacaOptions, Generation, GsmOptions, PairwiseOptions, Side, WinrateJudge, WinrateOptions,
};
use tsr_judge::PairwiseMode;
use tsr_model::parse_device;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(clap::Subcommand, Debug)]
enum Kind {
    /// Win rate of a model's answers over a baseline's, judged pairwise in both orders.
    Winrate(WinrateArgs),
    /// Accuracy on the offline GSM8K problems (greedy, and sampled with --samples).
    Gsm8k(GsmArgs),
    /// A model's answers to the AlpacaEval instructions, in AlpacaEval's JSON format.
    AlpacaExport(AlpacaArgs),
    /// Judge accuracy on pairs with a known better answer (same as `tsr judge-eval`).
    Judge(super::judge_eval::Args),
}

pub fn run(args: Args) -> Result<()> {
    match args.kind {
        Kind::Winrate(a) => tsr_backend::eval::winrate(&a.options()?).map(drop),
        Kind::Gsm8k(a) => tsr_backend::eval::gsm8k(&a.options()?).map(drop),
        Kind::AlpacaExport(a) => tsr_backend::eval::alpaca_export(&a.options()?).map(drop),
        Kind::Judge(a) => super::judge_eval::run(a),
    }
}

/// How answers are generated.
#[derive(clap::Args, Debug, Clone)]
pub struct GenOptions {
    /// Generation limit per answer [default: 256; alpaca-export 512].
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Sampling temperature of the answers (0: greedy decoding).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus mass of sampled answers.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Base seed: answers, sampled judges and the bootstrap derive their seeds from it.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
}

impl GenOptions {
    fn generation(&self) -> Result<Generation> {
        Ok(Generation {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            device: parse_device(&self.device)?,
            max_batch: self.max_batch,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// winrate

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("model_side").required(true).args(["model", "answers"])))]
#[command(group(clap::ArgGroup::new("baseline_side").required(true).args(["baseline", "baseline_answers"])))]
#[command(group(clap::ArgGroup::new("judge_kind").required(true).args(["judge_model", "judge_rule"])))]
pub struct WinrateArgs {
    /// The model under evaluation: built-in name, Hugging Face directory, or .gguf file.
    #[arg(long)]
    model: Option<String>,
    /// Or its answers (JSON lines `{id, prompt, response}`, as this command writes them).
    #[arg(long, value_name = "FILE.jsonl")]
    answers: Option<PathBuf>,
    /// The baseline model.
    #[arg(long)]
    baseline: Option<String>,
    /// Or the baseline's answers.
    #[arg(long, value_name = "FILE.jsonl")]
    baseline_answers: Option<PathBuf>,
    /// Prompts (JSON lines `{id, prompt}`) [default: the AlpacaEval instructions].
    #[arg(long, value_name = "FILE.jsonl")]
    prompts: Option<PathBuf>,
    /// Only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
    /// Judge model for pairwise verdicts.
    #[arg(long)]
    judge_model: Option<String>,
    /// Or a style rule instead of a judge model: `starts-with:TEXT`, `ends-with:TEXT` or
    /// `contains:TEXT` (prefers the answer with that trait; it checks a style, not quality).
    #[arg(long, value_name = "RULE")]
    judge_rule: Option<String>,
    /// Judge model verdicts: `direct` (probabilities of A/B/tie after `Winner:`) or `sampled`.
    #[arg(long, default_value = "direct")]
    judge_mode: PairwiseMode,
    /// Pairwise judge prompt with {instruction}, {response_a}, {response_b} [default: built in].
    #[arg(long, value_name = "FILE")]
    judge_template: Option<PathBuf>,
    /// Sampled judge: generation limit per verdict.
    #[arg(long, default_value_t = 128)]
    judge_max_new_tokens: usize,
    /// Direct judge: below this probability mass on A/B/tie a verdict is unread.
    #[arg(long, default_value_t = 0.1)]
    judge_min_mass: f64,
    /// Direct judge: how many most likely next tokens are read for A/B/tie.
    #[arg(long, default_value_t = 20)]
    judge_top_logprobs: usize,
    #[command(flatten)]
    gen: GenOptions,
    /// Output folder: result.json, records.jsonl, answers-model.jsonl, answers-baseline.jsonl.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl WinrateArgs {
    fn options(self) -> Result<WinrateOptions> {
        let side = |model: Option<String>, answers: Option<PathBuf>, flags: &str| {
            answers
                .map(Side::Answers)
                .or(model.map(Side::Model))
                .with_context(|| format!("give {flags}"))
        };
        Ok(WinrateOptions {
            model: side(self.model, self.answers, "--model or --answers")?,
            baseline: side(
                self.baseline,
                self.baseline_answers,
                "--baseline or --baseline-answers",
            )?,
            prompts: self.prompts,
            limit: self.limit,
            judge: self
                .judge_rule
                .map(WinrateJudge::Rule)
                .or(self.judge_model.map(WinrateJudge::Model))
                .context("give --judge-model or --judge-rule")?,
            pairwise: PairwiseOptions {
                mode: self.judge_mode,
                template: self.judge_template,
                max_new_tokens: self.judge_max_new_tokens,
                min_mass: self.judge_min_mass,
                top_logprobs: self.judge_top_logprobs,
            },
            generation: self.gen.generation()?,
            out: self.out,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// gsm8k

#[derive(clap::Args, Debug)]
pub struct GsmArgs {
    /// Built-in model name, Hugging Face directory, or .gguf file.
    #[arg(long)]
    model: String,
    /// Only the first N problems (of 100).
    #[arg(long)]
    limit: Option<usize>,
    /// Sampled answers per problem besides the greedy one (0: greedy only).
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Temperature of the sampled answers.
    #[arg(long, default_value_t = 0.7)]
    sample_temperature: f64,
    /// Nucleus mass of the sampled answers.
    #[arg(long, default_value_t = 0.9)]
    sample_top_p: f64,
    /// Prompt format with a {question} placeholder [default: tsr's, recorded in result.json].
    #[arg(long)]
    prompt_format: Option<String>,
    #[command(flatten)]
    gen: GenOptions,
    /// Output folder: result.json and records.jsonl.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl GsmArgs {
    fn options(self) -> Result<GsmOptions> {
        ensure!(
            self.prompt_format
                .as_deref()
                .is_none_or(|f| f.contains("{question}")),
            "--prompt-format must contain {{question}}"
        );
        Ok(GsmOptions {
            model: self.model,
            limit: self.limit,
            samples: self.samples,
            sample_temperature: self.sample_temperature,
            sample_top_p: self.sample_top_p,
            prompt_format: self.prompt_format,
            generation: self.gen.generation()?,
            out: self.out,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// alpaca-export

#[derive(clap::Args, Debug)]
pub struct AlpacaArgs {
    /// Built-in model name, Hugging Face directory, or .gguf file.
    #[arg(long)]
    model: String,
    /// The `generator` name in the file [default: the model folder's name].
    #[arg(long)]
    generator: Option<String>,
    /// Only the first N instructions (of 805); a partial file is not an AlpacaEval submission.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    gen: GenOptions,
    /// Output folder: model_outputs.json (AlpacaEval format), result.json, records.jsonl.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl AlpacaArgs {
    fn options(self) -> Result<AlpacaOptions> {
        Ok(AlpacaOptions {
            model: self.model,
            generator: self.generator,
            limit: self.limit,
            generation: self.gen.generation()?,
            out: self.out,
        })
    }
}
