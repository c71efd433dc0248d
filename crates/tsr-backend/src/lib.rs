//! `tsr-backend`: the libtorch implementation of tsr-loop's [`Backend`] seam, so that a program
//! (the `tsr` binary, or your own loop) gets real models with one call.
//!
//! - [`TorchBackend`] samples with tsr-sample, judges with tsr-judge's `LlmJudge` (the current
//!   model as the judge), trains DPO with tsr-dpo and measures hidden-state similarity, on the CPU
//!   or a CUDA device. Its settings ([`TorchSettings`]) come from a run configuration's `[judge]`
//!   and `[dpo]` sections.
//! - [`TorchModelFiles`] writes GGUF files and Hugging Face folders and checks a trained folder,
//!   for `tsr_loop::EngineBackend` (sampling and judging on servers, training by a command).
//! - [`backend_for`] is the one wiring point: the backend a run configuration asks for.
//!
//! The commands of the `tsr` binary as library calls, each taking a plain options struct:
//! [`seed_model`] (the judge-tuned seed model), [`eft`] (EFT data files), [`train`] (SFT and
//! DPO into an output folder), [`eval_data`] (the evaluation sets and the built-in judge pairs)
//! and [`doctor`] (what the environment looks like); [`generate`] (completions for a prompt
//! file), [`judging`] (judging a file of responses, judge accuracy on pairs), [`eval`] (win
//! rates, GSM8K accuracy, the AlpacaEval export) and [`logprobs`] (a completion's token
//! log-probabilities). [`load_model`] and [`sampler`] are how they load a model and sample from
//! it.
//!
//! `examples/custom_loop.rs` builds a two-iteration loop of its own from these pieces and
//! tsr-curate, with a curation rule of its own.

pub mod doctor;
pub mod eft;
pub mod eval;
pub mod eval_data;
mod files;
pub mod generate;
pub mod judging;
mod local;
pub mod logprobs;
pub mod seed_model;
mod torch;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};
use tsr_loop::Backend;
use tsr_model::Device;

pub use files::TorchModelFiles;
pub use local::{batch_sampler, load_model, load_model_as, sampler};
pub use torch::{TorchBackend, TorchSettings};

/// The backend `cfg` asks for on `device`: a [`TorchBackend`], inside a
/// `tsr_loop::EngineBackend` when `[backend]` puts sampling or judging on servers or training on
/// a command (`run_dir` is the run folder, where the engine keeps its files). With `hash_judge`
/// the judge is a hash of the item (a test double the run folder records), which cannot be
/// combined with judging on a server.
pub fn backend_for(
    cfg: &tsr_loop::Config,
    device: Device,
    hash_judge: bool,
    run_dir: &Path,
) -> Result<Box<dyn Backend>> {
    let mut settings = TorchSettings::from_config(cfg, device)?;
    settings.hash_judge = hash_judge;
    if hash_judge {
        tracing::warn!("hash judge: scores come from a hash, not from the model");
    }
    let Some(section) = cfg.backend.clone().filter(|s| s.is_external()) else {
        return Ok(Box::new(TorchBackend::new(settings)));
    };
    anyhow::ensure!(
        !(hash_judge && section.judge == tsr_loop::Place::Openai),
        "the hash judge replaces the judge, but [backend] judge = \"openai\" puts it on the \
         server: drop one of them"
    );
    let judge = settings.judge.clone();
    let dpo = serde_json::to_value(&settings.dpo).context("the [dpo] settings")?;
    Ok(Box::new(tsr_loop::EngineBackend::new(
        TorchBackend::new(settings),
        section,
        judge,
        dpo,
        run_dir,
        Box::new(TorchModelFiles),
    )))
}

/// Writes `bytes` to `dest` atomically (`tsr_io::write`), naming `dest` in the error.
pub fn write_atomic(dest: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    tsr_io::write(dest, bytes).with_context(|| format!("writing {}", dest.display()))
}
