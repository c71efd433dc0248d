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
mod eval;
mod sample;
mod summary;
mod train;

use summary::{mean, pair_stats};

/// One step of an iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    GenCurrent,
    GenInitial,
    JudgeCurrent,
    JudgeInitial,
    Curate1,
    TrainFuture,
    GenFuture,
    JudgeFuture,
    Curate2,
    Similarity,
    Train,
    /// Win rates of `M_{i+1}` against `M_i` and `M_0` (only with `[eval]`).
    Eval,
    Summary,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::GenCurrent => "gen-current",
            Stage::GenInitial => "gen-initial",
            Stage::JudgeCurrent => "judge-current",
            Stage::JudgeInitial => "judge-initial",
            Stage::Curate1 => "curate-1",
            Stage::TrainFuture => "train-future",
            Stage::GenFuture => "gen-future",
            Stage::JudgeFuture => "judge-future",
            Stage::Curate2 => "curate-2",
            Stage::Similarity => "similarity",
            Stage::Train => "train",
            Stage::Eval => "eval",
            Stage::Summary => "summary",
        }
    }

    /// The stages of one iteration of `method`, in order; `eval` adds [`Stage::Eval`] before
    /// the summary.
    pub fn plan_with(method: Method, eval: bool) -> Vec<Stage> {
        let mut v = Self::plan(method).to_vec();
        if eval {
            v.insert(v.len() - 1, Stage::Eval);
        }
        v
    }

    /// The stages of one iteration of `method` without evaluation, in order.
    pub fn plan(method: Method) -> &'static [Stage] {
        use Stage::*;
        match method {
            Method::Sr => &[
                GenCurrent,
                JudgeCurrent,
                Curate1,
                Similarity,
                Train,
                Summary,
            ],
            Method::Tsr => &[
                GenCurrent,
                GenInitial,
                JudgeCurrent,
                JudgeInitial,
                Curate1,
                TrainFuture,
                GenFuture,
                JudgeFuture,
                Curate2,
                Similarity,
                Train,
                Summary,
            ],
            Method::PastOnly => &[
                GenCurrent,
                GenInitial,
                JudgeCurrent,
                JudgeInitial,
                Curate1,
                Similarity,
                Train,
                Summary,
            ],
            Method::FutureOnly => &[
                GenCurrent,
                JudgeCurrent,
                Curate1,
                TrainFuture,
                GenFuture,
                JudgeFuture,
                Curate2,
                Similarity,
                Train,
                Summary,
            ],
        }
    }
}

fn pool_dir(prefix: &str, pool: Pool) -> String {
    format!("{prefix}-{}", pool.as_str())
}

/// Written at creation, last: marks a complete run folder.
#[derive(Debug, Serialize, Deserialize)]
struct RunMarker {
    format: u32,
    tsr_version: String,
}

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

/// Where a run keeps its copy of the `[eval]` prompts.
const EVAL_PROMPTS: &str = "eval-prompts.jsonl";

const FORMAT: u32 = 1;

