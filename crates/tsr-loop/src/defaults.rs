//! The embedded default run (`tsr iterate --default`, `cargo xtask run-iteration`): one TSR
//! iteration of SmolLM2-135M-Instruct on 16 instructions written for tsr, small enough for a
//! laptop CPU (K = 2, 48-token answers, one judge sample).

use crate::config::Config;
use crate::error::Result;
use crate::prompts::{parse_prompts, PromptRecord};
use std::path::Path;

/// The default run configuration, as TOML text.
pub const CONFIG_TOML: &str = include_str!("defaults/default.toml");
/// The 16 built-in instructions, as JSON lines.
pub const PROMPTS_JSONL: &str = include_str!("defaults/prompts.jsonl");

/// The default configuration, parsed.
pub fn config() -> Result<Config> {
    Config::from_toml_str(CONFIG_TOML, Path::new("<embedded default.toml>"))
}

/// The built-in instructions.
pub fn prompts() -> Result<Vec<PromptRecord>> {
    parse_prompts(PROMPTS_JSONL, Path::new("<embedded prompts.jsonl>"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_run_is_valid() {
        let c = super::config().unwrap();
        c.validate().unwrap();
        let p = super::prompts().unwrap();
        assert_eq!(p.len(), 16);
        assert_eq!(c.chunk_size(p.len()).unwrap(), 16);
        assert_eq!(c.run.method, crate::Method::Tsr);
    }
}
