//! The seam between the loop and real models: the CLI implements [`Backend`] with libtorch
//! models (tsr-model, tsr-sample, tsr-judge, tsr-dpo); tests implement it with a fake.

use crate::error::BackendError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tsr_judge::{
    Completion, GenRequest, JudgeItem, PairwiseItem, PairwiseMode, PairwiseVerdict, SamplingParams,
    Verdict,
};

/// A model the backend can load: `M_0` (a name or folder from the configuration) or a checkpoint
/// folder the backend wrote during the run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// Stable name used in records: `m0` or the checkpoint's path relative to the run folder
    /// (`iter-001/model`), so records do not depend on where the run folder lives.
    pub name: String,
    /// What to load: the configured model spec for `m0`, an absolute folder for checkpoints.
    pub location: String,
}

impl ModelRef {
    /// The seed model `M_0`.
    pub fn initial(spec: &str) -> Self {
        Self {
            name: "m0".into(),
            location: spec.to_string(),
        }
    }
    /// A checkpoint folder inside the run folder.
    pub fn checkpoint(run_dir: &Path, relative: &str) -> Self {
        Self {
            name: relative.to_string(),
            location: run_dir.join(relative).display().to_string(),
        }
    }
}

/// One preference pair to train on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPair {
    pub prompt_id: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    /// Sampled token ids (the backend may use them instead of re-tokenizing the text).
    pub chosen_token_ids: Vec<u32>,
    pub rejected_token_ids: Vec<u32>,
}

/// What a DPO training run reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub pairs: usize,
    pub epochs: usize,
    pub steps: usize,
    /// Tokens trained on (prompt + chosen + rejected, times epochs): the compute the run used.
    pub tokens: u64,
    /// TRL's `rewards/margins` averaged over the optimizer steps of the last epoch
    /// ([`TrainReport::last_epoch_mean`] of `steps_log`). Each step's value is TRL's: the mean
    /// over the step's pairs of `β·(log π(y_w|x) − log π_ref(y_w|x)) − β·(log π(y_l|x) −
    /// log π_ref(y_l|x))`. The last epoch, not every step, so the number describes the trained
    /// model rather than the untrained start (with one epoch the two are the same).
    pub reward_margin: Option<f64>,
    /// TRL's `rewards/accuracies` (share of the step's pairs whose chosen reward exceeds the
    /// rejected one) averaged over the steps of the last epoch, like `reward_margin`.
    pub reward_accuracy: Option<f64>,
    pub final_loss: Option<f64>,
    /// Whether the completions were trained as the token ids that were sampled (`false`: their
    /// text was tokenized again, for a backend that has no ids).
    #[serde(default)]
    pub sampled_ids: bool,
    /// With sampled ids: how many completions (chosen and rejected counted apart) do not end
    /// with an end-of-sequence token, i.e. were cut by the length limit; they are trained as
    /// cut, with no EOS appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated_completions: Option<usize>,
    /// Per-step metrics (TRL names), written to `train-*.jsonl` in the iteration folder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps_log: Vec<serde_json::Value>,
}

impl TrainReport {
    /// The mean of the number `key` (a TRL name such as `rewards/margins`) over the steps of the
    /// last epoch of a step log: the steps whose `epoch` (the fractional epoch reached after the
    /// step, as TRL logs it) rounds up to the same whole epoch as the last step's. Steps without
    /// an `epoch` count as one epoch; steps without `key` are skipped. `None` when no step has
    /// `key`. This is the one definition of [`TrainReport::reward_margin`] and
    /// [`TrainReport::reward_accuracy`]; backends should compute them with it.
    pub fn last_epoch_mean(steps_log: &[serde_json::Value], key: &str) -> Option<f64> {
        // An epoch of exactly 2.0 (float noise allowed) ends epoch 2, so it belongs to it.
        let epoch_of = |v: &serde_json::Value| v["epoch"].as_f64().map(|e| (e - 1e-9).ceil());
        let last = steps_log.iter().rev().find_map(epoch_of);
        let (sum, n) = steps_log
            .iter()
            .filter(|v| epoch_of(v) == last)
            .filter_map(|v| v[key].as_f64())
            .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        (n > 0).then(|| sum / n as f64)
    }
}

/// How a run's numbers are produced, recorded in the run folder (`provenance.json`) and in every
/// iteration summary. A run resumed with a backend of a different provenance is refused, so one
/// run folder never mixes two judges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// What generates and trains (for example `libtorch (tsr-sample, tsr-dpo)`).
    pub backend: String,
    /// What judges, with the settings that change scores (mode, template, samples).
    pub judge: String,
    /// Test doubles in use (a hash judge, a fake backend). When this is not empty, the run's
    /// scores, pairs or models are not real results, and the summaries say so.
    #[serde(default)]
    pub test_doubles: Vec<String>,
}

