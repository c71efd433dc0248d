//! Putting a model on a server: the serve command (its placeholders, a free port), waiting for
//! `GET /health`, and the record of every start in `engine/served.jsonl`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tsr_judge::{OpenAiEngine, RemoteConfig};

use super::shell::{log_tail, shell};
use super::{err, EngineBackend, Served};
use crate::backend::{Backend, ModelRef};
use crate::config::ServeSection;
use crate::error::BackendError;

impl<B: Backend> EngineBackend<B> {
    /// The engine serving `m`, starting a server for it when needed.
    pub(super) fn engine_for(&mut self, m: &ModelRef) -> Result<&mut OpenAiEngine, BackendError> {
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
}
