//! The typed iteration summary: what `iter-NNN/summary.json` holds (and, one per finished
//! iteration, the run's `summary.json` and the `kind: "iteration"` lines of `metrics.jsonl`).
//!
//! The loop builds an [`IterationSummary`] at the end of each iteration; the report
//! ([`crate::report`]) reads it back. Reading is lenient so that folders written by earlier
//! versions still read: every scalar is an `Option` (a field an older summary lacks reads as
//! `None`, as does a `null`), maps and nested objects read as empty, and unknown fields are
//! ignored.
//!
//! The files are written through a [`serde_json::Value`]: without serde_json's
//! `preserve_order` feature (off in this workspace; a test checks it) its maps sort their keys,
//! so every object in the files has its keys in alphabetical order, whatever the order of the
//! fields below, as the files have always had them.
//!
//! ```no_run
//! use tsr_loop::summary::IterationSummary;
//!
//! let text = std::fs::read_to_string("runs/tsr/iter-001/summary.json")?;
//! let s: IterationSummary = serde_json::from_str(&text)?;
//! println!("score gap {:?}, {} pairs", s.score_gap, s.pairs.unwrap_or(0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::backend::{Provenance, TrainReport};
use crate::config::Method;
use crate::error::{LoopError, Result};
use crate::fsio;
use crate::records::{PairRecord, TrainDetails};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One iteration's summary (`iter-NNN/summary.json`): scores, shares, DPO metrics, judging
/// and curation counts, the optional evaluation, compute, and how the results were produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IterationSummary {
    /// The iteration number (1-based).
    pub iteration: Option<u32>,
    /// The run's method.
    pub method: Option<Method>,
    /// The run's provenance (`provenance.json`); `null` when the folder has none.
    pub provenance: Option<Provenance>,
    /// The test doubles the run used (the provenance's); empty for real results.
    pub test_doubles: Vec<String>,
    /// Whether no test double was used: the scores, pairs and models are real results.
    pub results_are_real: Option<bool>,
    /// Prompts of this iteration (its fresh chunk).
    pub prompts: Option<usize>,
    /// `M_i`, the model the iteration started from (`m0` or `iter-NNN/model`).
    pub model: Option<String>,
    /// `M_{i+1}`, the model the iteration trained (`M_i`'s name when nothing was trained).
    pub trained_model: Option<String>,
    /// Final preference pairs (`D_2` for the methods with a future model, else `D_1`).
    pub pairs: Option<usize>,
    /// Mean judge score of the final pairs' chosen responses (`null` without pairs).
    pub chosen_score_mean: Option<f64>,
    /// Mean judge score of the final pairs' rejected responses (`null` without pairs).
    pub rejected_score_mean: Option<f64>,
    /// `chosen_score_mean - rejected_score_mean`.
    pub score_gap: Option<f64>,
    /// Share of final pairs whose rejected response comes from `P_0` (methods with anchored
    /// rejection; `null` for the others and without pairs).
    pub rejected_from_initial_share: Option<f64>,
    /// Share of final pairs whose chosen response comes from `P_f` (methods with a future
    /// model; `null` for the others and without pairs).
    pub chosen_from_future_share: Option<f64>,
    /// Mean cosine similarity of the final pairs' chosen and rejected hidden states under `M_i`
    /// (`null` when not measured).
    pub similarity_mean: Option<f64>,
    /// DPO of `M_{i+1}` (the `train` stage).
    pub dpo: Option<DpoSummary>,
    /// DPO of the future model `M_f` (the `train-future` stage; `null` for the methods without
    /// one).
    pub dpo_future: Option<DpoSummary>,
    /// Curation counts of both phases.
    pub curation: CurationSummary,
    /// Judging counts by judge stage name (`judge-current`, `judge-initial`, `judge-future`).
    pub judging: BTreeMap<String, JudgingSummary>,
    /// Win rates of `M_{i+1}` (the `eval` stage; `null` without `[eval]`).
    pub eval: Option<EvalSummary>,
    /// Tokens and wall seconds of this iteration, by stage and summed, and cumulative tokens.
    pub compute: ComputeSummary,
}

/// What a DPO stage did (`dpo` / `dpo_future` of an [`IterationSummary`]). The numbers are
/// those of the stage's [`TrainReport`]; all `null` when nothing was trained.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpoSummary {
    /// The resulting model's name (the initial model's when nothing was trained).
    pub model: Option<String>,
    /// Whether a model was trained.
    pub trained: Option<bool>,
    /// Preference pairs trained on.
    pub pairs: Option<usize>,
    /// TRL's `rewards/margins`, averaged over the last epoch's steps.
    pub reward_margin: Option<f64>,
    /// TRL's `rewards/accuracies`, averaged over the last epoch's steps.
    pub reward_accuracy: Option<f64>,
    /// The loss of the last step.
    pub final_loss: Option<f64>,
    /// Optimizer steps.
    pub steps: Option<usize>,
    /// Whether the completions were trained as the token ids that were sampled.
    pub sampled_ids: Option<bool>,
    /// With sampled ids: completions cut by the length limit (no EOS).
    pub truncated_completions: Option<usize>,
    /// Why nothing was trained; only present when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_reason: Option<String>,
}

