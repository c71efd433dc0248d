//! Step metrics and where they go: [`StepMetrics`] (DPO's numbers under TRL's names), the
//! [`MetricsSink`] trait, and two sinks (in memory, and `metrics.jsonl`). The SFT trainer uses
//! the same sinks with its own record type.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DpoError, Result};

/// One optimizer step's numbers, serialised with TRL's metric names (one JSON line each).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer step, 1-based.
    pub step: u64,
    /// Fractional epoch reached after this step.
    pub epoch: f64,
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    /// Mean chosen reward `β(πc - rc)`.
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    /// Mean rejected reward.
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    /// Mean reward margin.
    #[serde(rename = "rewards/margins")]
    pub rewards_margins: f64,
    /// Fraction of pairs with chosen reward > rejected reward.
    #[serde(rename = "rewards/accuracies")]
    pub rewards_accuracies: f64,
    /// Mean summed log-prob of the chosen completions under the policy.
    #[serde(rename = "logps/chosen")]
    pub logps_chosen: f64,
    /// Mean summed log-prob of the rejected completions under the policy.
    #[serde(rename = "logps/rejected")]
    pub logps_rejected: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used for this step.
    pub learning_rate: f64,
    /// Non-padding tokens of the step's sequences (prompt and completion, chosen and rejected;
    /// a prompt computed once for both completions, `share_prompt`, still counts twice) per
    /// second.
    #[serde(rename = "tokens/s")]
    pub tokens_per_s: f64,
    /// Pairs in this step.
    pub pairs: usize,
    /// Wall-clock seconds of this step.
    pub step_seconds: f64,
}

/// Where step metrics go (DPO's [`StepMetrics`] by default, or SFT's
/// [`SftMetrics`](crate::sft::SftMetrics)).
pub trait MetricsSink<M = StepMetrics> {
    /// Records one step.
    fn record(&mut self, m: &M) -> Result<()>;
}

/// Keeps every record in memory.
#[derive(Debug)]
pub struct VecSink<M = StepMetrics>(pub Vec<M>);

impl<M> Default for VecSink<M> {
    fn default() -> Self {
        VecSink(Vec::new())
    }
}

impl<M: Clone> MetricsSink<M> for VecSink<M> {
    fn record(&mut self, m: &M) -> Result<()> {
        self.0.push(m.clone());
        Ok(())
    }
}

/// Appends one JSON object per step to a file (`metrics.jsonl`), flushed after each line.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: std::fs::File,
}

impl JsonlSink {
    /// Opens `path` for appending (creating it).
    pub fn append(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DpoError::io(path, e))?;
        Ok(JsonlSink {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens `path` for a run that continues after `steps_done` optimizer steps: keeps the
    /// lines of steps `1..=steps_done` (those a resumed checkpoint covers) and drops every other
    /// line, so a resumed run writes each step once and a fresh run (`steps_done = 0`) starts an
    /// empty file rather than appending to an old one. Lines are matched on their `step` field.
    pub fn resume(path: &Path, steps_done: u64) -> Result<Self> {
        let kept: String = match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s <= steps_done)
                })
                .map(|l| format!("{l}\n"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(DpoError::io(path, e)),
        };
        std::fs::write(path, kept).map_err(|e| DpoError::io(path, e))?;
        Self::append(path)
    }
}

impl<M: Serialize> MetricsSink<M> for JsonlSink {
    fn record(&mut self, m: &M) -> Result<()> {
        let line = serde_json::to_string(m).map_err(|e| DpoError::json(&self.path, e))?;
        writeln!(self.file, "{line}").map_err(|e| DpoError::io(&self.path, e))?;
        self.file.flush().map_err(|e| DpoError::io(&self.path, e))
    }
}
