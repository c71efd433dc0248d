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

    fn train_details(&self, it: u32, stage: Stage) -> Result<TrainDetails> {
        let rec = self.read_marker(it, stage)?;
        serde_json::from_value(rec.details).map_err(|e| LoopError::Record {
            path: self.marker(it, stage),
            message: e.to_string(),
        })
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

    fn chunks<'a, T>(&self, items: &'a [T]) -> impl Iterator<Item = (usize, &'a [T])> {
        items.chunks(self.config.loop_.chunk_prompts).enumerate()
    }

    /// All `P_0` samples earlier iterations drew, by prompt id.
    fn initial_cache(&self, before: u32) -> Result<HashMap<String, GenerationRecord>> {
        let mut cache = HashMap::new();
        for it in 1..before {
            let dir = self.iter_dir(it).join(pool_dir("gen", Pool::Initial));
            for rec in read_chunks::<GenerationRecord>(&dir)? {
                let origin = rec.reused_from.unwrap_or(it);
                cache
                    .entry(rec.prompt_id.clone())
                    .or_insert(GenerationRecord {
                        reused_from: Some(origin),
                        ..rec
                    });
            }
        }
        Ok(cache)
    }

    #[allow(clippy::too_many_arguments)]
    fn gen_stage(
        &self,
        b: &mut dyn Backend,
        obs: &mut dyn Observer,
        it: u32,
        stage: Stage,
        pool: Pool,
        model: &ModelRef,
        prompts: &[&PromptRecord],
    ) -> Result<StageRecord> {
        let dir = self.iter_dir(it).join(pool_dir("gen", pool));
        fsio::create_dir(&dir)?;
        let cache = if pool == Pool::Initial {
            self.initial_cache(it)?
        } else {
            HashMap::new()
        };
        let k = self.config.loop_.k;
        let total = prompts.len() as u64;
        obs.event(&Event::StageStarted {
            iteration: it,
            stage: stage.name(),
            total,
        });
        let mut done = 0u64;
        for (c, chunk) in self.chunks(prompts) {
            let path = dir.join(format!("{c:05}.jsonl"));
            done += chunk.len() as u64;
            if path.exists() {
                obs.event(&Event::StageProgress {
                    iteration: it,
                    stage: stage.name(),
                    done,
                    total,
                });
                continue;
            }
            let seed_of = |p: &PromptRecord| match pool {
                // P_0 seeds do not depend on the iteration, so a cached sample equals a fresh one.
                Pool::Initial => derive_seed(self.config.run.seed, &["gen-initial", &p.id]),
                _ => derive_seed(self.config.run.seed, &[&iter_name(it), stage.name(), &p.id]),
            };
            let missing: Vec<&PromptRecord> = chunk
                .iter()
                .copied()
                .filter(|p| !cache.contains_key(&p.id))
                .collect();
            let requests: Vec<GenRequest> = missing
                .iter()
                .map(|p| GenRequest {
                    prompt: Prompt::user(p.prompt.clone()),
                    n: k,
                    seed: seed_of(p),
                })
                .collect();
            let mut fresh: HashMap<&str, Vec<tsr_judge::Completion>> = HashMap::new();
            if !requests.is_empty() {
                let out = b
                    .generate(model, &requests, &self.config.sampling)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: stage.name().into(),
                        source,
                    })?;
                if out.len() != requests.len() || out.iter().any(|o| o.len() != k) {
                    return Err(LoopError::Protocol {
                        iteration: it,
                        stage: stage.name().into(),
                        message: format!(
                            "backend returned {} result lists for {} requests of {k}",
                            out.len(),
                            requests.len()
                        ),
                    });
                }
                for (p, comps) in missing.iter().zip(out) {
                    fresh.insert(p.id.as_str(), comps);
                }
            }
            let records: Vec<GenerationRecord> = chunk
                .iter()
                .map(|p| match cache.get(&p.id) {
                    Some(r) => r.clone(),
                    None => GenerationRecord {
                        prompt_id: p.id.clone(),
                        pool,
                        model: model.name.clone(),
                        seed: seed_of(p),
                        completions: fresh.remove(p.id.as_str()).unwrap_or_default(),
                        reused_from: None,
                    },
                })
                .collect();
            fsio::write_jsonl(&path, &records)?;
            tracing::debug!(chunk = c, prompts = chunk.len(), "generated");
            obs.event(&Event::StageProgress {
                iteration: it,
                stage: stage.name(),
                done,
                total,
            });
        }
        // Counted from the files, so a resumed stage reports what an uninterrupted one would.
        let recs: Vec<GenerationRecord> = read_chunks(&dir)?;
        let mut rec = StageRecord::default();
        let mut reused = 0usize;
        for r in &recs {
            if r.reused_from.is_some() {
                reused += 1;
                continue;
            }
            // The K samples of a prompt share one prefill: its tokens count once.
            rec.generation_prompt_tokens +=
                r.completions.first().map_or(0, |c| c.prompt_tokens) as u64;
            for c in &r.completions {
                rec.tokens_generated += c.token_ids.len() as u64;
            }
        }
        rec.details = json!({"prompts": recs.len(), "responses": recs.len() * k, "reused_prompts": reused, "model": model.name});
        Ok(rec)
    }

    fn judge_stage(
        &self,
        b: &mut dyn Backend,
        obs: &mut dyn Observer,
        it: u32,
        stage: Stage,
        pool: Pool,
        judge: &ModelRef,
    ) -> Result<StageRecord> {
        let gens: Vec<GenerationRecord> =
            read_chunks(&self.iter_dir(it).join(pool_dir("gen", pool)))?;
        let dir = self.iter_dir(it).join(pool_dir("judge", pool));
        fsio::create_dir(&dir)?;
        let text: HashMap<&str, &str> = self
            .prompts
            .iter()
            .map(|p| (p.id.as_str(), p.prompt.as_str()))
            .collect();
        let judge_seed = derive_seed(self.config.run.seed, &[&iter_name(it), stage.name()]);
        let total = gens.len() as u64;
        obs.event(&Event::StageStarted {
            iteration: it,
            stage: stage.name(),
            total,
        });
        let mut done = 0u64;
        for (c, chunk) in self.chunks(&gens) {
            let path = dir.join(format!("{c:05}.jsonl"));
            done += chunk.len() as u64;
            if path.exists() {
                obs.event(&Event::StageProgress {
                    iteration: it,
                    stage: stage.name(),
                    done,
                    total,
                });
                continue;
            }
            let mut items = Vec::new();
            for g in chunk {
                let instruction = text.get(g.prompt_id.as_str()).copied().unwrap_or_default();
                for (j, comp) in g.completions.iter().enumerate() {
                    let id = format!("{}/{}/{}/{j}", iter_name(it), pool.as_str(), g.prompt_id);
                    items.push(JudgeItem::new(id, instruction, comp.text.clone()));
                }
            }
            let verdicts = if items.is_empty() {
                Vec::new()
            } else {
                b.judge(judge, &items, judge_seed)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: stage.name().into(),
                        source,
                    })?
            };
            if verdicts.len() != items.len() {
                return Err(LoopError::Protocol {
                    iteration: it,
                    stage: stage.name().into(),
                    message: format!(
                        "backend returned {} verdicts for {} responses",
                        verdicts.len(),
                        items.len()
                    ),
                });
            }
            let mut vs = verdicts.into_iter().zip(items);
            let mut records = Vec::new();
            for g in chunk {
                let verdicts = (0..g.completions.len())
                    .map(|index| {
                        let (v, item) = vs.next().expect("counted above");
                        ResponseVerdict {
                            index,
                            item: item.id,
                            score: v.score.filter(|s| s.is_finite()),
                            samples: v.samples,
                        }
                    })
                    .collect();
                records.push(VerdictRecord {
                    prompt_id: g.prompt_id.clone(),
                    pool,
                    judge: judge.name.clone(),
                    seed: judge_seed,
                    verdicts,
                });
            }
            fsio::write_jsonl(&path, &records)?;
            obs.event(&Event::StageProgress {
                iteration: it,
                stage: stage.name(),
                done,
                total,
            });
        }
        let recs: Vec<VerdictRecord> = read_chunks(&dir)?;
        let mut rec = StageRecord::default();
        let (mut responses, mut unscored, mut samples, mut unparsed) =
            (0usize, 0usize, 0usize, 0usize);
        let mut masses = Vec::new();
        for r in &recs {
            for v in &r.verdicts {
                responses += 1;
                unscored += usize::from(v.score.is_none());
                samples += v.samples.len();
                unparsed += v.samples.iter().filter(|s| s.score.is_none()).count();
                masses.extend(v.samples.iter().filter_map(|s| s.digit_mass));
                rec.tokens_judged += v.tokens();
            }
        }
        let mass_mean = mean(masses.iter().copied());
        let mass_min = masses.iter().copied().reduce(f64::min);
        tracing::info!(responses, unscored, unparsed, digit_mass_mean = ?mass_mean, "judged");
        rec.details = json!({"judge": judge.name, "responses": responses, "unscored_responses": unscored,
            "judge_samples": samples, "unparsed_samples": unparsed,
            "digit_mass_mean": mass_mean, "digit_mass_min": mass_min});
        Ok(rec)
    }

    fn load_pool_data(&self, it: u32, pool: Pool) -> Result<PoolData> {
        let idir = self.iter_dir(it);
        let gens: Vec<GenerationRecord> = read_chunks(&idir.join(pool_dir("gen", pool)))?;
        let verdicts: Vec<VerdictRecord> = read_chunks(&idir.join(pool_dir("judge", pool)))?;
        Ok((
            gens.into_iter().map(|g| (g.prompt_id.clone(), g)).collect(),
            verdicts
                .into_iter()
                .map(|v| (v.prompt_id.clone(), v))
                .collect(),
        ))
    }

    /// Resolve the kept decisions into pairs with their texts, drop the pairs whose texts are
    /// degenerate ([`tsr_curate::degenerate_pair`]: empty chosen, chosen = rejected) with their
    /// reason, and write `decisions-N.jsonl` and `pairs-N.jsonl`.
    fn write_decisions(
        &self,
        it: u32,
        n: u32,
        mut decisions: Vec<DecisionRecord>,
    ) -> Result<StageRecord> {
        let idir = self.iter_dir(it);
        let mut pools: HashMap<Pool, PoolData> = HashMap::new();
        for pool in [Pool::Current, Pool::Initial, Pool::Future] {
            if idir.join(pool_dir("judge", pool)).exists() {
                pools.insert(pool, self.load_pool_data(it, pool)?);
            }
        }
        let text: HashMap<&str, &str> = self
            .prompts
            .iter()
            .map(|p| (p.id.as_str(), p.prompt.as_str()))
            .collect();
        let side = |pid: &str, pick: tsr_curate::Pick| -> Result<PairSide> {
            let missing = || LoopError::Protocol {
                iteration: it,
                stage: format!("curate-{n}"),
                message: format!(
                    "prompt `{pid}`: no {} response {}",
                    pick.pool.as_str(),
                    pick.index
                ),
            };
            let (g, v) = pools.get(&pick.pool).ok_or_else(missing)?;
            let comp = g
                .get(pid)
                .and_then(|g| g.completions.get(pick.index))
                .ok_or_else(missing)?;
            let verdict = v
                .get(pid)
                .and_then(|v| v.verdicts.get(pick.index))
                .ok_or_else(missing)?;
            Ok(PairSide {
                pool: pick.pool,
                index: pick.index,
                score: pick.score,
                text: comp.text.clone(),
                token_ids: comp.token_ids.clone(),
                judge_samples: verdict.samples.clone(),
            })
        };
        let mut pairs = Vec::new();
        let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
        for d in &mut decisions {
            if let Some((c, r)) = d.decision.pair() {
                let (chosen, rejected) = (side(&d.prompt_id, c)?, side(&d.prompt_id, r)?);
                d.decision = d.decision.clone().check_texts(&chosen.text, &rejected.text);
                if d.decision.is_kept() {
                    pairs.push(PairRecord {
                        prompt_id: d.prompt_id.clone(),
                        prompt: text
                            .get(d.prompt_id.as_str())
                            .copied()
                            .unwrap_or_default()
                            .to_string(),
                        chosen,
                        rejected,
                        replaced_from_future: d.decision.replaced_from_future,
                    });
                    continue;
                }
                tracing::debug!(prompt = %d.prompt_id, reason = ?d.decision.dropped, "degenerate pair dropped");
            }
            let reason = d.decision.dropped.map(|r| r.as_str()).unwrap_or("unknown");
            *dropped.entry(reason.to_string()).or_default() += 1;
        }
        fsio::write_jsonl(&idir.join(format!("decisions-{n}.jsonl")), &decisions)?;
        fsio::write_jsonl(&idir.join(format!("pairs-{n}.jsonl")), &pairs)?;
        tracing::info!(
            kept = pairs.len(),
            dropped = decisions.len() - pairs.len(),
            "curated"
        );
        Ok(StageRecord {
            details: json!({"prompts": decisions.len(), "kept": pairs.len(), "dropped": dropped, "pairs": pair_stats(&pairs)}),
            ..StageRecord::default()
        })
    }

    fn curate1(&self, it: u32) -> Result<StageRecord> {
        let (_, cur) = self.load_pool_data(it, Pool::Current)?;
        let init = if self.config.run.method.uses_initial() {
            Some(self.load_pool_data(it, Pool::Initial)?.1)
        } else {
            None
        };
        let mut decisions = Vec::new();
        for p in self.iteration_prompts(it) {
            let c = cur
                .get(&p.id)
                .map(VerdictRecord::scores)
                .unwrap_or_default();
            let decision = match &init {
                Some(init) => {
                    let i = init
                        .get(&p.id)
                        .map(VerdictRecord::scores)
                        .unwrap_or_default();
                    anchored_rejection(&c, &i)
                }
                None => self_rewarding(&c),
            };
            decisions.push(DecisionRecord {
                prompt_id: p.id.clone(),
                decision,
            });
        }
        self.write_decisions(it, 1, decisions)
    }

    fn curate2(&self, it: u32) -> Result<StageRecord> {
        let p1: Vec<DecisionRecord> =
            fsio::read_jsonl(&self.iter_dir(it).join("decisions-1.jsonl"))?;
        let (_, fut) = self.load_pool_data(it, Pool::Future)?;
        let decisions = p1
            .into_iter()
            .map(|d| {
                let f = fut
                    .get(&d.prompt_id)
                    .map(VerdictRecord::scores)
                    .unwrap_or_default();
                DecisionRecord {
                    decision: future_guided(&d.decision, &f),
                    prompt_id: d.prompt_id,
                }
            })
            .collect();
        self.write_decisions(it, 2, decisions)
    }

    fn train_stage(
        &self,
        b: &mut dyn Backend,
        it: u32,
        stage: Stage,
        init: &ModelRef,
        pairs: &[PairRecord],
        name: &str,
    ) -> Result<StageRecord> {
        let idir = self.iter_dir(it);
        let out = idir.join(name);
        let partial = idir.join(format!("{name}.partial"));
        let report_path = out.join(TRAIN_REPORT);
        let rel = format!("{}/{name}", iter_name(it));
        let details = if pairs.is_empty() {
            let reason = match stage {
                Stage::TrainFuture => SKIPPED_FUTURE,
                _ => SKIPPED_TRAIN,
            };
            tracing::warn!(model = %init.name, "{reason}");
            fsio::remove_if_exists(&out)?;
            TrainDetails {
                model: init.name.clone(),
                trained: false,
                report: None,
                skipped_reason: Some(reason.to_string()),
            }
        } else {
            let mut report: TrainReport = if report_path.exists() {
                // Trained and renamed into place before a crash: keep it.
                fsio::read_json(&report_path)?
            } else {
                fsio::remove_if_exists(&out)?;
                fsio::remove_if_exists(&partial)?;
                fsio::create_dir(&partial)?;
                let train: Vec<TrainPair> = pairs.iter().map(to_train_pair).collect();
                let seed = derive_seed(self.config.run.seed, &[&iter_name(it), stage.name()]);
                let trained = b
                    .train_dpo(init, &train, &partial, seed)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: stage.name().into(),
                        source,
                    })
                    .and_then(|report| {
                        fsio::write_json(&partial.join(TRAIN_REPORT), &report)?;
                        fsio::rename(&partial, &out)?;
                        Ok(report)
                    });
                match trained {
                    Ok(report) => report,
                    Err(e) => {
                        // Never leave a half-written model folder behind (the trainer's own
                        // work folder, if any, stays for it to resume from).
                        if let Err(rm) = fsio::remove_if_exists(&partial) {
                            tracing::warn!(error = %error_chain(&rm), "could not remove a partial model folder");
                        }
                        return Err(e);
                    }
                }
            };
            fsio::write_jsonl(&idir.join(format!("train-{name}.jsonl")), &report.steps_log)?;
            report.steps_log.clear();
            TrainDetails {
                model: rel,
                trained: true,
                report: Some(report),
                skipped_reason: None,
            }
        };
        let tokens = details.report.as_ref().map_or(0, |r| r.tokens);
        Ok(StageRecord {
            tokens_trained: tokens,
            details: serde_json::to_value(&details)
                .map_err(|e| LoopError::Config(e.to_string()))?,
            ..StageRecord::default()
        })
    }

    fn similarity_stage(&self, b: &mut dyn Backend, it: u32, mi: &ModelRef) -> Result<StageRecord> {
        let pairs: Vec<PairRecord> = fsio::read_jsonl(&self.final_pairs_path(it))?;
        let sims = if self.config.loop_.similarity && !pairs.is_empty() {
            let train: Vec<TrainPair> = pairs.iter().map(to_train_pair).collect();
            let s =
                b.representation_similarity(mi, &train)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: "similarity".into(),
                        source,
                    })?;
            if s.len() != pairs.len() {
                return Err(LoopError::Protocol {
                    iteration: it,
                    stage: "similarity".into(),
                    message: format!(
                        "backend returned {} similarities for {} pairs",
                        s.len(),
                        pairs.len()
                    ),
                });
            }
            Some(s)
        } else {
            None
        };
        let mean = sims.as_ref().and_then(|s| mean(s.iter().copied()));
        let per_pair: Vec<Value> = match &sims {
            Some(s) => pairs
                .iter()
                .zip(s)
                .map(|(p, c)| json!({"prompt_id": p.prompt_id, "cosine": c}))
                .collect(),
            None => Vec::new(),
        };
        fsio::write_json(
            &self.iter_dir(it).join("similarity.json"),
            &json!({"model": mi.name, "measured": sims.is_some(), "mean": mean, "pairs": per_pair}),
        )?;
        Ok(StageRecord {
            details: json!({"model": mi.name, "mean": mean}),
            ..StageRecord::default()
        })
    }

    /// The answers of `model` to the `[eval]` prompts (greedy, seeded per prompt), cached in
    /// `eval/answers-<model>.jsonl`: a model's answers are the same in every iteration that
    /// evaluates it, so `M_i`'s are made once. Returns the texts and the tokens generated now.
    fn eval_answers(
        &self,
        b: &mut dyn Backend,
        it: u32,
        model: &ModelRef,
    ) -> Result<(Vec<String>, u64, u64)> {
        let e = self.config.eval.as_ref().expect("[eval] is set");
        let dir = self.dir.join("eval");
        fsio::create_dir(&dir)?;
        let path = dir.join(format!(
            "answers-{}.jsonl",
            model.name.replace(['/', '\\'], "-")
        ));
        if path.exists() {
            let rows: Vec<Value> = fsio::read_jsonl(&path)?;
            let texts: Vec<String> = rows
                .iter()
                .map(|r| r["response"].as_str().unwrap_or_default().to_string())
                .collect();
            if texts.len() == self.eval_prompts.len() {
                // Compute is charged to the iteration that made the answers, whether this stage
                // made them or an interrupted attempt at it did.
                let ours = |r: &&Value| r["iteration"].as_u64() == Some(u64::from(it));
                let count = |k: &str| -> u64 {
                    rows.iter().filter(ours).filter_map(|r| r[k].as_u64()).sum()
                };
                return Ok((texts, count("tokens"), count("prompt_tokens")));
            }
        }
        let params = tsr_judge::SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: e.max_new_tokens,
            ..self.config.sampling.clone()
        };
        let mut rows = Vec::with_capacity(self.eval_prompts.len());
        let (mut generated, mut prompt_tokens) = (0u64, 0u64);
        for chunk in self.eval_prompts.chunks(self.config.loop_.chunk_prompts) {
            let requests: Vec<GenRequest> = chunk
                .iter()
                .map(|p| GenRequest {
                    prompt: Prompt::user(p.prompt.clone()),
                    n: 1,
                    seed: derive_seed(self.config.run.seed, &["eval", &p.id]),
                })
                .collect();
            let out =
                b.generate(model, &requests, &params)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: "eval".into(),
                        source,
                    })?;
            if out.len() != chunk.len() || out.iter().any(|c| c.len() != 1) {
                return Err(LoopError::Protocol {
                    iteration: it,
                    stage: "eval".into(),
                    message: format!(
                        "backend returned {} outputs for {} one-answer requests",
                        out.len(),
                        chunk.len()
                    ),
                });
            }
            for (p, mut c) in chunk.iter().zip(out) {
                let c = c.pop().expect("one completion");
                generated += c.token_ids.len() as u64;
                prompt_tokens += c.prompt_tokens as u64;
                rows.push(json!({"id": p.id, "model": model.name, "iteration": it,
                                 "response": c.text, "finish_reason": c.finish_reason,
                                 "tokens": c.token_ids.len(), "prompt_tokens": c.prompt_tokens}));
            }
        }
        fsio::write_jsonl(&path, &rows)?;
        let texts = rows
            .iter()
            .map(|r| r["response"].as_str().unwrap_or_default().to_string())
            .collect();
        Ok((texts, generated, prompt_tokens))
    }

    /// `[eval]`: win rates of `M_{i+1}` over `M_i` and over `M_0` on the held-out prompts.
    fn eval_stage(
        &self,
        b: &mut dyn Backend,
        obs: &mut dyn Observer,
        it: u32,
    ) -> Result<StageRecord> {
        let e = self
            .config
            .eval
            .clone()
            .expect("the eval stage runs only with [eval]");
        let next = self.model_ref(&self.train_details(it, Stage::Train)?.model);
        let prev = self.current_model(it)?;
        let m0 = ModelRef::initial(&self.config.run.model);
        let judge = match e.judge.as_str() {
            "m0" => m0.clone(),
            "current" => next.clone(),
            spec => ModelRef {
                name: spec.to_string(),
                location: spec.to_string(),
            },
        };
        let mut opponents = vec![("vs_previous", prev.clone())];
        if e.vs_initial && prev.name != m0.name {
            opponents.push(("vs_initial", m0.clone()));
        }
        obs.event(&Event::StageStarted {
            iteration: it,
            stage: "eval",
            total: opponents.len() as u64,
        });
        let (model_answers, mut generated, mut gen_prompt) = self.eval_answers(b, it, &next)?;
        let seed = derive_seed(self.config.run.seed, &["eval-judge"]);
        let mut judged = 0u64;
        let mut details = serde_json::Map::new();
        for (done, (key, opponent)) in opponents.iter().enumerate() {
            let (baseline, g, gp) = self.eval_answers(b, it, opponent)?;
            generated += g;
            gen_prompt += gp;
            let matchups: Vec<tsr_judge::Matchup> = self
                .eval_prompts
                .iter()
                .zip(&model_answers)
                .zip(baseline)
                .map(|((p, m), base)| tsr_judge::Matchup {
                    id: p.id.clone(),
                    instruction: p.prompt.clone(),
                    model: m.clone(),
                    baseline: base,
                })
                .collect();
            let mut pairwise = BackendPairwise {
                backend: &mut *b,
                judge: &judge,
                mode: e.mode,
                seed,
                tokens: 0,
            };
            let (report, records) =
                tsr_judge::win_rate(&mut pairwise, &matchups, seed).map_err(|err| {
                    LoopError::Protocol {
                        iteration: it,
                        stage: "eval".into(),
                        message: error_chain(&err),
                    }
                })?;
            judged += pairwise.tokens;
            fsio::write_jsonl(
                &self
                    .iter_dir(it)
                    .join(format!("eval-{}.jsonl", key.replace('_', "-"))),
                &records,
            )?;
            tracing::info!(
                against = %opponent.name, win_rate = ?report.win_rate, ci_low = ?report.ci_low,
                ci_high = ?report.ci_high, n = report.n, "eval"
            );
            let mut v = serde_json::to_value(&report).expect("reports serialize");
            v["model"] = json!(next.name);
            v["opponent"] = json!(opponent.name);
            details.insert((*key).to_string(), v);
            obs.event(&Event::StageProgress {
                iteration: it,
                stage: "eval",
                done: done as u64 + 1,
                total: opponents.len() as u64,
            });
        }
        if e.vs_initial && !details.contains_key("vs_initial") {
            // Iteration 1: M_i is M_0.
            let same = details["vs_previous"].clone();
            details.insert("vs_initial".into(), same);
        }
        details.insert("prompts".into(), json!(self.eval_prompts.len()));
        details.insert("judge".into(), json!(judge.name));
        details.insert("mode".into(), json!(e.mode.as_str()));
        Ok(StageRecord {
            tokens_generated: generated,
            generation_prompt_tokens: gen_prompt,
            tokens_judged: judged,
            details: Value::Object(details),
            ..StageRecord::default()
        })
    }

    fn summary_stage(&self, it: u32) -> Result<StageRecord> {
        let method = self.config.run.method;
        let idir = self.iter_dir(it);
        let final_pairs: Vec<PairRecord> = fsio::read_jsonl(&self.final_pairs_path(it))?;
        let mut stages = serde_json::Map::new();
        let (mut generated, mut gen_prompt, mut judged, mut trained, mut wall) =
            (0u64, 0u64, 0u64, 0u64, 0f64);
        let mut details: HashMap<Stage, Value> = HashMap::new();
        for stage in self.stages() {
            if stage == Stage::Summary {
                continue;
            }
            let r = self.read_marker(it, stage)?;
            generated += r.tokens_generated;
            gen_prompt += r.generation_prompt_tokens;
            judged += r.tokens_judged;
            trained += r.tokens_trained;
            wall += r.wall_s;
            stages.insert(
                stage.name().into(),
                json!({"wall_s": r.wall_s, "tokens_generated": r.tokens_generated,
                       "tokens_judged": r.tokens_judged, "tokens_trained": r.tokens_trained}),
            );
            details.insert(stage, r.details);
        }
        let (mut cg, mut cj, mut ct) = (generated, judged, trained);
        if it > 1 {
            let prev: Value = fsio::read_json(&self.iter_dir(it - 1).join("summary.json"))?;
            let c = &prev["compute"]["cumulative"];
            cg += c["tokens_generated"].as_u64().unwrap_or(0);
            cj += c["tokens_judged"].as_u64().unwrap_or(0);
            ct += c["tokens_trained"].as_u64().unwrap_or(0);
        }
        let stats = pair_stats(&final_pairs);
        let n = final_pairs.len();
        let share = |f: &dyn Fn(&PairRecord) -> bool| -> Option<f64> {
            (n > 0).then(|| final_pairs.iter().filter(|p| f(p)).count() as f64 / n as f64)
        };
        let rejected_from_initial = if method.uses_initial() {
            share(&|p| p.rejected.pool == Pool::Initial)
        } else {
            None
        };
        let chosen_from_future = if method.uses_future() {
            share(&|p| p.chosen.pool == Pool::Future)
        } else {
            None
        };
        let train = |s: Stage| details.get(&s).cloned().unwrap_or(Value::Null);
        let dpo_of = |v: Value| -> Value {
            let r = &v["report"];
            let mut o = json!({"model": v["model"], "trained": v["trained"], "pairs": r["pairs"],
                   "reward_margin": r["reward_margin"], "reward_accuracy": r["reward_accuracy"],
                   "final_loss": r["final_loss"], "steps": r["steps"],
                   "sampled_ids": r["sampled_ids"], "truncated_completions": r["truncated_completions"]});
            if let Some(reason) = v.get("skipped_reason") {
                o["skipped_reason"] = reason.clone();
            }
            o
        };
        let judging: serde_json::Map<String, Value> = self
            .stages()
            .iter()
            .filter(|s| s.name().starts_with("judge-"))
            .filter_map(|s| details.get(s).map(|d| (s, d)))
            .map(|(s, d)| {
                (
                    s.name().to_string(),
                    json!({"responses": d["responses"], "unscored_responses": d["unscored_responses"],
                           "unparsed_samples": d["unparsed_samples"],
                           "digit_mass_mean": d["digit_mass_mean"], "digit_mass_min": d["digit_mass_min"]}),
                )
            })
            .collect();
        let curation = |s: Stage| {
            details
                .get(&s)
                .map(|d| json!({"kept": d["kept"], "dropped": d["dropped"], "pairs": d["pairs"]}))
        };
        let provenance = self.provenance()?;
        let doubles_used = provenance
            .as_ref()
            .map(|p| p.test_doubles.clone())
            .unwrap_or_default();
        let summary = json!({
            "iteration": it,
            "method": method.as_str(),
            "provenance": provenance,
            "test_doubles": doubles_used,
            "results_are_real": doubles_used.is_empty(),
            "prompts": self.iteration_prompts(it).len(),
            "model": self.current_model(it)?.name,
            "trained_model": train(Stage::Train)["model"],
            "pairs": n,
            "chosen_score_mean": stats["chosen_score_mean"],
            "rejected_score_mean": stats["rejected_score_mean"],
            "score_gap": stats["score_gap"],
            "rejected_from_initial_share": rejected_from_initial,
            "chosen_from_future_share": chosen_from_future,
            "similarity_mean": details.get(&Stage::Similarity).map(|d| d["mean"].clone()),
            "dpo": dpo_of(train(Stage::Train)),
            "dpo_future": details.get(&Stage::TrainFuture).cloned().map(dpo_of),
            "curation": {"phase1": curation(Stage::Curate1), "phase2": curation(Stage::Curate2)},
            "judging": judging,
            "eval": details.get(&Stage::Eval),
            "compute": {
                "tokens_generated": generated,
                "generation_prompt_tokens": gen_prompt,
                "tokens_judged": judged,
                "tokens_trained": trained,
                "wall_s": wall,
                "stages": stages,
                "cumulative": {"tokens_generated": cg, "tokens_judged": cj, "tokens_trained": ct},
            },
        });
        fsio::write_json(&idir.join("summary.json"), &summary)?;
        tracing::info!(
            pairs = n,
            gap = ?stats["score_gap"].as_f64(),
            "iteration summary written"
        );
        Ok(StageRecord::default())
    }
}

