//! Judging outside the loop: scoring a file of (prompt, response) lines (`tsr judge`) and
//! measuring how often a judge ranks the better answer of a pair first (`tsr judge-eval`).
//!
//! - [`JudgeOverrides`] is the judge configuration a command was given: `JudgeConfig`'s defaults
//!   with some settings replaced, and a template given as a built-in name or a file.
//! - [`judge_blocks`] judges items block by block, annotating each input line with its verdict
//!   (`tsr_judge::jsonl::annotate`) and handing every finished block to the caller to write.
//! - [`judge_eval`] selects pairs (a file, or the built-in set of [`crate::eval_data`]), judges
//!   each answer on its own with the LLM judge and reports pairwise accuracy overall and per kind
//!   (`tsr_judge::judge_eval`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use tsr_judge::jsonl::{annotate, JsonlRecord};
use tsr_judge::judge_eval::score_pairs;
use tsr_judge::pairs::read_pairs;
use tsr_judge::{
    Judge, JudgeConfig, JudgeEvalReport, JudgeItem, JudgeMode, JudgePair, JudgeStats,
    JudgeTemplate, LlmJudge, PairKind, PairSetOptions, Verdict,
};
use tsr_model::Device;

use crate::eval::{jsonl_sha256, model_identity};
use crate::local::{batch_sampler, load_model};

/// Judge settings given on top of `JudgeConfig`'s defaults (`None`: the default).
#[derive(Clone, Debug, Default)]
pub struct JudgeOverrides {
    pub samples: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_new_tokens: Option<usize>,
    pub seed: Option<u64>,
    pub mode: JudgeMode,
    /// A built-in template name (`additive`, `short`) or a file with `{instruction}` and
    /// `{response}`.
    pub template: Option<String>,
    pub top_logprobs: Option<usize>,
    pub min_digit_mass: Option<f64>,
}

impl JudgeOverrides {
    /// The judge configuration: `JudgeConfig`'s defaults, overridden by the settings given. A
    /// template that names a built-in prompt selects it; anything else is a file.
    pub fn config(&self) -> JudgeConfig {
        let d = JudgeConfig::default();
        let (template, template_path) = match self.template.as_deref() {
            None => (d.template.clone(), None),
            Some(t) if JudgeTemplate::builtin(t).is_some() => (t.to_string(), None),
            Some(file) => (d.template.clone(), Some(PathBuf::from(file))),
        };
        JudgeConfig {
            mode: self.mode,
            template,
            template_path,
            samples: self.samples.unwrap_or(d.samples),
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            max_new_tokens: self.max_new_tokens.unwrap_or(d.max_new_tokens),
            seed: self.seed.unwrap_or(d.seed),
            batch_size: 0,
            top_logprobs: self.top_logprobs.unwrap_or(d.top_logprobs),
            min_digit_mass: self.min_digit_mass.unwrap_or(d.min_digit_mass),
        }
    }
}

/// Judges `items` (`records[i]` is the input line of `items[i]`) `block` at a time: each
/// block's lines get their verdict's fields, then `on_block` receives the block's lines and
/// verdicts (to write them as they finish). Returns the counts over all verdicts.
pub fn judge_blocks(
    judge: &mut dyn Judge,
    records: &mut [JsonlRecord],
    items: &[JudgeItem],
    block: usize,
    mut on_block: impl FnMut(&[JsonlRecord], &[Verdict]) -> Result<()>,
) -> Result<JudgeStats> {
    ensure!(block > 0, "the block size must be at least 1");
    let mut stats = JudgeStats::default();
    for (recs, block) in records.chunks_mut(block).zip(items.chunks(block)) {
        let verdicts: Vec<Verdict> = judge.judge(block)?;
        stats.add(&JudgeStats::of(&verdicts));
        for (r, v) in recs.iter_mut().zip(&verdicts) {
            annotate(&mut r.fields, v);
        }
        on_block(recs, &verdicts)?;
        tracing::info!(done = stats.items, total = items.len(), "items judged");
    }
    tracing::info!(
        items = stats.items,
        unscored_items = stats.unscored_items,
        samples = stats.samples,
        unparsed_samples = stats.unparsed_samples,
        unfinished_samples = stats.unfinished_samples,
        completion_tokens = stats.completion_tokens,
        digit_mass_mean = ?stats.digit_mass_mean(),
        digit_mass_min = ?stats.digit_mass_min,
        "judging done"
    );
    Ok(stats)
}

/// What [`judge_eval`] judges, and with what.
#[derive(Clone, Debug)]
pub struct JudgeEvalOptions {
    /// The judge model: a built-in name, a Hugging Face folder or a .gguf file.
    pub model: String,
    pub device: Device,
    /// Pairs (JSON lines `{id, kind, prompt, better, worse}`); `None`: the built-in set.
    pub pairs: Option<PathBuf>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<PairKind>,
    /// At most this many pairs of each kind (the first ones, in order).
    pub limit: Option<usize>,
    /// How the built-in set is built (`per_kind`, `seed`).
    pub builtin: PairSetOptions,
    pub judge: JudgeConfig,
    /// Most sequences the sampler decodes together.
    pub max_batch: usize,
    /// Pairs judged per block (progress is logged after each).
    pub block: usize,
}

