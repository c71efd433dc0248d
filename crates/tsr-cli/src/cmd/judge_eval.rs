//! `tsr judge-eval`: how often a judge ranks the better answer of a pair above the worse one.
//!
//! Pairs come from `--pairs FILE.jsonl` (`{id, kind, prompt, better, worse}`) or, by default,
//! the built-in set (`tsr_judge::pairs`) built from the evaluation data, fetched on first use.
//! Each answer is judged on its own by the LLM judge (the options of `tsr judge`); the report
//! (`--out`, else stdout) has pairwise accuracy overall and per kind with Wilson 95% intervals,
//! ties and unscored pairs counted apart (`tsr_judge::judge_eval`); `--records` gets one line
//! per pair with both scores and full verdicts.

#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;
use tsr_judge::judge_eval::score_pairs;
use tsr_judge::pairs::read_pairs;
use tsr_judge::{
    Judge, JudgeConfig, JudgeEvalReport, JudgePair, JudgeStats, LlmJudge, PairKind, PairSetOptions,
};
use tsr_model::{load, parse_device, LoadOptions, Loaded};
use tsr_sample::{Sampler, SamplerOptions};

use super::data::{builtin_pairs, write_atomic};
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

/// The judge over a loaded model: the one place that decides how answers are scored.
fn build_judge<'a>(
    args: &Args,
    loaded: &'a Loaded,
    config: &JudgeConfig,
) -> Result<Box<dyn Judge + 'a>> {
    let settings = config.validate()?;
    let sampler = Sampler::new(&loaded.model, &loaded.tokenizer)
        .with_generation_config(&loaded.generation)
        .with_options(SamplerOptions {
            max_batch_rows: args.max_batch,
            ..Default::default()
        });
    Ok(Box::new(LlmJudge::new(sampler, settings)))
}

/// The pairs to judge: the file or the built-in set, filtered by kind, limited per kind.
fn select_pairs(args: &Args) -> Result<(Vec<JudgePair>, serde_json::Value)> {
    let (pairs, source) = match &args.pairs {
        Some(p) => (read_pairs(p)?, json!({"file": p})),
        None => {
            let options = PairSetOptions {
                per_kind: args.per_kind,
                seed: args.pair_seed,
                ..PairSetOptions::default()
            };
            let source = json!({
                "builtin": {"per_kind": options.per_kind, "seed": options.seed, "truncation_min_chars": options.truncation_min_chars},
            });
            (builtin_pairs(&options)?, source)
        }
    };
    Ok((filter_pairs(pairs, &args.kinds, args.limit), source))
}

/// Keeps the pairs of `kinds` (all when empty), at most `limit` of each kind, in order.
pub fn filter_pairs(
    pairs: Vec<JudgePair>,
    kinds: &[PairKind],
    limit: Option<usize>,
) -> Vec<JudgePair> {
    let wanted: BTreeSet<PairKind> = kinds.iter().copied().collect();
    let mut taken = std::collections::BTreeMap::<PairKind, usize>::new();
    pairs
        .into_iter()
        .filter(|p| wanted.is_empty() || wanted.contains(&p.kind))
        .filter(|p| {
            let n = taken.entry(p.kind).or_default();
            *n += 1;
            limit.is_none_or(|l| *n <= l)
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.block > 0, "--block must be at least 1");
    let config = args.judge.config();
    config.validate()?;
    let (pairs, pair_source) = select_pairs(&args)?;
    anyhow::ensure!(!pairs.is_empty(), "no pairs to judge");
    tracing::info!(pairs = pairs.len(), "judge-eval pairs selected");

    let loaded = load(
        &args.model,
        &LoadOptions {
            device: parse_device(&args.device)?,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading model {}", args.model))?;
    let mut judge = build_judge(&args, &loaded, &config)?;

    let mut records = Vec::with_capacity(pairs.len());
    let mut stats = JudgeStats::default();
    for block in pairs.chunks(args.block) {
        let (r, s) = score_pairs(judge.as_mut(), block)?;
        records.extend(r);
        stats.add(&s);
        tracing::info!(done = records.len(), total = pairs.len(), "pairs judged");
    }
    let report = JudgeEvalReport::from_records(records, stats);
    for (kind, t) in &report.by_kind {
        tracing::info!(%kind, pairs = t.pairs, correct = t.correct, wrong = t.wrong, ties = t.ties, unscored = t.unscored, accuracy = ?t.accuracy, "judge accuracy");
    }

    if let Some(path) = &args.records {
        let mut buf = Vec::new();
        for r in &report.records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        write_atomic(path, &buf)?;
    }
    let out = json!({
        "tsr_version": env!("CARGO_PKG_VERSION"),
        "model": super::eval::model_identity(&args.model, &loaded.source)?,
        "pairs_sha256": super::eval::jsonl_sha256(&pairs),
        "pair_count": pairs.len(),
        "judge": config,
        "pairs": pair_source,
        "kinds": report.by_kind.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        "limit_per_kind": args.limit,
        "report": report,
    });
    let mut text = serde_json::to_vec_pretty(&out)?;
    text.push(b'\n');
    match &args.out {
        Some(path) => write_atomic(path, &text)?,
        None => std::io::stdout().write_all(&text)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(id: &str, kind: PairKind) -> JudgePair {
        JudgePair {
            id: id.into(),
            kind,
            prompt: "p".into(),
            better: "b".into(),
            worse: "w".into(),
        }
    }

    #[test]
    fn kinds_and_limits_filter_in_order() {
        let pairs = vec![
            pair("r1", PairKind::Relevance),
            pair("t1", PairKind::Truncation),
            pair("r2", PairKind::Relevance),
            pair("g1", PairKind::Gsm8kWrongAnswer),
            pair("r3", PairKind::Relevance),
        ];
        let ids = |v: Vec<JudgePair>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(ids(filter_pairs(pairs.clone(), &[], None)).len(), 5);
        assert_eq!(
            ids(filter_pairs(pairs.clone(), &[], Some(1))),
            ["r1", "t1", "g1"]
        );
        assert_eq!(
            ids(filter_pairs(pairs.clone(), &[PairKind::Relevance], Some(2))),
            ["r1", "r2"]
        );
        assert_eq!(
            ids(filter_pairs(
                pairs,
                &[PairKind::Truncation, PairKind::Gsm8kWrongAnswer],
                None
            )),
            ["t1", "g1"]
        );
    }

    #[test]
    fn the_short_template_reaches_the_judge_settings() {
        let o = JudgeOptions {
            samples: Some(1),
            template: Some("short".into()),
            ..JudgeOptions::default()
        };
        let s = o.config().validate().unwrap();
        assert_eq!(s.template().text(), tsr_judge::SHORT);
        assert_eq!(s.samples(), 1);
    }
}
