//! The run configuration: `[run]` and `[loop]` are owned here; `[sampling]` is the shared
//! [`SamplingParams`] of `tsr-judge` (policy sampling); `[judge]` and `[dpo]` are passed through
//! opaque to the [`crate::Backend`], which maps them onto its judge and trainer configurations.
//!
//! Defaults live in the `Default` impls below and nowhere else.

use crate::error::{io, LoopError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tsr_judge::SamplingParams;

/// Which curation the iterations run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Self-Rewarding: best/worst of `P_i`, one DPO model per iteration.
    Sr,
    /// Temporal Self-Rewarding: anchored rejection, a future model, future-guided chosen.
    Tsr,
    /// Ablation: anchored-rejection pairs (`D_1`) train `M_{i+1}` directly, no `M_f`.
    PastOnly,
    /// Ablation: SR pairs train `M_f`, then future-guided chosen (Phase 2).
    FutureOnly,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Sr => "sr",
            Method::Tsr => "tsr",
            Method::PastOnly => "past-only",
            Method::FutureOnly => "future-only",
        }
    }
    /// Whether the method samples from the initial model (`P_0`).
    pub fn uses_initial(self) -> bool {
        matches!(self, Method::Tsr | Method::PastOnly)
    }
    /// Whether the method trains a future model and samples `P_f`.
    pub fn uses_future(self) -> bool {
        matches!(self, Method::Tsr | Method::FutureOnly)
    }
}

/// Which prompts get future samples `P_f` in Phase 2 (the TSR paper does not say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FuturePrompts {
    /// Every prompt with a Phase-1 candidate pair, kept or not: Phase 2's own margin check can
    /// then rescue a Phase-1 drop (the reading of the algorithm in which that check matters).
    All,
    /// Only prompts whose Phase-1 pair was kept (`D_1`): cheaper.
    Kept,
}

/// `[run]`: what to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// The seed model `M_0`: a model name the backend knows or a checkpoint folder.
    pub model: String,
    /// Prompts file (JSON lines with `id` and `prompt`), relative to the config file.
    pub prompts: PathBuf,
    pub method: Method,
    pub iterations: u32,
    /// Run seed; every stochastic call derives its seed from it.
    pub seed: u64,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            model: "smollm2-135m-instruct".into(),
            prompts: PathBuf::from("prompts.jsonl"),
            method: Method::Tsr,
            iterations: 1,
            seed: 0,
        }
    }
}

/// `[loop]`: how each iteration is carried out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopSection {
    /// Responses sampled per prompt and per pool (the papers: SR 4, TSR 7).
    pub k: usize,
    /// Prompts per iteration (each iteration takes the next, fresh chunk). 0 = the prompts file
    /// divided evenly by `iterations` (all of it when `cycle_prompts`).
    pub prompts_per_iteration: usize,
    pub future_prompts: FuturePrompts,
    /// Prompts per generation/judging chunk: each chunk is written to disk as it completes, so a
    /// crash loses at most one chunk of work.
    pub chunk_prompts: usize,
    /// When the prompts run out, start over from the first chunk instead of failing (each
    /// iteration then no longer sees fresh prompts; `P_0` samples are reused, not redrawn).
    pub cycle_prompts: bool,
    /// Measure the cosine similarity of chosen/rejected hidden states under `M_i`.
    pub similarity: bool,
}

impl Default for LoopSection {
    fn default() -> Self {
        Self {
            k: 7,
            prompts_per_iteration: 0,
            future_prompts: FuturePrompts::All,
            chunk_prompts: 16,
            cycle_prompts: false,
            similarity: true,
        }
    }
}

/// Where a role of the loop runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// In this process (the CLI's libtorch backend).
    #[default]
    Local,
    /// On OpenAI-compatible servers (`[backend.openai]`), started per model by `[backend.serve]`.
    Openai,
}