impl Run {
    /// Create a new run folder (it must not exist, or be empty) holding the resolved config and
    /// the prompts.
    pub fn create(dir: &Path, mut config: Config, prompts: Vec<PromptRecord>) -> Result<Run> {
        config.validate()?;
        if prompts.is_empty() {
            return Err(LoopError::Config("no prompts".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &prompts {
            if !seen.insert(p.id.as_str()) {
                return Err(LoopError::Config(format!("duplicate prompt id `{}`", p.id)));
            }
            if p.prompt.trim().is_empty() {
                return Err(LoopError::Config(format!("prompt `{}` is empty", p.id)));
            }
        }
        let per_iteration = config.chunk_size(prompts.len())?;
        let eval_prompts = match &config.eval {
            Some(e) => crate::defaults::eval_prompts_for(e, &prompts)?,
            None => Vec::new(),
        };
        if let Some(e) = config.eval.as_mut() {
            e.prompts = Some(PathBuf::from(EVAL_PROMPTS));
        }
        config.loop_.prompts_per_iteration = per_iteration;
        config.run.prompts = PathBuf::from("prompts.jsonl");
        config.resolved = Some(Resolved {
            tsr_version: env!("CARGO_PKG_VERSION").to_string(),
            prompt_count: prompts.len(),
        });
        let rd = |m: &str| LoopError::RunDir {
            path: dir.to_path_buf(),
            message: m.to_string(),
        };
        if dir.join("run.json").exists() {
            return Err(rd("already holds a run; continue it with --resume"));
        }
        let non_empty = |dir: &Path| {
            std::fs::read_dir(dir).is_ok_and(|mut entries| {
                entries.any(|e| e.is_ok_and(|e| e.file_name() != LOCK_FILE))
            })
        };
        if non_empty(dir) {
            return Err(rd("exists and is not empty"));
        }
        fsio::create_dir(dir)?;
        // A second `create` racing this one fails at the lock, or at the check below once this
        // one has written the run.
        let _lock = RunLock::acquire(dir)?;
        if non_empty(dir) {
            return Err(rd("exists and is not empty"));
        }
        fsio::write_jsonl(&dir.join("prompts.jsonl"), &prompts)?;
        if config.eval.is_some() {
            fsio::write_jsonl(&dir.join(EVAL_PROMPTS), &eval_prompts)?;
        }
        fsio::write_bytes(
            &dir.join("config.toml"),
            config.to_toml_string()?.as_bytes(),
        )?;
        fsio::write_json(
            &dir.join("run.json"),
            &RunMarker {
                format: FORMAT,
                tsr_version: env!("CARGO_PKG_VERSION").into(),
            },
        )?;
        tracing::info!(dir = %dir.display(), prompts = prompts.len(), per_iteration, "created run");
        Ok(Run {
            dir: dir.to_path_buf(),
            config,
            prompts,
            eval_prompts,
            per_iteration,
        })
    }

    /// Open an existing run folder to resume it.
    pub fn open(dir: &Path) -> Result<Run> {
        let marker = dir.join("run.json");
        if !marker.exists() {
            return Err(LoopError::RunDir {
                path: dir.to_path_buf(),
                message: "is not a run folder (no run.json); start a new run instead".into(),
            });
        }
        let m: RunMarker = fsio::read_json(&marker)?;
        if m.format != FORMAT {
            return Err(LoopError::RunDir {
                path: dir.to_path_buf(),
                message: format!(
                    "run format {} is not supported (this tsr writes {FORMAT})",
                    m.format
                ),
            });
        }
        let cpath = dir.join("config.toml");
        let text = std::fs::read_to_string(&cpath).map_err(io(&cpath))?;
        let config = Config::from_toml_str(&text, &cpath)?;
        config.validate()?;
        if let Some(r) = &config.resolved {
            if r.tsr_version != env!("CARGO_PKG_VERSION") {
                tracing::warn!(written_by = %r.tsr_version, "resuming a run written by another tsr version");
            }
        }
        let ppath = dir.join("prompts.jsonl");
        let ptext = std::fs::read_to_string(&ppath).map_err(io(&ppath))?;
        let prompts = parse_prompts(&ptext, &ppath)?;
        let per_iteration = config.chunk_size(prompts.len())?;
        let eval_prompts = if config.eval.is_some() {
            let epath = dir.join(EVAL_PROMPTS);
            let etext = std::fs::read_to_string(&epath).map_err(io(&epath))?;
            parse_prompts(&etext, &epath)?
        } else {
            Vec::new()
        };
        Ok(Run {
            dir: dir.to_path_buf(),
            config,
            prompts,
            eval_prompts,
            per_iteration,
        })
    }

    /// Change the number of iterations of an opened run (to extend it); rewrites `config.toml`.
    pub fn set_iterations(&mut self, n: u32) -> Result<()> {
        if n == self.config.run.iterations {
            return Ok(());
        }
        let mut c = self.config.clone();
        c.run.iterations = n;
        c.validate()?;
        c.chunk_size(self.prompts.len())?;
        let _lock = RunLock::acquire(&self.dir)?;
        fsio::write_bytes(
            &self.dir.join("config.toml"),
            c.to_toml_string()?.as_bytes(),
        )?;
        self.config = c;
        Ok(())
    }

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

    /// Run (or continue) every iteration. Completed stages are skipped; an interrupted stage
    /// restarts from its last complete chunk.
    ///
    /// Holds the run folder's lock ([`crate::lock`]) throughout: while another process works on
    /// the folder this fails at once with [`LoopError::Locked`], touching nothing.
    pub fn execute(
        &mut self,
        backend: &mut dyn Backend,
        obs: &mut dyn Observer,
    ) -> Result<RunOutcome> {
        let _lock = RunLock::acquire(&self.dir)?;
        self.recover()?;
        self.check_provenance(&backend.provenance())?;
        let n = self.config.run.iterations;
        for it in 1..=n {
            let span = tracing::info_span!("iteration", it);
            let _g = span.enter();
            obs.event(&Event::IterationStarted {
                iteration: it,
                of: n,
            });
            let idir = self.iter_dir(it);
            fsio::create_dir(&idir.join("done"))?;
            if !idir.join("prompts.json").exists() {
                let ids: Vec<&str> = self
                    .iteration_prompts(it)
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect();
                fsio::write_json(&idir.join("prompts.json"), &ids)?;
            }
            for stage in self.stages() {
                if self.is_done(it, stage) {
                    obs.event(&Event::StageSkipped {
                        iteration: it,
                        stage: stage.name(),
                    });
                    continue;
                }
                let span = tracing::info_span!("stage", name = stage.name());
                let _g = span.enter();
                let t0 = Instant::now();
                let mut rec = self.run_stage(backend, obs, it, stage)?;
                rec.kind = "stage".into();
                rec.iteration = it;
                rec.stage = stage.name().into();
                rec.wall_s = t0.elapsed().as_secs_f64();
                if stage == Stage::Summary {
                    // The summary needs its own stage's wall time too; fill it in now.
                    let path = idir.join("summary.json");
                    let mut s: Value = fsio::read_json(&path)?;
                    s["compute"]["stages"]["summary"] = json!({"wall_s": rec.wall_s});
                    fsio::write_json(&path, &s)?;
                }
                fsio::write_json(&self.marker(it, stage), &rec)?;
                tracing::info!(wall_s = rec.wall_s, "stage done");
                obs.event(&Event::StageFinished {
                    iteration: it,
                    stage: stage.name(),
                    wall_s: rec.wall_s,
                });
                self.write_derived()?;
            }
        }
        let (state, summaries) = self.write_derived()?;
        Ok(RunOutcome {
            dir: self.dir.clone(),
            state,
            summaries,
        })
    }

    /// Record the backend's provenance on the first execution; refuse a different one later.
    fn check_provenance(&self, now: &Provenance) -> Result<()> {
        let path = self.dir.join("provenance.json");
        if !path.exists() {
            return fsio::write_json(&path, now);
        }
        let then: Provenance = fsio::read_json(&path)?;
        if &then != now {
            return Err(LoopError::RunDir {
                path: self.dir.clone(),
                message: format!(
                    "was produced with {} and judge `{}`{}; resuming it with {} and judge `{}`{} would mix two ways of scoring in one run (start a new run, or resume with the original settings)",
                    then.backend,
                    then.judge,
                    doubles(&then),
                    now.backend,
                    now.judge,
                    doubles(now),
                ),
            });
        }
        Ok(())
    }

    fn provenance(&self) -> Result<Option<Provenance>> {
        let path = self.dir.join("provenance.json");
        if path.exists() {
            Ok(Some(fsio::read_json(&path)?))
        } else {
            Ok(None)
        }
    }

    /// Remove what a crash may have left half-written (the caller holds the lock, so no live
    /// process is writing them): the loop's temporary files (`*.tsr-tmp`), partial model
    /// folders (`*.partial`), a backend's staging folders beside them (`.NAME.tsr-tmp-PID`,
    /// `.NAME.tsr-old-PID`, as tsr-model's save writes), and trainer work folders
    /// (`NAME.dpo-work`) whose model `NAME` is complete. A work folder of an unfinished model is
    /// kept: the trainer resumes from its checkpoint. Then regenerate the derived files from the
    /// markers.
    fn recover(&self) -> Result<()> {
        fn walk(dir: &Path, removed: &mut usize) -> Result<()> {
            fsio::remove_stale_tmp(dir)?;
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(_) => return Ok(()),
            };
            for e in entries {
                let e = e.map_err(io(dir))?;
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if is_stale_temporary(dir, &name) {
                    tracing::info!(path = %p.display(), "removing a stale temporary");
                    fsio::remove_if_exists(&p)?;
                    *removed += 1;
                } else if p.is_dir() {
                    walk(&p, removed)?;
                }
            }
            Ok(())
        }
        let mut removed = 0;
        walk(&self.dir, &mut removed)?;
        if removed > 0 {
            tracing::info!(removed, "removed temporaries a crash left behind");
        }
        self.write_derived()?;
        Ok(())
    }

    /// Regenerate `metrics.jsonl`, `summary.json` and `state.json` from the stage markers.
    fn write_derived(&self) -> Result<(RunState, Vec<Value>)> {
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
        fsio::write_json(
            &self.dir.join("summary.json"),
            &json!({"method": method.as_str(), "iterations": summaries}),
        )?;
        let state = RunState {
            method,
            iterations: self.config.run.iterations,
            completed_iterations: completed,
            last_stage,
            model,
            finished: completed == self.config.run.iterations,
        };
        fsio::write_json(&self.dir.join("state.json"), &state)?;
        Ok((state, summaries))
    }

    fn run_stage(
        &self,
        b: &mut dyn Backend,
        obs: &mut dyn Observer,
        it: u32,
        stage: Stage,
    ) -> Result<StageRecord> {
        let mi = self.current_model(it)?;
        match stage {
            Stage::GenCurrent => {
                let prompts: Vec<&PromptRecord> = self.iteration_prompts(it).iter().collect();
                self.gen_stage(b, obs, it, stage, Pool::Current, &mi, &prompts)
            }
            Stage::GenInitial => {
                let prompts: Vec<&PromptRecord> = self.iteration_prompts(it).iter().collect();
                let m0 = ModelRef::initial(&self.config.run.model);
                self.gen_stage(b, obs, it, stage, Pool::Initial, &m0, &prompts)
            }
            Stage::GenFuture => {
                let future = self.train_details(it, Stage::TrainFuture)?;
                if !future.trained {
                    // No future model (empty D_1): sampling M_i here would pass its answers off
                    // as a future model's.
                    return self.skipped_future_stage(obs, it, stage);
                }
                let mf = self.model_ref(&future.model);
                let decisions: Vec<DecisionRecord> =
                    fsio::read_jsonl(&self.iter_dir(it).join("decisions-1.jsonl"))?;
                let wanted: std::collections::HashSet<String> = decisions
                    .into_iter()
                    .filter(|d| match self.config.loop_.future_prompts {
                        FuturePrompts::All => {
                            d.decision.chosen.is_some() && d.decision.rejected.is_some()
                        }
                        FuturePrompts::Kept => d.decision.is_kept(),
                    })
                    .map(|d| d.prompt_id)
                    .collect();
                let prompts: Vec<&PromptRecord> = self
                    .iteration_prompts(it)
                    .iter()
                    .filter(|p| wanted.contains(&p.id))
                    .collect();
                self.gen_stage(b, obs, it, stage, Pool::Future, &mf, &prompts)
            }
            Stage::JudgeCurrent => self.judge_stage(b, obs, it, stage, Pool::Current, &mi),
            Stage::JudgeInitial => self.judge_stage(b, obs, it, stage, Pool::Initial, &mi),
            Stage::JudgeFuture if !self.train_details(it, Stage::TrainFuture)?.trained => {
                self.skipped_future_stage(obs, it, stage)
            }
            Stage::JudgeFuture => self.judge_stage(b, obs, it, stage, Pool::Future, &mi),
            Stage::Curate1 => self.curate1(it),
            Stage::Curate2 => self.curate2(it),
            Stage::TrainFuture => {
                let pairs = fsio::read_jsonl(&self.iter_dir(it).join("pairs-1.jsonl"))?;
                self.train_stage(b, it, stage, &mi, &pairs, "model-future")
            }
            Stage::Train => {
                let pairs = fsio::read_jsonl(&self.final_pairs_path(it))?;
                self.train_stage(b, it, stage, &mi, &pairs, "model")
            }
            Stage::Similarity => self.similarity_stage(b, it, &mi),
            Stage::Eval => self.eval_stage(b, obs, it),
            Stage::Summary => self.summary_stage(it),
        }
    }

    /// `gen-future` / `judge-future` when train-future trained nothing: no `P_f`.
    fn skipped_future_stage(
        &self,
        obs: &mut dyn Observer,
        it: u32,
        stage: Stage,
    ) -> Result<StageRecord> {
        obs.event(&Event::StageStarted {
            iteration: it,
            stage: stage.name(),
            total: 0,
        });
        tracing::info!("no future model: no P_f");
        Ok(StageRecord {
            details: json!({"prompts": 0, "responses": 0, "skipped_reason": SKIPPED_FUTURE}),
            ..StageRecord::default()
        })
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

/// Whether the entry `name` of folder `dir` is a temporary a crashed stage left (see
/// [`Run::recover`]).
fn is_stale_temporary(dir: &Path, name: &str) -> bool {
    if name.ends_with(".partial") {
        return dir.join(name).is_dir();
    }
    if let Some(model) = name.strip_suffix(".dpo-work") {
        return dir.join(model).join(TRAIN_REPORT).exists();
    }
    // `.NAME.tsr-tmp-PID` / `.NAME.tsr-old-PID`: a model save's staging folders.
    name.starts_with('.')
        && [".tsr-tmp-", ".tsr-old-"].iter().any(|tag| {
            name.rsplit_once(tag)
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// `skipped_reason` of a train-future stage that had no pairs.
const SKIPPED_FUTURE: &str = "D_1 is empty (Phase 1 kept no pairs): no future model was trained; \
     Phase 2 samples no P_f and keeps Phase 1's decisions, so D_2 is empty too and M_{i+1} is M_i";
/// `skipped_reason` of a train stage that had no pairs.
const SKIPPED_TRAIN: &str = "no preference pairs: nothing was trained, M_{i+1} is M_i";

/// The report a train stage writes into the model folder it completes.
const TRAIN_REPORT: &str = "tsr-train-report.json";

/// ` (test doubles: ...)` when a provenance lists any.
fn doubles(p: &Provenance) -> String {
    if p.test_doubles.is_empty() {
        String::new()
    } else {
        format!(" (test doubles: {})", p.test_doubles.join(", "))
    }
}

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