/// What [`judge_eval`] found.
#[derive(Debug)]
pub struct JudgeEvalOutcome {
    /// Accuracy overall and per kind; its `records` hold one line per pair.
    pub report: JudgeEvalReport,
    /// The report with what produced it: tsr version, the judge model's identity, the pairs'
    /// source and hash, the judge configuration.
    pub document: Value,
}

/// The pairs to judge: the file or the built-in set, filtered by kind, limited per kind; and
/// where they came from.
pub fn select_pairs(options: &JudgeEvalOptions) -> Result<(Vec<JudgePair>, Value)> {
    let (pairs, source) = match &options.pairs {
        Some(p) => (read_pairs(p)?, json!({"file": p})),
        None => {
            let b = &options.builtin;
            let source = json!({
                "builtin": {"per_kind": b.per_kind, "seed": b.seed, "truncation_min_chars": b.truncation_min_chars},
            });
            (crate::eval_data::builtin_pairs(b)?, source)
        }
    };
    Ok((filter_pairs(pairs, &options.kinds, options.limit), source))
}

/// Keeps the pairs of `kinds` (all when empty), at most `limit` of each kind, in order.
pub fn filter_pairs(
    pairs: Vec<JudgePair>,
    kinds: &[PairKind],
    limit: Option<usize>,
) -> Vec<JudgePair> {
    let wanted: BTreeSet<PairKind> = kinds.iter().copied().collect();
    let mut taken = BTreeMap::<PairKind, usize>::new();
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

/// Judge accuracy of `options.model` on the selected pairs: each answer judged on its own by
/// the LLM judge, pairs in blocks of `options.block`.
pub fn judge_eval(options: &JudgeEvalOptions) -> Result<JudgeEvalOutcome> {
    ensure!(options.block > 0, "the block size must be at least 1");
    let settings = options.judge.validate()?;
    let (pairs, pair_source) = select_pairs(options)?;
    ensure!(!pairs.is_empty(), "no pairs to judge");
    tracing::info!(pairs = pairs.len(), "judge-eval pairs selected");

    let loaded = load_model(&options.model, options.device)?;
    let mut judge = LlmJudge::new(batch_sampler(&loaded, options.max_batch), settings);

    let mut records = Vec::with_capacity(pairs.len());
    let mut stats = JudgeStats::default();
    for block in pairs.chunks(options.block) {
        let (r, s) = score_pairs(&mut judge, block)?;
        records.extend(r);
        stats.add(&s);
        tracing::info!(done = records.len(), total = pairs.len(), "pairs judged");
    }
    let report = JudgeEvalReport::from_records(records, stats);
    for (kind, t) in &report.by_kind {
        tracing::info!(%kind, pairs = t.pairs, correct = t.correct, wrong = t.wrong, ties = t.ties, unscored = t.unscored, accuracy = ?t.accuracy, "judge accuracy");
    }
    let document = json!({
        "tsr_version": env!("CARGO_PKG_VERSION"),
        "model": model_identity(&options.model, &loaded.source)?,
        "pairs_sha256": jsonl_sha256(&pairs),
        "pair_count": pairs.len(),
        "judge": options.judge,
        "pairs": pair_source,
        "kinds": report.by_kind.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        "limit_per_kind": options.limit,
        "report": report,
    });
    Ok(JudgeEvalOutcome { report, document })
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
        let o = JudgeOverrides {
            samples: Some(1),
            template: Some("short".into()),
            ..JudgeOverrides::default()
        };
        let s = o.config().validate().unwrap();
        assert_eq!(s.template().text(), tsr_judge::SHORT);
        assert_eq!(s.samples(), 1);
        // Anything that is not a built-in name is a file.
        let c = JudgeOverrides {
            template: Some("my-judge.txt".into()),
            ..JudgeOverrides::default()
        }
        .config();
        assert_eq!(c.template_path, Some(PathBuf::from("my-judge.txt")));
        assert_eq!(c.template, JudgeConfig::default().template);
    }

    #[test]
    fn blocks_are_annotated_and_handed_over_in_order() {
        let text = "{\"prompt\":\"2+2?\",\"response\":\"4\",\"reference\":\"#### 4\",\"x\":1}\n\
                    {\"prompt\":\"3+3?\",\"response\":\"7\",\"reference\":\"#### 6\"}\n\
                    {\"prompt\":\"1+1?\",\"response\":\"2\",\"reference\":\"#### 2\"}\n";
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("in.jsonl");
        std::fs::write(&path, text).unwrap();
        let (mut records, items) = tsr_judge::jsonl::read_judge_input(&path).unwrap();
        let mut seen = Vec::new();
        let stats = judge_blocks(
            &mut tsr_judge::VerifierJudge::default(),
            &mut records,
            &items,
            2,
            |recs, verdicts| {
                assert_eq!(recs.len(), verdicts.len());
                seen.push(recs.len());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, [2, 1]);
        assert_eq!(stats.items, 3);
        let scores: Vec<_> = records
            .iter()
            .map(|r| r.fields.get("score").cloned())
            .collect();
        assert_eq!(
            scores,
            [Some(json!(1.0)), Some(json!(0.0)), Some(json!(1.0))]
        );
    }
}
