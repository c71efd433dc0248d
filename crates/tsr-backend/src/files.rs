//! [`TorchModelFiles`]: the model files `tsr_loop::EngineBackend` needs (GGUF for a serve
//! command, Hugging Face folders for a trainer command, loading an external trainer's output to
//! check it), done with tsr-model.

use std::path::Path;

use anyhow::Context;

/// Model files for `[backend]`: GGUF for the serve command, HF folders for the trainer command.
#[derive(Debug, Clone, Copy, Default)]
pub struct TorchModelFiles;

fn load_cpu(m: &tsr_loop::ModelRef) -> anyhow::Result<tsr_model::Loaded> {
    tsr_model::load(&m.location, &tsr_model::LoadOptions::default())
        .with_context(|| format!("loading model {} ({})", m.name, m.location))
}

impl tsr_loop::ModelFiles for TorchModelFiles {
    fn write_gguf(
        &mut self,
        m: &tsr_loop::ModelRef,
        ty: &str,
        path: &Path,
    ) -> std::result::Result<(), tsr_loop::BackendError> {
        let ty: tsr_model::gguf_export::ExportType = ty.parse()?;
        tsr_model::gguf_export::export_gguf(&load_cpu(m)?, path, ty, None)?;
        Ok(())
    }

    fn write_hf(
        &mut self,
        m: &tsr_loop::ModelRef,
        dir: &Path,
    ) -> std::result::Result<(), tsr_loop::BackendError> {
        let l = load_cpu(m)?;
        l.model.save_hf(dir, &l.tokenizer, &l.generation)?;
        Ok(())
    }

    fn check_model(&mut self, dir: &Path) -> std::result::Result<(), tsr_loop::BackendError> {
        let spec = dir
            .to_str()
            .context("a model folder path that is not UTF-8")?;
        tsr_model::load(spec, &tsr_model::LoadOptions::default())?;
        Ok(())
    }
}
