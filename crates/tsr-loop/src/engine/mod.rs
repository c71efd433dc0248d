//! Sampling and judging on OpenAI-compatible servers inside the loop (`[backend]` in the run
//! configuration), training and hidden-state similarity on a local [`Backend`].
//!
//! [`EngineBackend`] wraps the local backend. A stage that runs on the engine names its model
//! (`M_0`, `M_i`, the future model); when that model is not the one on the server, the backend
//! stops the server it started, writes the model as GGUF through the [`ModelFiles`] the caller
//! provides (tsr-loop has no model code), starts `[backend.serve].command` for it and
//! waits for `GET /health`. Every start is recorded in `engine/served.jsonl` of the run folder
//! with the model, its GGUF file and that file's SHA-256, so a run folder says which weights each
//! server stage used. A resumed run starts with no server of its own and serves the model of the
//! stage it resumes, so it never samples from the weights of another stage.
//!
//! GGUF files are kept in `engine/` under a name that includes a fingerprint of the model folder
//! (its `config.json` and the names, sizes and modification times of its weight files), each
//! with a `.sha256` file written after it; a file whose digest does not match is written again.
//!
//! With `[backend] train = "command"`, each DPO stage is trained by an external command (TRL
//! under `accelerate launch`, for example; see [`crate::TrainerSection`]) instead of the local
//! backend; its output is loaded to check it before the loop goes on.
//!
//! Without `[backend.serve]`, the servers in `[backend.openai]` are the user's: they must serve
//! `M_0`, and a stage that needs another model fails with an error saying so.

mod gguf;
mod serve;
mod shell;
mod trainer;

use std::path::{Path, PathBuf};
use std::process::Child;

use tsr_judge::{
    Completion, GenRequest, Generator, Judge, JudgeItem, JudgeSettings, LlmJudge, OpenAiEngine,
    PairwiseItem, PairwiseMode, PairwiseVerdict, SamplingParams, Verdict,
};

use crate::backend::{Backend, ModelRef, Provenance, TrainPair, TrainReport};
use crate::config::{BackendSection, Place, TrainPlace};
use crate::error::BackendError;

/// The model-file work the engine backend needs and tsr-loop cannot do itself (it has no model
/// code): the CLI implements it with tsr-model.
pub trait ModelFiles {
    /// Writes model `m` as a GGUF file of weight type `ty` (`f32`, `f16`, `q8_0`) at `path`,
    /// atomically (a reader never sees half a file).
    fn write_gguf(&mut self, m: &ModelRef, ty: &str, path: &Path) -> Result<(), BackendError>;
    /// Writes model `m` as a Hugging Face folder `dir` (for an external trainer).
    fn write_hf(&mut self, m: &ModelRef, dir: &Path) -> Result<(), BackendError>;
    /// Fails unless `dir` holds a model that loads.
    fn check_model(&mut self, dir: &Path) -> Result<(), BackendError>;
}

/// The server tsr started, and the model on it.
struct Served {
    location: String,
    engine: OpenAiEngine,
    child: Option<Child>,
}

/// A [`Backend`] that samples and judges on servers; see the [module docs](self).
pub struct EngineBackend<B> {
    local: B,
    section: BackendSection,
    judge: JudgeSettings,
    dir: PathBuf,
    dpo: serde_json::Value,
    files: Box<dyn ModelFiles>,
    served: Option<Served>,
}

impl<B> std::fmt::Debug for EngineBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBackend")
            .field("section", &self.section)
            .field("served", &self.served.as_ref().map(|s| &s.location))
            .finish_non_exhaustive()
    }
}

