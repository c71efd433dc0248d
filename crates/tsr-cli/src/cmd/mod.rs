//! One module per subcommand: `Args` (clap) and `run(Args) -> anyhow::Result<()>`.

pub mod data;
pub mod doctor;
pub mod eft;
pub mod eval;
pub mod export_gguf;
pub mod generate;
pub mod iterate;
pub mod judge;
pub mod judge_eval;
pub mod logprobs;
pub mod report;
pub mod seed_model;
pub mod sft;
pub mod train_dpo;

use std::path::Path;

use anyhow::{Context, Result};

/// Where `tsr generate` and `tsr judge` run the model: an OpenAI-compatible server (a llama.cpp
/// server, vLLM, SGLang) instead of the local libtorch engine.
#[derive(clap::Args, Debug, Default)]
pub struct EngineArgs {
    /// Base URL of an OpenAI-compatible server to sample (and judge) on instead of loading a
    /// model here, e.g. http://127.0.0.1:8080; repeat for replicas of one model. Sampling
    /// follows the server's own implementation, so samples differ from the local engine's.
    #[arg(long = "engine-url", value_name = "URL")]
    pub engine_urls: Vec<String>,
    /// The `model` name sent to the server [default: the first one it lists in /v1/models].
    #[arg(long = "engine-model", value_name = "NAME", requires = "engine_urls")]
    pub engine_model: Option<String>,
    /// Name of the environment variable that holds the server's API key (the key itself is
    /// never logged or written).
    #[arg(
        long = "engine-api-key-env",
        value_name = "VAR",
        requires = "engine_urls"
    )]
    pub engine_api_key_env: Option<String>,
    /// Requests in flight per server URL.
    #[arg(
        long = "engine-max-in-flight",
        default_value_t = 4,
        requires = "engine_urls"
    )]
    pub engine_max_in_flight: usize,
}

impl EngineArgs {
    /// The remote engine, when a URL was given.
    pub fn engine(&self) -> Result<Option<tsr_judge::OpenAiEngine>> {
        if self.engine_urls.is_empty() {
            return Ok(None);
        }
        let config = tsr_judge::RemoteConfig {
            urls: self.engine_urls.clone(),
            model: self.engine_model.clone(),
            api_key_env: self.engine_api_key_env.clone(),
            max_in_flight: self.engine_max_in_flight,
            ..tsr_judge::RemoteConfig::default()
        };
        Ok(Some(tsr_judge::OpenAiEngine::new(&config)?))
    }
}

/// Where a command's JSON lines go: stdout, or `--out` written atomically
/// (`tsr_io::AtomicFile`: an interrupted command leaves the old file or none, never half a
/// file).
pub struct Sink {
    pub writer: SinkWriter,
}

/// A [`Sink`]'s destination.
pub enum SinkWriter {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(tsr_io::AtomicFile),
}

impl std::io::Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            SinkWriter::Stdout(w) => w.write(buf),
            SinkWriter::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            SinkWriter::Stdout(w) => w.flush(),
            SinkWriter::File(f) => f.flush(),
        }
    }
}

impl Sink {
    pub fn open(dest: Option<&Path>) -> Result<Sink> {
        let writer = match dest {
            None => SinkWriter::Stdout(std::io::BufWriter::new(std::io::stdout())),
            Some(dest) => SinkWriter::File(
                tsr_io::AtomicFile::create(dest)
                    .with_context(|| format!("creating {}", dest.display()))?,
            ),
        };
        Ok(Sink { writer })
    }

    /// The destination's name, for messages.
    pub fn name(&self) -> String {
        match &self.writer {
            SinkWriter::Stdout(_) => "stdout".to_string(),
            SinkWriter::File(f) => f.dest().display().to_string(),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, s: &str) -> Result<()> {
        use std::io::Write;
        writeln!(self.writer, "{s}").with_context(|| format!("writing {}", self.name()))
    }

    /// Flushes; for a file, syncs it and renames it over the destination.
    pub fn finish(self) -> Result<()> {
        use std::io::Write;
        let name = self.name();
        match self.writer {
            SinkWriter::Stdout(mut w) => w.flush(),
            SinkWriter::File(f) => f.commit(),
        }
        .with_context(|| format!("writing {name}"))
    }
}
