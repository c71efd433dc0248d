//! `tsr export-gguf`: write a model as a GGUF file that a llama.cpp server loads (the weight
//! hand-off to an engine between iterations; see docs/scaling.md). Prints one JSON object: the
//! file, its architecture, weight type, pre-tokenizer name, tensor count and size.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use tsr_model::gguf_export::{export_gguf, ExportType};
use tsr_model::{Kind, LoadOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Built-in model name, Hugging Face directory (e.g. a run's models/M1) or .gguf file.
    #[arg(long)]
    model: String,
    /// The GGUF file to write (written beside it and renamed into place).
    #[arg(long)]
    out: PathBuf,
    /// Weight type of the 2-D tensors: f32 (exact), f16 or q8_0; 1-D tensors stay f32.
    #[arg(long = "type", default_value = "f16")]
    ty: ExportType,
    /// llama.cpp's pre-tokenizer name (tokenizer.ggml.pre): smollm, llama-bpe, qwen2 or gpt2.
    /// Default: the one whose split equals the tokenizer's own (an error when none does).
    #[arg(long)]
    pre: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = tsr_model::load(
        &args.model,
        &LoadOptions {
            device: tsr_model::Device::Cpu,
            kind: Kind::Float,
        },
    )
    .with_context(|| format!("loading model {}", args.model))?;
    let report = export_gguf(&loaded, &args.out, args.ty, args.pre.as_deref())?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