/// Everything the loop needs from real models.
///
/// Every method must be deterministic given its inputs (seeds included) for a resumed run to
/// equal an uninterrupted one.
pub trait Backend {
    /// Sample `request.n` completions per request from `model` (see [`tsr_judge::Generator`]).
    fn generate(
        &mut self,
        model: &ModelRef,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, BackendError>;

    /// Judge each item with `judge` as the LLM judge (tsr-judge's `LlmJudge` with the run's
    /// `[judge]` settings); one [`Verdict`] per item, in order. Item `i`'s samples must be
    /// seeded from `(seed, items[i].id)` only (as `tsr_judge::item_seed` does), so a verdict
    /// does not depend on the other items of the call.
    fn judge(
        &mut self,
        judge: &ModelRef,
        items: &[JudgeItem],
        seed: u64,
    ) -> Result<Vec<Verdict>, BackendError>;

    /// Train `DPO(init = init, ref = init, pairs)` and save the result as a model folder at
    /// `out_dir` (which the loop creates empty).
    fn train_dpo(
        &mut self,
        init: &ModelRef,
        pairs: &[TrainPair],
        out_dir: &Path,
        seed: u64,
    ) -> Result<TrainReport, BackendError>;

    /// For each pair, the cosine similarity under `model` of the last-layer hidden states of the
    /// chosen and of the rejected response, each averaged over its completion tokens.
    fn representation_similarity(
        &mut self,
        model: &ModelRef,
        pairs: &[TrainPair],
    ) -> Result<Vec<f64>, BackendError>;

    /// Compare two answers per item with `judge` as a pairwise judge (tsr-judge's
    /// `LlmPairwiseJudge` in `mode`, built-in pairwise prompt); one verdict per item, in order.
    /// Sampled verdicts must be seeded from `(seed, items[i].id)` only. Needed by `[eval]`; a
    /// backend without it fails the eval stage with this default's error.
    fn compare(
        &mut self,
        judge: &ModelRef,
        items: &[PairwiseItem],
        mode: PairwiseMode,
        seed: u64,
    ) -> Result<Vec<PairwiseVerdict>, BackendError> {
        let _ = (judge, items, mode, seed);
        Err("this backend cannot compare answers pairwise; remove [eval] from the config".into())
    }

    /// What this backend is and how it judges (see [`Provenance`]).
    fn provenance(&self) -> Provenance;
}

impl<B: Backend + ?Sized> Backend for &mut B {
    fn generate(
        &mut self,
        model: &ModelRef,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, BackendError> {
        (**self).generate(model, requests, params)
    }
    fn judge(
        &mut self,
        judge: &ModelRef,
        items: &[JudgeItem],
        seed: u64,
    ) -> Result<Vec<Verdict>, BackendError> {
        (**self).judge(judge, items, seed)
    }
    fn train_dpo(
        &mut self,
        init: &ModelRef,
        pairs: &[TrainPair],
        out_dir: &Path,
        seed: u64,
    ) -> Result<TrainReport, BackendError> {
        (**self).train_dpo(init, pairs, out_dir, seed)
    }
    fn representation_similarity(
        &mut self,
        model: &ModelRef,
        pairs: &[TrainPair],
    ) -> Result<Vec<f64>, BackendError> {
        (**self).representation_similarity(model, pairs)
    }
    fn compare(
        &mut self,
        judge: &ModelRef,
        items: &[PairwiseItem],
        mode: PairwiseMode,
        seed: u64,
    ) -> Result<Vec<PairwiseVerdict>, BackendError> {
        (**self).compare(judge, items, mode, seed)
    }
    fn provenance(&self) -> Provenance {
        (**self).provenance()
    }
}

/// Progress events for a front end (bars on a terminal, lines in a log).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    IterationStarted {
        iteration: u32,
        of: u32,
    },
    /// `total` is in the stage's unit (prompts for sampling and judging, 1 otherwise).
    StageStarted {
        iteration: u32,
        stage: &'static str,
        total: u64,
    },
    StageProgress {
        iteration: u32,
        stage: &'static str,
        done: u64,
        total: u64,
    },
    StageFinished {
        iteration: u32,
        stage: &'static str,
        wall_s: f64,
    },
    /// Found complete in the run folder (resume).
    StageSkipped {
        iteration: u32,
        stage: &'static str,
    },
}

/// Receives [`Event`]s.
pub trait Observer {
    fn event(&mut self, event: &Event);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn event(&mut self, _: &Event) {}
}

/// Absolute path helper for backends.
pub fn abs(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reward_margin_is_the_mean_over_the_last_epoch() {
        // Two epochs of two steps: the last epoch is steps 3 and 4 (epoch 1.5 and 2.0).
        let log: Vec<_> = [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0), (2.0, 5.0)]
            .iter()
            .map(|(e, m)| json!({"epoch": e, "rewards/margins": m}))
            .collect();
        assert_eq!(
            TrainReport::last_epoch_mean(&log, "rewards/margins"),
            Some(4.0)
        );
        // Float noise at an epoch boundary does not move a step into the next epoch.
        let log = vec![
            json!({"epoch": 1.0000000000000002, "rewards/margins": 1.0}),
            json!({"epoch": 1.5, "rewards/margins": 3.0}),
            json!({"epoch": 2.0, "rewards/margins": 5.0}),
        ];
        assert_eq!(
            TrainReport::last_epoch_mean(&log, "rewards/margins"),
            Some(4.0)
        );
        // A stop in the middle of an epoch (max_steps): the partial last epoch.
        let log = vec![
            json!({"epoch": 1.0, "rewards/margins": 1.0}),
            json!({"epoch": 1.25, "rewards/margins": 7.0}),
        ];
        assert_eq!(
            TrainReport::last_epoch_mean(&log, "rewards/margins"),
            Some(7.0)
        );
        // No epochs logged: all steps are one epoch.
        let log = vec![
            json!({"rewards/margins": 1.0}),
            json!({"rewards/margins": 2.0}),
        ];
        assert_eq!(
            TrainReport::last_epoch_mean(&log, "rewards/margins"),
            Some(1.5)
        );
        assert_eq!(TrainReport::last_epoch_mean(&[], "rewards/margins"), None);
        assert_eq!(TrainReport::last_epoch_mean(&log, "missing"), None);
    }
}
