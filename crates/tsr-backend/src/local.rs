//! A model on this machine: loading one by name, folder or file, and the sampler over it that
//! the commands generate and judge with.

use anyhow::{Context, Result};
use tsr_model::{load, Device, Kind, LoadOptions, Loaded};
use tsr_sample::{Sampler, SamplerOptions};

/// Loads `spec` (a built-in model name, a Hugging Face folder or a .gguf file) on `device` with
/// the default dtype (f32); the error names the model.
pub fn load_model(spec: &str, device: Device) -> Result<Loaded> {
    load_model_as(spec, device, LoadOptions::default().kind)
}

/// [`load_model`] with the weights in `kind` (f32, bf16 or f16).
pub fn load_model_as(spec: &str, device: Device, kind: Kind) -> Result<Loaded> {
    load(spec, &LoadOptions { device, kind })
        .with_context(|| format!("loading model {spec} ({kind:?})"))
}

/// The sampler over `loaded`: its generation config (stop tokens) and `options`.
pub fn sampler(loaded: &Loaded, options: SamplerOptions) -> Sampler<'_> {
    Sampler::new(&loaded.model, &loaded.tokenizer)
        .with_generation_config(&loaded.generation)
        .with_options(options)
}

/// [`sampler`] with at most `max_batch` sequences decoded together and the other options at
/// their defaults.
pub fn batch_sampler(loaded: &Loaded, max_batch: usize) -> Sampler<'_> {
    sampler(
        loaded,
        SamplerOptions {
            max_batch_rows: max_batch,
            ..Default::default()
        },
    )
}
