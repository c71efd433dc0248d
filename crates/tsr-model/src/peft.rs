//! LoRA adapters in PEFT's format: a folder with `adapter_config.json` and
//! `adapter_model.safetensors`, which `peft.PeftModel.from_pretrained(base, folder)` loads onto
//! the base model (`scripts/reference/peft_lora.py` checks that the logits agree).

use std::path::Path;

use serde_json::json;

use crate::error::ModelError;
use crate::model::Model;

/// Writes `model`'s LoRA adapters as a PEFT adapter folder `dir` (replacing it), naming
/// `base_model` (a hub id or a folder; `null` when `None`) as the model they adapt. Fails when
/// the model has no adapters.
pub fn save_lora_adapter(
    model: &Model,
    dir: &Path,
    base_model: Option<&str>,
) -> Result<(), ModelError> {
    let cfg = model
        .lora_config()
        .ok_or_else(|| ModelError::Other("the model has no LoRA adapters to save".into()))?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": 0.0,
        "target_modules": cfg.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
    });
    let tensors = model.lora_tensors();
    tsr_io::replace_dir(dir, |tmp| {
        let named: Vec<(&str, &tch::Tensor)> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        crate::hf::write_safetensors(&tmp.join("adapter_model.safetensors"), &named)?;
        let text = serde_json::to_string_pretty(&config).expect("a JSON value serializes") + "\n";
        let p = tmp.join("adapter_config.json");
        std::fs::write(&p, text).map_err(|e| ModelError::io(&p, e))
    })
    .map_err(|e| e.into_error(|e| ModelError::io(dir, e)))
}
