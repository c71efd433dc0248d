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

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use tsr_judge::{
    Completion, GenRequest, Generator, Judge, JudgeItem, JudgeSettings, LlmJudge, OpenAiEngine,
    PairwiseItem, PairwiseMode, PairwiseVerdict, RemoteConfig, SamplingParams, Verdict,
};

use crate::backend::{Backend, ModelRef, Provenance, TrainPair, TrainReport};
use crate::config::{BackendSection, Place, ServeSection, TrainPlace};
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

    /// The engine serving `m`, starting a server for it when needed.
    fn engine_for(&mut self, m: &ModelRef) -> Result<&mut OpenAiEngine, BackendError> {
        if self
            .served
            .as_ref()
            .is_none_or(|s| s.location != m.location)
        {
            self.serve(m)?;
        }
        Ok(&mut self.served.as_mut().expect("served above").engine)
    }

    fn serve(&mut self, m: &ModelRef) -> Result<(), BackendError> {
        self.stop();
        let Some(serve) = self.section.serve.clone() else {
            if m.name != "m0" {
                return Err(err(format!(
                    "this stage needs model {} ({}) on the server, but [backend.serve] is not \
                     set: the servers in backend.openai.urls are yours and must serve M_0, and \
                     without a serve command tsr cannot put the loop's other models (the future \
                     model, M_1, ...) on them",
                    m.name, m.location
                )));
            }
            let engine = OpenAiEngine::new(&self.section.openai)?;
            self.record(m, None, None, &self.section.openai.urls, 0.0)?;
            self.served = Some(Served {
                location: m.location.clone(),
                engine,
                child: None,
            });
            return Ok(());
        };
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| err(format!("{}: {e}", self.dir.display())))?;
        let gguf = if serve.gguf == "none" {
            None
        } else {
            Some(self.gguf_for(m, &serve.gguf)?)
        };
        let (port, urls) = if serve.command.contains("{port}") {
            let p = free_port()?;
            (Some(p), vec![format!("http://127.0.0.1:{p}")])
        } else {
            (None, self.section.openai.urls.clone())
        };
        let command = render(
            &serve.command,
            gguf.as_ref().map(|g| &g.0),
            &m.location,
            port,
        );
        let t0 = Instant::now();
        let child = self.start(&serve, &command, &urls)?;
        let ready_s = t0.elapsed().as_secs_f64();
        tracing::info!(model = %m.name, ?urls, ready_s, "server ready");
        self.record(m, gguf.as_ref(), Some(&command), &urls, ready_s)?;
        let engine = OpenAiEngine::new(&RemoteConfig {
            urls,
            ..self.section.openai.clone()
        })?;
        self.served = Some(Served {
            location: m.location.clone(),
            engine,
            child: Some(child),
        });
        Ok(())
    }

    /// The model's GGUF file and its SHA-256, written when missing or not matching its digest.
    fn gguf_for(&mut self, m: &ModelRef, ty: &str) -> Result<(PathBuf, String), BackendError> {
        let safe: String = m
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let name = format!("{safe}-{:016x}.{ty}.gguf", fingerprint(&m.location));
        // Absolute, so that a serve command that changes directory still finds it.
        let path = std::path::absolute(self.dir.join(name))
            .map_err(|e| err(format!("{}: {e}", self.dir.display())))?;
        let sum_path = path.with_extension("gguf.sha256");
        if path.is_file() {
            let recorded = std::fs::read_to_string(&sum_path).unwrap_or_default();
            let actual = sha256_file(&path)?;
            if recorded.trim() == actual {
                return Ok((path, actual));
            }
            tracing::warn!(path = %path.display(), "GGUF file does not match its recorded digest; writing it again");
        }
        tracing::info!(model = %m.name, path = %path.display(), "writing GGUF for the server");
        self.files.write_gguf(m, ty, &path)?;
        let sum = sha256_file(&path)?;
        crate::fsio::write_atomic(&sum_path, |w| writeln!(w, "{sum}"))
            .map_err(|e| err(e.to_string()))?;
        Ok((path, sum))
    }

    /// Runs the serve command and waits until every URL answers `/health`.
    fn start(
        &self,
        serve: &ServeSection,
        command: &str,
        urls: &[String],
    ) -> Result<Child, BackendError> {
        let log_path = self.dir.join("server.log");
        let mut child = shell(command, &log_path)?
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run the serve command `{command}`: {e}")))?;
        tracing::info!(%command, "started the server");
        let deadline = Instant::now() + Duration::from_secs_f64(serve.ready_timeout_s);
        let mut pending: Vec<&String> = urls.iter().collect();
        loop {
            pending.retain(|u| !tsr_judge::remote::health_ok(u, Duration::from_secs(5)));
            if pending.is_empty() {
                return Ok(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(err(format!(
                    "the serve command `{command}` exited ({status}) before {} answered \
                     /health; {} ends:\n{}",
                    pending[0],
                    log_path.display(),
                    log_tail(&log_path)
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!(
                    "{}/health did not answer 200 within {} s of starting `{command}`; {} \
                     ends:\n{}",
                    pending[0],
                    serve.ready_timeout_s,
                    log_path.display(),
                    log_tail(&log_path)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Appends one line to `engine/served.jsonl`.
    fn record(
        &self,
        m: &ModelRef,
        gguf: Option<&(PathBuf, String)>,
        command: Option<&str>,
        urls: &[String],
        ready_s: f64,
    ) -> Result<(), BackendError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| err(format!("{}: {e}", self.dir.display())))?;
        let line = json!({
            "model": m.name,
            "location": m.location,
            "gguf": gguf.map(|g| g.0.file_name().map(|n| n.to_string_lossy().into_owned())),
            "gguf_sha256": gguf.map(|g| &g.1),
            "command": command,
            "urls": urls,
            "ready_s": ready_s,
            "started_by_tsr": command.is_some(),
        });
        let path = self.dir.join("served.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        writeln!(f, "{line}").map_err(|e| err(format!("{}: {e}", path.display())))?;
        f.sync_all()
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        Ok(())
    }
}

impl<B: Backend> EngineBackend<B> {
    /// One DPO stage by `[backend.trainer].command` (see [`crate::TrainerSection`]).
    fn train_command(
        &mut self,
        init: &ModelRef,
        pairs: &[TrainPair],
        out_dir: &Path,
        seed: u64,
    ) -> Result<TrainReport, BackendError> {
        let template = self
            .section
            .trainer
            .as_ref()
            .map(|t| t.command.clone())
            .unwrap_or_default();
        let io = |p: &Path, e: std::io::Error| err(format!("{}: {e}", p.display()));
        let abs = |p: &Path| std::path::absolute(p).map_err(|e| io(p, e));
        // A fresh work folder and an empty output folder: a killed earlier attempt left at most
        // files that are never read.
        let work = abs(&out_dir.with_extension("trainer-work"))?;
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(|e| io(&work, e))?;
        }
        std::fs::create_dir_all(&work).map_err(|e| io(&work, e))?;
        if out_dir.exists() {
            std::fs::remove_dir_all(out_dir).map_err(|e| io(out_dir, e))?;
        }
        std::fs::create_dir_all(out_dir).map_err(|e| io(out_dir, e))?;
        let out = abs(out_dir)?;
        let init_dir = if Path::new(&init.location).join("config.json").is_file() {
            abs(Path::new(&init.location))?
        } else {
            let d = work.join("init");
            self.files.write_hf(init, &d)?;
            d
        };
        let data = work.join("pairs.jsonl");
        let settings = work.join("dpo.json");
        let metrics = work.join("metrics.json");
        crate::fsio::write_atomic(&data, |w| {
            for p in pairs {
                let row = json!({
                    "prompt": [{"role": "user", "content": p.prompt}],
                    "chosen": [{"role": "assistant", "content": p.chosen}],
                    "rejected": [{"role": "assistant", "content": p.rejected}],
                });
                writeln!(w, "{row}")?;
            }
            Ok(())
        })
        .map_err(|e| err(e.to_string()))?;
        let mut dpo = self.dpo.clone();
        if let Some(o) = dpo.as_object_mut() {
            o.insert("seed".into(), json!(seed));
        }
        crate::fsio::write_atomic(&settings, |w| writeln!(w, "{dpo}"))
            .map_err(|e| err(e.to_string()))?;
        let command = template
            .replace("{init}", &init_dir.display().to_string())
            .replace("{data}", &data.display().to_string())
            .replace("{settings}", &settings.display().to_string())
            .replace("{out}", &out.display().to_string())
            .replace("{metrics}", &metrics.display().to_string())
            .replace("{seed}", &seed.to_string());
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let log_path = self.dir.join("trainer.log");
        tracing::info!(init = %init.name, pairs = pairs.len(), %command, "training with the trainer command");
        let status = shell(&command, &log_path)?
            .stdin(Stdio::null())
            .status()
            .map_err(|e| err(format!("cannot run the trainer command `{command}`: {e}")))?;
        if !status.success() {
            return Err(err(format!(
                "the trainer command `{command}` failed ({status}); {} ends:\n{}",
                log_path.display(),
                log_tail(&log_path)
            )));
        }
        self.files.check_model(&out).map_err(|e| {
            err(format!(
                "the trainer command `{command}` succeeded but {} is not a model: {e}",
                out.display()
            ))
        })?;
        let report = read_trainer_metrics(&metrics, pairs.len(), &self.dpo)?;
        std::fs::remove_dir_all(&work).map_err(|e| io(&work, e))?;
        Ok(report)
    }
}

/// The [`TrainReport`] of an external trainer's metrics file (TRL's `log_history`).
fn read_trainer_metrics(
    path: &Path,
    pairs: usize,
    dpo: &serde_json::Value,
) -> Result<TrainReport, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "the trainer wrote no metrics file {}: {e}",
            path.display()
        ))
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| err(format!("{}: not JSON: {e}", path.display())))?;
    // The per-step entries (the closing summary has `train_runtime` and no `step` loss).
    let steps_log: Vec<serde_json::Value> = v["log_history"]
        .as_array()
        .ok_or_else(|| err(format!("{}: no log_history list", path.display())))?
        .iter()
        .filter(|e| e.get("loss").is_some() && e.get("step").is_some())
        .cloned()
        .collect();
    let last = steps_log.last();
    Ok(TrainReport {
        pairs,
        epochs: dpo["epochs"].as_u64().unwrap_or(1) as usize,
        steps: last.and_then(|l| l["step"].as_u64()).unwrap_or(0) as usize,
        tokens: v["tokens"].as_u64().unwrap_or(0),
        reward_margin: TrainReport::last_epoch_mean(&steps_log, "rewards/margins"),
        reward_accuracy: TrainReport::last_epoch_mean(&steps_log, "rewards/accuracies"),
        final_loss: last.and_then(|l| l["loss"].as_f64()),
        sampled_ids: false,
        truncated_completions: None,
        steps_log,
    })
}

/// `sh -c "exec COMMAND"` with stdout and stderr appended to `log` (after a line naming the
/// command).
fn shell(command: &str, log: &Path) -> Result<Command, BackendError> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| err(format!("{}: {e}", log.display())))
    };
    writeln!(open()?, "--- tsr: {command}").map_err(|e| err(format!("{}: {e}", log.display())))?;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("exec {command}"))
        .stdout(open()?)
        .stderr(open()?);
    Ok(c)
}

