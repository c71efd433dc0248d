//! `tsr judge`: score (prompt, response) pairs with the LLM-as-a-judge prompt, or with the
//! known-answer verifier.
//!
//! Input: JSON lines with string fields `prompt` and `response`, optional `id` and `reference`,
//! any other fields passed through unchanged (see `tsr_judge::jsonl`). The whole file is
//! validated before a model is loaded; a malformed line is an error naming its line.
//! Output: each input line plus `score` (mean of the parsed judge samples, `null` when none
//! parsed), `judge_samples`, `judge_scores`, `judge_failures`, `judge_finish_reasons`, and in the
//! probability modes (`--mode expected|direct`) `judge_digit_mass` and `judge_digit_probs`.
//! Defaults (3 samples, T 0.7, top_p 0.9, 256 new tokens) are `tsr_judge::JudgeConfig`'s.
//! The judging loop is `tsr_backend::judging::judge_blocks`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tsr_backend::judging::{judge_blocks, JudgeOverrides};
use tsr_judge::jsonl::{read_judge_input, write_jsonl, JsonlRecord};
use tsr_judge::{Judge, JudgeItem, JudgeMode, LlmJudge, VerifierJudge};

use super::Sink;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Judge model: built-in name, Hugging Face directory, or .gguf file.
    #[arg(long, required_unless_present_any = ["verifier", "engine_urls"], conflicts_with = "engine_urls")]
    model: Option<String>,
    /// The judge model served by an OpenAI-compatible server instead (`direct` and `expected`
    /// modes need top-k log-probs and, for chat prompts, llama.cpp's /apply-template).
    #[command(flatten)]
    engine: super::EngineArgs,
    /// Input JSON lines: `prompt`, `response` [, `id`, `reference`, other fields].
    #[arg(long, value_name = "FILE.jsonl")]
    input: PathBuf,
    /// Output JSON lines (written atomically); stdout when absent.
    #[arg(long, value_name = "FILE.jsonl")]
    out: Option<PathBuf>,
    /// Also write the full verdict records (rendered judge prompt, every sample) here.
    #[arg(long, value_name = "FILE.jsonl")]
    verdicts: Option<PathBuf>,
    #[command(flatten)]
    judge: JudgeOptions,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Most sequences the sampler decodes together.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Items judged per block (output is written after each block).
    #[arg(long, default_value_t = 256)]
    block: usize,
    /// Score by comparing final numbers with each line's `reference` (GSM8K `#### N`): 1 when
    /// equal, 0 otherwise. Needs no model.
    #[arg(long, conflicts_with_all = ["model", "engine_urls", "template", "samples", "temperature", "top_p", "max_new_tokens", "top_logprobs", "min_digit_mass", "mode"])]
    verifier: bool,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.block > 0, "--block must be at least 1");
    let (records, items) = read_judge_input(&args.input)?;
    tracing::info!(input = %args.input.display(), items = items.len(), "read judge input");

    if args.verifier {
        return judge_all(&args, &mut VerifierJudge::default(), records, &items);
    }
    // Check the settings (and read the template) before the slow model load.
    let settings = args.judge.overrides().config().validate()?;
    if let Some(engine) = args.engine.engine()? {
        tracing::info!(urls = ?args.engine.engine_urls, judge = %settings.describe(), "judging on the engine");
        let mut judge = LlmJudge::new(engine, settings);
        return judge_all(&args, &mut judge, records, &items);
    }
    let spec = args
        .model
        .as_deref()
        .context("--model is required without --verifier")?;
    let loaded = tsr_backend::load_model(spec, tsr_model::parse_device(&args.device)?)?;
    tracing::info!(model = %loaded.source.display(), judge = %settings.describe(), "judging");
    let sampler = tsr_backend::batch_sampler(&loaded, args.max_batch);
    let mut judge = LlmJudge::new(sampler, settings);
    judge_all(&args, &mut judge, records, &items)
}

/// Judges the items block by block, writing each block's lines (and verdicts) as it finishes.
fn judge_all(
    args: &Args,
    judge: &mut dyn Judge,
    mut records: Vec<JsonlRecord>,
    items: &[JudgeItem],
) -> Result<()> {
    let mut out = Sink::open(args.out.as_deref())?;
    let mut verdicts_out = match &args.verdicts {
        Some(p) => Some(Sink::open(Some(p))?),
        None => None,
    };
    judge_blocks(judge, &mut records, items, args.block, |recs, verdicts| {
        write_jsonl(&mut out.writer, recs.iter().map(|r| &r.fields))
            .with_context(|| format!("writing {}", out.name()))?;
        if let Some(sink) = verdicts_out.as_mut() {
            for v in verdicts {
                serde_json::to_writer(&mut sink.writer, v)?;
                sink.writer
                    .write_all(b"\n")
                    .with_context(|| format!("writing {}", sink.name()))?;
            }
        }
        Ok(())
    })?;
    out.finish()?;
    if let Some(sink) = verdicts_out {
        sink.finish()?;
    }
    Ok(())
}

/// The LLM-judge options of `tsr judge` and `tsr judge-eval`.
#[derive(clap::Args, Debug, Default)]
pub struct JudgeOptions {
    /// Judge samples per response [default: 3].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Judge sampling temperature [default: 0.7].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Judge nucleus mass [default: 0.9].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Generation limit per verdict [default: 256].
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Base seed; each item's seed derives from it and the item id [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// How verdicts become scores: `sampled` (sample verdicts, parse `Score:`; the paper's),
    /// `expected` (sample a justification, then the expected score digit from one forward pass)
    /// or `direct` (no justification: the expected digit after a prefilled `Score: `).
    #[arg(long, default_value = "sampled")]
    pub mode: JudgeMode,
    /// Judge prompt: a built-in name (`additive`: the paper's additive 5-point prompt; `short`:
    /// tsr's short prompt for small judges) or a file with `{instruction}` and `{response}`
    /// [default: additive].
    #[arg(long, value_name = "NAME|FILE")]
    pub template: Option<String>,
    /// Probability modes: most likely next tokens read at the score position [default: 20].
    #[arg(long)]
    pub top_logprobs: Option<usize>,
    /// Probability modes: a verdict with less probability than this on the digits 0..5 counts
    /// as unparsed [default: 0.1].
    #[arg(long)]
    pub min_digit_mass: Option<f64>,
}

impl JudgeOptions {
    /// The settings given, for `tsr_backend::judging::JudgeOverrides::config` (`JudgeConfig`'s
    /// defaults, overridden by the flags given; a `--template` that names a built-in prompt
    /// selects it, anything else is a file).
    pub fn overrides(&self) -> JudgeOverrides {
        JudgeOverrides {
            samples: self.samples,
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            mode: self.mode,
            template: self.template.clone(),
            top_logprobs: self.top_logprobs,
            min_digit_mass: self.min_digit_mass,
        }
    }
}
