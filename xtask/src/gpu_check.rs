//! `cargo xtask gpu-check`: on a machine with a GPU, the one-script check of tsr on CUDA against
//! transformers and TRL (`xtask/gpu_check.py`): greedy parity, batch-1 decode tokens/s, DPO
//! step time. It sets up libtorch and the Python references (the PyPI torch wheel is the CUDA
//! build), builds `tsr` against that libtorch, and runs the script with the built-in SmolLM2
//! GGUF unless a model is given.

use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Hugging Face model folder or .gguf file [default: the built-in SmolLM2-135M-Instruct GGUF].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// cuda, cuda:N, or cpu (cpu runs the same steps without a GPU, to test the script).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// The JSON results [default: <target>/tsr-bench/gpu-check.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Further arguments of xtask/gpu_check.py (after `--`), e.g. `--steps parity,decode`,
    /// `--tokens 256`, `--dpo-steps 16`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn gpu_check(root: &Path, opts: &Options) -> Result<()> {
    crate::setup::libtorch(root)?;
    let python = crate::setup::reference(root)?;
    let tsr = crate::build_tsr(root)?;
    let model = match &opts.model {
        Some(m) => m.clone(),
        None => crate::setup::builtin_gguf(&python)?,
    };
    let out = opts.out.clone().unwrap_or_else(|| {
        crate::target_dir(root)
            .join("tsr-bench")
            .join("gpu-check.json")
    });
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("xtask").join("gpu_check.py"))
        .arg("--tsr")
        .arg(&tsr)
        .arg("--model")
        .arg(&model)
        .args(["--device", &opts.device])
        .arg("--out")
        .arg(&out)
        .args(&opts.args);
    crate::step("gpu check", &mut cmd)
}