/// The backend's pairwise judging as a [`tsr_judge::PairwiseJudge`], counting judge tokens.
struct BackendPairwise<'a> {
    backend: &'a mut dyn Backend,
    judge: &'a ModelRef,
    mode: tsr_judge::PairwiseMode,
    seed: u64,
    tokens: u64,
}

impl tsr_judge::PairwiseJudge for BackendPairwise<'_> {
    fn compare(
        &mut self,
        items: &[tsr_judge::PairwiseItem],
    ) -> std::result::Result<Vec<tsr_judge::PairwiseVerdict>, tsr_judge::JudgeError> {
        let v = self
            .backend
            .compare(self.judge, items, self.mode, self.seed)
            .map_err(|source| tsr_judge::JudgeError::Generator {
                requests: items.len(),
                source,
            })?;
        self.tokens += v
            .iter()
            .map(|x| (x.prompt_tokens + x.completion_tokens) as u64)
            .sum::<u64>();
        Ok(v)
    }
    fn describe(&self) -> String {
        format!(
            "{} as pairwise judge, mode {}",
            self.judge.name,
            self.mode.as_str()
        )
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

fn mean(it: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

fn pair_stats(pairs: &[PairRecord]) -> Value {
    let c = mean(pairs.iter().map(|p| p.chosen.score));
    let r = mean(pairs.iter().map(|p| p.rejected.score));
    json!({
        "count": pairs.len(),
        "chosen_score_mean": c,
        "rejected_score_mean": r,
        "score_gap": c.zip(r).map(|(c, r)| c - r),
    })
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