/// The command with `{gguf}`, `{model}` and `{port}` filled in.
fn render(template: &str, gguf: Option<&PathBuf>, model: &str, port: Option<u16>) -> String {
    let mut c = template.replace("{model}", model);
    if let Some(g) = gguf {
        c = c.replace("{gguf}", &g.display().to_string());
    }
    if let Some(p) = port {
        c = c.replace("{port}", &p.to_string());
    }
    c
}

/// A port the OS reports free on 127.0.0.1 (released before the server binds it).
fn free_port() -> Result<u16, BackendError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| err(format!("cannot find a free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| err(e.to_string()))?.port())
}

/// A fingerprint of a model folder (its `config.json`, and the names, sizes and modification
/// times of its other files), or of the spec string when it is not a folder.
fn fingerprint(location: &str) -> u64 {
    let mut h = DefaultHasher::new();
    location.hash(&mut h);
    let dir = Path::new(location);
    if dir.is_dir() {
        std::fs::read(dir.join("config.json")).ok().hash(&mut h);
        let mut entries: Vec<(String, u64, Option<Duration>)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let md = e.metadata().ok()?;
                let mtime = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    md.len(),
                    mtime,
                ))
            })
            .collect();
        entries.sort();
        entries.hash(&mut h);
    }
    h.finish()
}

fn sha256_file(path: &Path) -> Result<String, BackendError> {
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_render_their_placeholders() {
        let c = render(
            "python serve.py {gguf} --port {port} # {model}",
            Some(&PathBuf::from("/r/engine/m0.gguf")),
            "smollm2",
            Some(8123),
        );
        assert_eq!(c, "python serve.py /r/engine/m0.gguf --port 8123 # smollm2");
    }

    #[test]
    fn fingerprints_follow_the_folder_contents() {
        let d = tempfile::tempdir().unwrap();
        let loc = d.path().to_str().unwrap().to_string();
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        let a = fingerprint(&loc);
        assert_eq!(a, fingerprint(&loc));
        std::fs::write(d.path().join("model.safetensors"), "weights").unwrap();
        assert_ne!(a, fingerprint(&loc));
        assert_ne!(fingerprint("smollm2"), fingerprint("qwen"));
    }
}
