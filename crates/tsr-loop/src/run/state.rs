//! The files derived from the stage markers: `metrics.jsonl`, `summary.json` and `state.json`
//! ([`RunState`]), regenerated after every stage.

use super::*;
use crate::summary::{write_sorted, RunSummary};

/// Progress at a glance (`state.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub method: Method,
    pub iterations: u32,
    pub completed_iterations: u32,
    /// The last completed stage, as `iter-NNN/STAGE`.
    pub last_stage: Option<String>,
    /// The newest model (`m0` or a checkpoint folder relative to the run folder).
    pub model: String,
    pub finished: bool,
}

impl Run {
    /// Regenerate `metrics.jsonl`, `summary.json` and `state.json` from the stage markers.
    pub(super) fn write_derived(&self) -> Result<(RunState, Vec<Value>)> {
        let method = self.config.run.method;
        let mut lines: Vec<Value> = Vec::new();
        let mut summaries = Vec::new();
        let mut last_stage = None;
        let mut completed = 0;
        let mut model = "m0".to_string();
        for it in 1..=self.config.run.iterations {
            for stage in self.stages() {
                if !self.is_done(it, stage) {
                    continue;
                }
                let rec = self.read_marker(it, stage)?;
                lines.push(
                    serde_json::to_value(&rec).map_err(|e| LoopError::Config(e.to_string()))?,
                );
                last_stage = Some(format!("{}/{}", iter_name(it), stage.name()));
                if stage == Stage::Train {
                    model = self.train_details(it, Stage::Train)?.model;
                }
                if stage == Stage::Summary {
                    // Verbatim, not through `IterationSummary`: a summary an earlier version
                    // wrote keeps its fields (and its lack of fields) in the run's files.
                    let mut s: Value = fsio::read_json(&self.iter_dir(it).join("summary.json"))?;
                    summaries.push(s.clone());
                    if let Some(o) = s.as_object_mut() {
                        o.insert("kind".into(), json!("iteration"));
                    }
                    lines.push(s);
                    completed = it;
                }
            }
        }
        let mut bytes = Vec::new();
        for l in &lines {
            serde_json::to_writer(&mut bytes, l).map_err(|e| LoopError::Config(e.to_string()))?;
            bytes.push(b'\n');
        }
        fsio::write_bytes(&self.dir.join("metrics.jsonl"), &bytes)?;
        let run_summary = RunSummary {
            method,
            iterations: summaries,
        };
        write_sorted(&self.dir.join("summary.json"), &run_summary)?;
        let state = RunState {
            method,
            iterations: self.config.run.iterations,
            completed_iterations: completed,
            last_stage,
            model,
            finished: completed == self.config.run.iterations,
        };
        fsio::write_json(&self.dir.join("state.json"), &state)?;
        Ok((state, run_summary.iterations))
    }
}