/// `[backend]`: where sampling and judging run. Training and the hidden-state similarity stay
/// local. Absent: everything local.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSection {
    /// Every sampling stage: the policy's pool, `M_0`'s pool, the future model's pool and the
    /// evaluation answers.
    pub generate: Place,
    /// Every judging stage (the current model as the judge).
    pub judge: Place,
    /// DPO training: `local` (tsr-dpo), or `command` (`[backend.trainer]`, e.g. TRL).
    pub train: TrainPlace,
    /// The servers and client limits (tsr-judge's `RemoteConfig`). `urls` may be left empty
    /// when `serve.command` takes a `{port}`: tsr then picks a free local port.
    pub openai: tsr_judge::RemoteConfig,
    /// How tsr puts each model on the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeSection>,
    /// The external trainer of `train = "command"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trainer: Option<TrainerSection>,
}

/// Where DPO training runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainPlace {
    /// tsr-dpo in this process.
    #[default]
    Local,
    /// An external command (`[backend.trainer]`): TRL, OpenRLHF, a cluster job.
    Command,
}

/// `[backend.trainer]`: a command that trains one DPO stage. tsr writes the stage's pairs as
/// TRL's conversational `prompt/chosen/rejected` JSON lines, the init model as a Hugging Face
/// folder (when it is not one already) and the run's resolved `[dpo]` settings as JSON, runs
/// `sh -c "exec COMMAND"` with `{init}`, `{data}`, `{settings}`, `{out}`, `{metrics}` and
/// `{seed}` filled in, checks its exit status, and loads `{out}` to check that it is a model.
/// `{metrics}` is where the command writes `{"log_history": [...], "tokens": N}` (TRL's logs;
/// see docs/examples/engines/trl_dpo.py). A killed or failed command leaves no model: the stage
/// runs it again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerSection {
    pub command: String,
}

impl BackendSection {
    /// Whether any role runs on a server.
    pub fn uses_engine(&self) -> bool {
        self.generate == Place::Openai || self.judge == Place::Openai
    }

    /// Whether anything runs outside tsr's local backend.
    pub fn is_external(&self) -> bool {
        self.uses_engine() || self.train == TrainPlace::Command
    }
}

/// `[backend.serve]`: a command that serves one model. Before a stage needs a model that is not
/// on the server, tsr stops the server it started (if any), writes the model as GGUF when
/// `gguf` asks for it, runs the command and waits until `GET /health` answers 200.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSection {
    /// Run with `sh -c "exec COMMAND"`; `{gguf}` is the model's GGUF file, `{model}` its folder
    /// or spec, `{port}` a free local port (the server's URL is then `http://127.0.0.1:{port}`).
    /// Its stdin is a pipe from tsr that closes when tsr exits (a server that stops on EOF dies
    /// with tsr even after kill -9); its output goes to `engine/server.log` in the run folder.
    pub command: String,
    /// The GGUF weight type written for `{gguf}`: `f32`, `f16`, `q8_0`, or `none` (no export;
    /// the command loads `{model}` itself, as vLLM and SGLang do).
    pub gguf: String,
    /// How long a started server may take to answer `/health`, in seconds.
    pub ready_timeout_s: f64,
}

impl Default for ServeSection {
    fn default() -> Self {
        Self {
            command: String::new(),
            gguf: "f16".into(),
            ready_timeout_s: 300.0,
        }
    }
}