impl DpoSummary {
    /// The summary of a train stage's details.
    pub fn from_details(d: &TrainDetails) -> Self {
        let r: Option<&TrainReport> = d.report.as_ref();
        Self {
            model: Some(d.model.clone()),
            trained: Some(d.trained),
            pairs: r.map(|r| r.pairs),
            reward_margin: r.and_then(|r| r.reward_margin),
            reward_accuracy: r.and_then(|r| r.reward_accuracy),
            final_loss: r.and_then(|r| r.final_loss),
            steps: r.map(|r| r.steps),
            sampled_ids: r.map(|r| r.sampled_ids),
            truncated_completions: r.and_then(|r| r.truncated_completions),
            skipped_reason: d.skipped_reason.clone(),
        }
    }
}

/// The two curation phases (`curation` of an [`IterationSummary`]); a phase the method does
/// not run is `null`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CurationSummary {
    /// Phase 1 (`curate-1`: SR's best/worst or anchored rejection), giving `D_1`.
    pub phase1: Option<CurationPhase>,
    /// Phase 2 (`curate-2`: future-guided chosen), giving `D_2`.
    pub phase2: Option<CurationPhase>,
}

/// The counts of one curation phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CurationPhase {
    /// Prompts that gave a pair.
    pub kept: Option<usize>,
    /// Prompts that gave none, by reason.
    pub dropped: Option<BTreeMap<String, usize>>,
    /// Score statistics of the kept pairs.
    pub pairs: Option<PairStats>,
}

/// Score statistics of a set of preference pairs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PairStats {
    /// Number of pairs.
    pub count: Option<usize>,
    /// Mean judge score of the chosen responses (`null` without pairs).
    pub chosen_score_mean: Option<f64>,
    /// Mean judge score of the rejected responses (`null` without pairs).
    pub rejected_score_mean: Option<f64>,
    /// `chosen_score_mean - rejected_score_mean`.
    pub score_gap: Option<f64>,
}

impl PairStats {
    /// The statistics of `pairs`.
    pub fn of(pairs: &[PairRecord]) -> Self {
        let c = mean(pairs.iter().map(|p| p.chosen.score));
        let r = mean(pairs.iter().map(|p| p.rejected.score));
        Self {
            count: Some(pairs.len()),
            chosen_score_mean: c,
            rejected_score_mean: r,
            score_gap: c.zip(r).map(|(c, r)| c - r),
        }
    }
}

/// The counts of one judge stage (an entry of `judging`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JudgingSummary {
    /// Responses judged.
    pub responses: Option<usize>,
    /// Responses left without a score (no judge sample gave a valid verdict).
    pub unscored_responses: Option<usize>,
    /// Judge samples without a valid verdict.
    pub unparsed_samples: Option<usize>,
    /// Mean probability mass on the score digits (probability modes; `null` otherwise).
    pub digit_mass_mean: Option<f64>,
    /// Least probability mass on the score digits (probability modes; `null` otherwise).
    pub digit_mass_min: Option<f64>,
}

/// The `eval` stage's results: win rates of `M_{i+1}` against `M_i` and `M_0`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalSummary {
    /// Held-out prompts.
    pub prompts: Option<usize>,
    /// The pairwise judge's model name.
    pub judge: Option<String>,
    /// The pairwise judging mode.
    pub mode: Option<String>,
    /// `M_{i+1}` against `M_i`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_previous: Option<EvalMatchup>,
    /// `M_{i+1}` against `M_0` (absent with `vs_initial = false`; in iteration 1 the same as
    /// `vs_previous`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_initial: Option<EvalMatchup>,
}

/// One head-to-head evaluation: [`tsr_judge::WinRateReport`] and the two models' names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalMatchup {
    /// The evaluated model (`M_{i+1}`).
    pub model: Option<String>,
    /// The model it is compared with.
    pub opponent: Option<String>,
    /// Prompts compared.
    pub prompts: Option<usize>,
    /// Prompts with both verdicts read.
    pub n: Option<usize>,
    /// Scored prompts where `model` scored above ½ (both orders together).
    pub wins: Option<usize>,
    /// Scored prompts where `model` scored below ½.
    pub losses: Option<usize>,
    /// Scored prompts where `model` scored exactly ½.
    pub ties: Option<usize>,
    /// Prompts without a score (a verdict unread).
    pub unscored: Option<usize>,
    /// Mean prompt score over the `n` scored prompts (ties half).
    pub win_rate: Option<f64>,
    /// 95% percentile-bootstrap interval of `win_rate`.
    pub ci_low: Option<f64>,
    /// Upper end of the interval.
    pub ci_high: Option<f64>,
    /// Of the read verdicts that were not ties, the share that chose position `A`.
    pub first_position_share: Option<f64>,
    /// Seed of the bootstrap.
    pub bootstrap_seed: Option<u64>,
}

