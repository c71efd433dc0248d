//! One module per subcommand: `Args` (clap) and `run(Args) -> anyhow::Result<()>`.

pub mod data;
pub mod doctor;
pub mod eft;
pub mod eval;
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

/// Reads a training configuration from a TOML file: the `[section]` table when there is one,
/// else the whole file. No file: the defaults.
pub fn read_config_section<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
    section: &str,
) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let table = match value.get(section) {
        Some(t) => t.clone(),
        None => value,
    };
    table
        .try_into()
        .with_context(|| format!("{}: invalid {section} configuration", path.display()))
}
