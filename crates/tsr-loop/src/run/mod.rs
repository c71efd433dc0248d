//! The run folder and the iteration state machine.
//!
//! Layout (all JSON files written atomically; a stage is complete exactly when its marker
//! `iter-NNN/done/STAGE.json` exists, and the marker is written after everything else the stage
//! writes):
//!
//! ```text
//! RUN/
//!   .lock               held (OS file lock) by the process working on the run; its pid
//!   run.json            written last at creation: the folder is a complete run folder
//!   config.toml         the resolved configuration (seed, version, prompt count)
//!   prompts.jsonl       the prompts, normalised
//!   metrics.jsonl       one line per completed stage and per iteration (regenerated from markers)
//!   summary.json        every finished iteration's summary (regenerated)
//!   state.json          progress at a glance (regenerated)
//!   iter-001/
//!     prompts.json      this iteration's prompt ids (its fresh chunk)
//!     gen-current/00000.jsonl ...   P_i, one file per chunk of prompts
//!     gen-initial/ ...  P_0 (TSR, past-only), reused across iterations when a prompt repeats
//!     judge-current/ judge-initial/ judge-future/   verdicts of M_i
//!     decisions-1.jsonl pairs-1.jsonl               Phase 1 (SR rule or anchored rejection)
//!     model-future/     M_f (TSR, future-only), train-model-future.jsonl its step log
//!     gen-future/       P_f
//!     decisions-2.jsonl pairs-2.jsonl               Phase 2 (future-guided chosen)
//!     similarity.json   cosine(h_chosen, h_rejected) under M_i, per final pair
//!     model/            M_{i+1}, train-model.jsonl its step log
//!     summary.json
//!     done/STAGE.json   stage markers
//! ```

use crate::backend::{Backend, Event, ModelRef, Observer, Provenance, TrainPair, TrainReport};
use crate::config::{Config, FuturePrompts, Method, Resolved};
use crate::error::{error_chain, io, LoopError, Result};
use crate::fsio;
use crate::lock::{RunLock, LOCK_FILE};
use crate::prompts::{parse_prompts, PromptRecord};
use crate::records::*;
use crate::seed::derive_seed;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tsr_curate::{anchored_rejection, future_guided, self_rewarding, Pool};
use tsr_judge::{GenRequest, JudgeItem, Prompt};

mod curate;
mod driver;
mod eval;
mod folder;
mod resume;
mod sample;
mod stage;
mod state;
mod summary;
mod train;

use crate::summary::{mean, PairStats};
pub use stage::Stage;
pub use state::RunState;

fn pool_dir(prefix: &str, pool: Pool) -> String {
    format!("{prefix}-{}", pool.as_str())
}

/// What [`Run::execute`] returns.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub state: RunState,
    /// The summaries of all finished iterations.
    pub summaries: Vec<Value>,
}

/// A run folder and its configuration.
#[derive(Debug)]
pub struct Run {
    dir: PathBuf,
    config: Config,
    prompts: Vec<PromptRecord>,
    /// The held-out prompts of `[eval]` (empty without it).
    eval_prompts: Vec<PromptRecord>,
    per_iteration: usize,
}

impl Run {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn prompts(&self) -> &[PromptRecord] {
        &self.prompts
    }

    /// The stages of one iteration of this run, in order.
    pub fn stages(&self) -> Vec<Stage> {
        Stage::plan_with(self.config.run.method, self.config.eval.is_some())
    }

    fn iter_dir(&self, it: u32) -> PathBuf {
        self.dir.join(iter_name(it))
    }
    fn marker(&self, it: u32, stage: Stage) -> PathBuf {
        self.iter_dir(it)
            .join("done")
            .join(format!("{}.json", stage.name()))
    }
    fn is_done(&self, it: u32, stage: Stage) -> bool {
        self.marker(it, stage).exists()
    }
    fn read_marker(&self, it: u32, stage: Stage) -> Result<StageRecord> {
        fsio::read_json(&self.marker(it, stage))
    }

    /// The prompts of iteration `it` (1-based): its fresh chunk.
    fn iteration_prompts(&self, it: u32) -> &[PromptRecord] {
        let chunks = (self.prompts.len() / self.per_iteration).max(1);
        let start = ((it as usize - 1) % chunks) * self.per_iteration;
        &self.prompts[start..start + self.per_iteration]
    }

    fn model_ref(&self, name: &str) -> ModelRef {
        if name == "m0" {
            ModelRef::initial(&self.config.run.model)
        } else {
            ModelRef::checkpoint(&self.dir, name)
        }
    }

    /// `M_i` for iteration `it`.
    fn current_model(&self, it: u32) -> Result<ModelRef> {
        if it == 1 {
            return Ok(ModelRef::initial(&self.config.run.model));
        }
        let d = self.train_details(it - 1, Stage::Train)?;
        Ok(self.model_ref(&d.model))
    }

    fn final_pairs_path(&self, it: u32) -> PathBuf {
        let n = if self.config.run.method.uses_future() {
            2
        } else {
            1
        };
        self.iter_dir(it).join(format!("pairs-{n}.jsonl"))
    }
}

/// Generations and verdicts of one pool, by prompt id.
type PoolData = (
    HashMap<String, GenerationRecord>,
    HashMap<String, VerdictRecord>,
);

/// `skipped_reason` of a train-future stage that had no pairs.
const SKIPPED_FUTURE: &str = "D_1 is empty (Phase 1 kept no pairs): no future model was trained; \
     Phase 2 samples no P_f and keeps Phase 1's decisions, so D_2 is empty too and M_{i+1} is M_i";
/// `skipped_reason` of a train stage that had no pairs.
const SKIPPED_TRAIN: &str = "no preference pairs: nothing was trained, M_{i+1} is M_i";

/// The report a train stage writes into the model folder it completes.
const TRAIN_REPORT: &str = "tsr-train-report.json";

fn iter_name(it: u32) -> String {
    format!("iter-{it:03}")
}

fn to_train_pair(p: &PairRecord) -> TrainPair {
    TrainPair {
        prompt_id: p.prompt_id.clone(),
        prompt: p.prompt.clone(),
        chosen: p.chosen.text.clone(),
        rejected: p.rejected.text.clone(),
        chosen_token_ids: p.chosen.token_ids.clone(),
        rejected_token_ids: p.rejected.token_ids.clone(),
    }
}

/// Read every `NNNNN.jsonl` chunk of a folder in order (an absent folder reads as empty).
fn read_chunks<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(e) => e
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(LoopError::Io {
                path: dir.to_path_buf(),
                source: e,
            })
        }
    };
    names.sort();
    let mut out = Vec::new();
    for p in names {
        out.extend(fsio::read_jsonl(&p)?);
    }
    Ok(out)
}