impl EvalMatchup {
    /// A win-rate report of `model` against `opponent`.
    pub fn new(report: tsr_judge::WinRateReport, model: &str, opponent: &str) -> Self {
        // Destructured whole, so a field added to the report is not forgotten here.
        let tsr_judge::WinRateReport {
            prompts,
            n,
            wins,
            losses,
            ties,
            unscored,
            win_rate,
            ci_low,
            ci_high,
            first_position_share,
            bootstrap_seed,
        } = report;
        Self {
            model: Some(model.to_string()),
            opponent: Some(opponent.to_string()),
            prompts: Some(prompts),
            n: Some(n),
            wins: Some(wins),
            losses: Some(losses),
            ties: Some(ties),
            unscored: Some(unscored),
            win_rate,
            ci_low,
            ci_high,
            first_position_share,
            bootstrap_seed: Some(bootstrap_seed),
        }
    }
}

/// The compute of one iteration (`compute` of an [`IterationSummary`]): tokens of all its stages
/// (the `eval` stage included) and their wall seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ComputeSummary {
    /// Completion tokens sampled (reused `P_0` samples excluded).
    pub tokens_generated: Option<u64>,
    /// Prompt tokens fed to sampling (once per prompt).
    pub generation_prompt_tokens: Option<u64>,
    /// Judge prompt and judge generated tokens.
    pub tokens_judged: Option<u64>,
    /// DPO tokens times epochs.
    pub tokens_trained: Option<u64>,
    /// Wall seconds of the stages before `summary`.
    pub wall_s: Option<f64>,
    /// Each stage's share, by stage name.
    pub stages: BTreeMap<String, StageCompute>,
    /// Tokens of this and all earlier iterations.
    pub cumulative: CumulativeCompute,
}

/// One stage's compute (an entry of `compute.stages`). The `summary` stage has only `wall_s`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageCompute {
    /// Wall seconds of the stage.
    pub wall_s: Option<f64>,
    /// Completion tokens the stage sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_generated: Option<u64>,
    /// Judge tokens of the stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_judged: Option<u64>,
    /// DPO tokens of the stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_trained: Option<u64>,
}

/// Tokens up to and including an iteration (`compute.cumulative`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CumulativeCompute {
    /// Completion tokens sampled.
    pub tokens_generated: Option<u64>,
    /// Judge tokens.
    pub tokens_judged: Option<u64>,
    /// DPO tokens.
    pub tokens_trained: Option<u64>,
}

/// The run's `summary.json`: every finished iteration's summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's method.
    pub method: Method,
    /// Each finished iteration's `iter-NNN/summary.json`, verbatim (an [`IterationSummary`] as
    /// the version that ran the iteration wrote it).
    pub iterations: Vec<Value>,
}

/// The mean of some numbers; `None` for none.
pub(crate) fn mean(it: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// A serializable value as a [`serde_json::Value`]: objects with their keys sorted.
pub(crate) fn to_sorted_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| LoopError::Config(e.to_string()))
}

/// Write `value` as pretty JSON (like [`fsio::write_json`]) with the keys of every object in
/// alphabetical order, as the run folder's summary files have always had them.
pub(crate) fn write_sorted<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    fsio::write_json(path, &to_sorted_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_keys_are_sorted() {
        // serde_json's `preserve_order` would keep the field order instead and change the files.
        let s = IterationSummary {
            dpo: Some(DpoSummary::default()),
            ..IterationSummary::default()
        };
        let v = to_sorted_value(&s).unwrap();
        for o in [&v, &v["dpo"], &v["compute"]] {
            let keys: Vec<&String> = o.as_object().unwrap().keys().collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted);
        }
    }

    #[test]
    fn older_summaries_read_with_absent_fields_as_none() {
        let s: IterationSummary = serde_json::from_str(
            r#"{"iteration": 2, "pairs": 4, "dpo": {"final_loss": 0.5}, "later_field": [1],
                "compute": {"stages": {"train": {"wall_s": 3.0}}}}"#,
        )
        .unwrap();
        assert_eq!((s.iteration, s.pairs, s.eval), (Some(2), Some(4), None));
        assert_eq!(s.dpo.unwrap().final_loss, Some(0.5));
        assert_eq!(s.compute.stages["train"].tokens_trained, None);
        assert_eq!(s.compute.cumulative.tokens_generated, None);
        assert!(s.test_doubles.is_empty() && s.results_are_real.is_none());
    }
}