impl BackendSection {
    fn validate(&self) -> std::result::Result<(), String> {
        if self.train == TrainPlace::Command {
            let c = self
                .trainer
                .as_ref()
                .map(|t| t.command.trim())
                .unwrap_or("");
            if c.is_empty() {
                return Err("[backend] train = \"command\" needs backend.trainer.command".into());
            }
            for p in ["{init}", "{data}", "{out}"] {
                if !c.contains(p) {
                    return Err(format!(
                        "backend.trainer.command does not use {p}: the trainer would not know \
                         its init model, its pairs or where to write the model"
                    ));
                }
            }
        }
        if !self.uses_engine() {
            return Ok(());
        }
        let Some(serve) = &self.serve else {
            if self.openai.urls.is_empty() {
                return Err(
                    "[backend] runs a role on `openai` but names no server: set \
                            backend.openai.urls, or backend.serve.command with a {port}"
                        .into(),
                );
            }
            return self
                .openai
                .validate()
                .map(drop)
                .map_err(|e| format!("backend.openai: {e}"));
        };
        let c = &serve.command;
        if c.trim().is_empty() {
            return Err("backend.serve.command is empty".into());
        }
        if !["f32", "f16", "q8_0", "none"].contains(&serve.gguf.as_str()) {
            return Err(format!(
                "backend.serve.gguf = {:?}: use f32, f16, q8_0 or none",
                serve.gguf
            ));
        }
        if !c.contains("{gguf}") && !c.contains("{model}") {
            return Err(
                "backend.serve.command uses neither {gguf} nor {model}: the server \
                        would not know which model to load"
                    .into(),
            );
        }
        if c.contains("{gguf}") && serve.gguf == "none" {
            return Err(
                "backend.serve.command uses {gguf} but backend.serve.gguf = \"none\"".into(),
            );
        }
        if !c.contains("{port}") && self.openai.urls.is_empty() {
            return Err(
                "backend.serve.command has no {port} and backend.openai.urls is empty: \
                        tsr cannot know where the server listens"
                    .into(),
            );
        }
        if !(serve.ready_timeout_s.is_finite() && serve.ready_timeout_s > 0.0) {
            return Err("backend.serve.ready_timeout_s must be a positive number".into());
        }
        let mut probe = self.openai.clone();
        if probe.urls.is_empty() {
            probe.urls = vec!["http://127.0.0.1:1".into()];
        }
        probe
            .validate()
            .map(drop)
            .map_err(|e| format!("backend.openai: {e}"))
    }
}

/// `[eval]`: after each iteration, answer held-out prompts with `M_{i+1}`, `M_i` and `M_0` and
/// compare them pairwise with a judge model (win rates in both orders, see `tsr_judge::winrate`).
/// Absent: no evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Held-out prompts (JSON lines `{id, prompt}`); none: tsr's 24 built-in evaluation
    /// instructions. They must not overlap the training prompts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PathBuf>,
    /// Use only the first N prompts (0: all).
    pub limit: usize,
    /// The judge: `m0` (the seed model), `current` (the model being evaluated) or a model spec.
    pub judge: String,
    /// `direct` (probabilities of A/B/tie after `Winner:`) or `sampled`.
    pub mode: tsr_judge::PairwiseMode,
    /// Also compare `M_{i+1}` with `M_0` (from iteration 2 on; in iteration 1 `M_i` is `M_0`).
    pub vs_initial: bool,
    /// Generation limit of the evaluated answers (decoded greedily).
    pub max_new_tokens: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            prompts: None,
            limit: 0,
            judge: "m0".into(),
            mode: tsr_judge::PairwiseMode::Direct,
            vs_initial: true,
            max_new_tokens: 96,
        }
    }
}

/// Written by tsr into the run directory's copy of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolved {
    pub tsr_version: String,
    pub prompt_count: usize,
}

/// A whole run configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub run: RunSection,
    #[serde(rename = "loop")]
    pub loop_: LoopSection,
    pub sampling: SamplingParams,
    /// Judge settings, owned by the backend (tsr-judge's `JudgeConfig` in the CLI).
    pub judge: toml::Table,
    /// DPO settings, owned by the backend (tsr-dpo's config in the CLI).
    pub dpo: toml::Table,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
}

impl Config {
    /// Parse TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| LoopError::ConfigParse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// Read and parse a TOML file; a relative `run.prompts` is resolved against its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut cfg = Self::from_toml_str(&text, path)?;
        if let Some(dir) = path.parent() {
            if cfg.run.prompts.is_relative() {
                cfg.run.prompts = dir.join(&cfg.run.prompts);
            }
            if let Some(p) = cfg.eval.as_mut().and_then(|e| e.prompts.as_mut()) {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(cfg)
    }

    /// The resolved configuration as TOML text.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| LoopError::Config(format!("cannot serialize: {e}")))
    }

