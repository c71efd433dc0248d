//! LoRA in the training jobs ([`crate::train_dpo`], [`crate::sft::train_sft`]): adapters are
//! added before training (so a resumed run finds the tensors its checkpoint holds) and, once
//! training is done, written in PEFT's format to `adapter/` under the output folder and merged
//! into the weights, so the caller saves an ordinary model.

use std::path::{Path, PathBuf};

use tsr_model::{LoraConfig, Model};

use crate::error::Result;

/// The adapter folder's name under a job's output folder.
pub const ADAPTER_DIR: &str = "adapter";

/// Adds the adapters `lora` asks for (none: nothing), drawn from `seed`.
pub(crate) fn attach(model: &mut Model, lora: Option<&LoraConfig>, seed: u64) -> Result<()> {
    if let Some(cfg) = lora {
        model.add_lora(cfg, seed)?;
        tracing::info!(
            r = cfg.r,
            alpha = cfg.alpha,
            targets = ?cfg.targets,
            "LoRA adapters added; base weights frozen"
        );
    }
    Ok(())
}

/// After training: writes the adapters to `out_dir/adapter` and merges them into the weights;
/// returns the adapter folder (`None` without adapters).
pub(crate) fn finish(model: &mut Model, out_dir: &Path) -> Result<Option<PathBuf>> {
    if model.lora_config().is_none() {
        return Ok(None);
    }
    let dir = out_dir.join(ADAPTER_DIR);
    tsr_model::peft::save_lora_adapter(model, &dir, None)?;
    model.merge_lora();
    Ok(Some(dir))
}
