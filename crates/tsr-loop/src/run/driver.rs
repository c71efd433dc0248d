//! The iteration driver: [`Run::execute`] runs every iteration's stages in order, skipping the
//! completed ones, and dispatches each stage to the module that implements it.

use super::*;
use crate::summary::{write_sorted, IterationSummary, StageCompute};

impl Run {
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
                    let mut s: IterationSummary = fsio::read_json(&path)?;
                    let own = StageCompute {
                        wall_s: Some(rec.wall_s),
                        ..StageCompute::default()
                    };
                    s.compute.stages.insert(stage.name().into(), own);
                    write_sorted(&path, &s)?;
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
}