    /// Check every value this crate understands (and the few shared ones it can check).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LoopError::Config(m));
        if self.run.model.trim().is_empty() {
            return bad("run.model is empty".into());
        }
        if self.run.iterations == 0 {
            return bad("run.iterations must be at least 1".into());
        }
        if self.loop_.k < 2 {
            return bad(format!(
                "loop.k = {} but at least 2 responses per prompt are needed",
                self.loop_.k
            ));
        }
        if self.loop_.chunk_prompts == 0 {
            return bad("loop.chunk_prompts must be at least 1".into());
        }
        let s = &self.sampling;
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return bad(format!("sampling.top_p = {} is outside (0, 1]", s.top_p));
        }
        if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
            return bad(format!(
                "sampling.temperature = {} must be >= 0",
                s.temperature
            ));
        }
        if !(0.0..=1.0).contains(&s.min_p) {
            return bad(format!("sampling.min_p = {} is outside [0, 1]", s.min_p));
        }
        if s.repetition_penalty.is_nan() || s.repetition_penalty <= 0.0 {
            return bad(format!(
                "sampling.repetition_penalty = {} must be > 0",
                s.repetition_penalty
            ));
        }
        if s.max_new_tokens == 0 {
            return bad("sampling.max_new_tokens must be at least 1".into());
        }
        if let Some(beta) = self.dpo.get("beta") {
            match beta
                .as_float()
                .or_else(|| beta.as_integer().map(|i| i as f64))
            {
                Some(b) if b > 0.0 && b.is_finite() => {}
                _ => return bad(format!("dpo.beta = {beta} must be a number > 0")),
            }
        }
        if let Some(e) = &self.eval {
            if e.max_new_tokens == 0 {
                return bad("eval.max_new_tokens must be at least 1".into());
            }
            if e.judge.trim().is_empty() {
                return bad("eval.judge is empty (use `m0`, `current` or a model)".into());
            }
        }
        if let Some(b) = self.backend.as_ref() {
            b.validate().map_err(LoopError::Config)?;
        }
        if let Some(top_p) = self.judge.get("top_p").and_then(|v| v.as_float()) {
            if !(top_p > 0.0 && top_p <= 1.0) {
                return bad(format!("judge.top_p = {top_p} is outside (0, 1]"));
            }
        }
        Ok(())
    }

    /// Prompts per iteration once the prompt count is known.
    pub fn chunk_size(&self, prompt_count: usize) -> Result<usize> {
        let iters = self.run.iterations as usize;
        let per = if self.loop_.prompts_per_iteration == 0 {
            if self.loop_.cycle_prompts {
                prompt_count
            } else {
                prompt_count / iters
            }
        } else {
            self.loop_.prompts_per_iteration
        };
        if per == 0
            || per > prompt_count
            || (!self.loop_.cycle_prompts && per * iters > prompt_count)
        {
            return Err(LoopError::Config(format!(
                "{prompt_count} prompts cannot give {iters} iteration(s) a fresh chunk of {} prompts each",
                per.max(1)
            )));
        }
        Ok(per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config> {
        let c = Config::from_toml_str(s, Path::new("run.toml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = parse("").unwrap();
        assert_eq!(c.loop_.k, 7);
        assert_eq!(c.run.method, Method::Tsr);
        let text = c.to_toml_string().unwrap();
        assert_eq!(parse(&text).unwrap(), c);
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            ("[run]\nbogus = 1", "unknown field `bogus`"),
            ("[nope]\n", "unknown field `nope`"),
            ("[sampling]\ntop_pp = 0.9", "unknown field `top_pp`"),
            ("[dpo]\nbeta = 0.0", "dpo.beta"),
            ("[dpo]\nbeta = -1", "dpo.beta"),
            ("[sampling]\ntop_p = 0.0", "sampling.top_p"),
            ("[sampling]\ntop_p = 1.5", "sampling.top_p"),
            ("[loop]\nk = 1", "loop.k"),
            ("[run]\niterations = 0", "run.iterations"),
            ("[run]\nmethod = \"dpo\"", "unknown variant `dpo`"),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn chunks_must_fit() {
        let mut c = Config::default();
        c.run.iterations = 2;
        assert_eq!(c.chunk_size(10).unwrap(), 5);
        assert!(c.chunk_size(1).is_err());
        c.loop_.prompts_per_iteration = 6;
        assert!(c.chunk_size(10).is_err());
    }
}