impl<B> EngineBackend<B> {
    /// Stops the server tsr started, if any.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.served.take() {
            if let Some(child) = s.child.as_mut() {
                tracing::info!(model = %s.location, "stopping the server");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl<B> Drop for EngineBackend<B> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn err(msg: String) -> BackendError {
    msg.into()
}

impl<B: Backend> EngineBackend<B> {
    /// `local` measures similarity (and samples, judges or trains when that role is `local`);
    /// `judge` are the judge settings of the run (`[judge]`); `dpo` its resolved `[dpo]`
    /// settings (handed to an external trainer); `run_dir` the run folder (`engine/` in it holds
    /// GGUF files, the server and trainer logs and `served.jsonl`); `files` writes and checks
    /// model files.
    pub fn new(
        local: B,
        section: BackendSection,
        judge: JudgeSettings,
        dpo: serde_json::Value,
        run_dir: &Path,
        files: Box<dyn ModelFiles>,
    ) -> Self {
        Self {
            local,
            section,
            judge,
            dpo,
            dir: run_dir.join("engine"),
            files,
            served: None,
        }
    }

    /// The local backend.
    pub fn local(&mut self) -> &mut B {
        &mut self.local
    }
}

impl<B: Backend> Backend for EngineBackend<B> {
    fn generate(
        &mut self,
        model: &ModelRef,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, BackendError> {
        if self.section.generate == Place::Local {
            return self.local.generate(model, requests, params);
        }
        self.engine_for(model)?.generate(requests, params)
    }

    fn judge(
        &mut self,
        judge: &ModelRef,
        items: &[JudgeItem],
        seed: u64,
    ) -> Result<Vec<Verdict>, BackendError> {
        if self.section.judge == Place::Local {
            return self.local.judge(judge, items, seed);
        }
        let settings = self.judge.clone().with_seed(seed);
        let engine = self.engine_for(judge)?;
        let mut j = LlmJudge::new(engine, settings);
        let mut verdicts = j.judge(items)?;
        // The rendered judge prompt is the template filled with the item: not worth storing.
        for v in &mut verdicts {
            v.judge_prompt = None;
        }
        Ok(verdicts)
    }

    fn train_dpo(
        &mut self,
        init: &ModelRef,
        pairs: &[TrainPair],
        out_dir: &Path,
        seed: u64,
    ) -> Result<TrainReport, BackendError> {
        match self.section.train {
            TrainPlace::Local => self.local.train_dpo(init, pairs, out_dir, seed),
            TrainPlace::Command => self.train_command(init, pairs, out_dir, seed),
        }
    }

    fn representation_similarity(
        &mut self,
        model: &ModelRef,
        pairs: &[TrainPair],
    ) -> Result<Vec<f64>, BackendError> {
        self.local.representation_similarity(model, pairs)
    }

    fn compare(
        &mut self,
        judge: &ModelRef,
        items: &[PairwiseItem],
        mode: PairwiseMode,
        seed: u64,
    ) -> Result<Vec<PairwiseVerdict>, BackendError> {
        self.local.compare(judge, items, mode, seed)
    }

    fn provenance(&self) -> Provenance {
        let mut p = self.local.provenance();
        let roles: Vec<&str> = [
            (self.section.generate, "sampling"),
            (self.section.judge, "judging"),
        ]
        .iter()
        .filter(|(place, _)| *place == Place::Openai)
        .map(|(_, r)| *r)
        .collect();
        let how = match &self.section.serve {
            Some(s) if s.gguf != "none" => format!("served per model as {} GGUF", s.gguf),
            Some(_) => "served per model by the serve command".to_string(),
            None => format!("at {}", self.section.openai.urls.join(", ")),
        };
        if !roles.is_empty() {
            p.backend = format!(
                "{}; {} on OpenAI-compatible server(s), {how} (engine/served.jsonl)",
                p.backend,
                roles.join(" and ")
            );
        }
        if let (TrainPlace::Command, Some(t)) = (self.section.train, &self.section.trainer) {
            p.backend = format!(
                "{}; DPO trained by the command `{}` (engine/trainer.log)",
                p.backend, t.command
            );
        }
        if self.section.judge == Place::Openai {
            p.judge = format!("{} (on the server)", self.judge.describe());
        }
        p
    }
}
