//! The records a run folder holds (JSON / JSON lines).

use crate::backend::TrainReport;
use serde::{Deserialize, Serialize};
use tsr_curate::{Decision, Pool};
use tsr_judge::Completion;
use tsr_judge::JudgeSample;

/// The K completions one model sampled for one prompt (one line of `gen-*/NNNNN.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub prompt_id: String,
    pub pool: Pool,
    /// The model's stable name (`m0`, `iter-001/model-future`, ...).
    pub model: String,
    pub seed: u64,
    pub completions: Vec<Completion>,
    /// `P_0` only: the iteration that first sampled these (they are reused, not re-sampled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<u32>,
}

/// The judge's verdict on one response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseVerdict {
    pub index: usize,
    /// The judge item id (`iter-NNN/POOL/PROMPT_ID/INDEX`); with the stage seed it seeds the
    /// judge samples.
    pub item: String,
    /// Mean of the parsed samples; `None` when none parsed (the response is then unscored).
    pub score: Option<f64>,
    /// Every judge sample: raw text, finish reason, parsed score or failure, token counts.
    pub samples: Vec<JudgeSample>,
}

impl ResponseVerdict {
    /// Judge compute: the judge prompt once (its prefill is shared by the samples) plus every
    /// generated token.
    pub fn tokens(&self) -> u64 {
        let prompt = self.samples.first().map_or(0, |s| s.prompt_tokens);
        (prompt
            + self
                .samples
                .iter()
                .map(|s| s.completion_tokens)
                .sum::<usize>()) as u64
    }
}

/// The verdicts on all responses of one prompt's pool (one line of `judge-*/NNNNN.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub prompt_id: String,
    pub pool: Pool,
    /// The judge model's stable name (always the iteration's `M_i`).
    pub judge: String,
    /// The stage seed the items' seeds derive from.
    pub seed: u64,
    pub verdicts: Vec<ResponseVerdict>,
}

impl VerdictRecord {
    /// The scores in response order.
    pub fn scores(&self) -> Vec<Option<f64>> {
        self.verdicts.iter().map(|v| v.score).collect()
    }
}

/// One curation decision (one line of `decisions-N.jsonl`, for every prompt of the iteration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub prompt_id: String,
    #[serde(flatten)]
    pub decision: Decision,
}

/// One side of a kept pair with its text and judge samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairSide {
    pub pool: Pool,
    pub index: usize,
    pub score: f64,
    pub text: String,
    pub token_ids: Vec<u32>,
    pub judge_samples: Vec<JudgeSample>,
}

/// A kept preference pair (one line of `pairs-N.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub prompt_id: String,
    pub prompt: String,
    pub chosen: PairSide,
    pub rejected: PairSide,
    #[serde(default)]
    pub replaced_from_future: bool,
}

/// The completion record of one stage (`iter-NNN/done/STAGE.json`, and one line of
/// `metrics.jsonl`). Everything but `wall_s` is a function of the run's data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub kind: String,
    pub iteration: u32,
    pub stage: String,
    pub wall_s: f64,
    /// Completion tokens sampled in this stage (reused `P_0` samples excluded).
    pub tokens_generated: u64,
    /// Prompt tokens fed to sampling in this stage (once per prompt: its K samples share the
    /// prefill).
    pub generation_prompt_tokens: u64,
    /// Judge prompt + judge generated tokens.
    pub tokens_judged: u64,
    /// DPO tokens x epochs.
    pub tokens_trained: u64,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// The training result recorded in a train stage's `details`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainDetails {
    /// The resulting model's stable name (the init model's when there was nothing to train).
    pub model: String,
    pub trained: bool,
    pub report: Option<TrainReport>,
    /// Why nothing was trained (no pairs), when `trained` is false. For train-future (TSR's
    /// `M_f`) an empty `D_1` means there is no future model: `gen-future` and `judge-future`
    /// then sample and judge nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_reason: Option<String>,
}
