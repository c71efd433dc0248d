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

/// tsr's 24 built-in evaluation instructions (written for tsr; none is a training prompt of the
/// default run or a seed-model instruction), as JSON lines.
pub const EVAL_PROMPTS_JSONL: &str = include_str!("defaults/eval-prompts.jsonl");

/// The built-in evaluation instructions.
pub fn eval_prompts() -> Result<Vec<PromptRecord>> {
    parse_prompts(
        EVAL_PROMPTS_JSONL,
        Path::new("<embedded eval-prompts.jsonl>"),
    )
}

/// The prompts of an `[eval]` section (its file, or the built-in ones), limited, and checked to
/// share no id and no text (case and spacing ignored) with the training prompts.
pub fn eval_prompts_for(
    eval: &crate::config::EvalSection,
    training: &[PromptRecord],
) -> Result<Vec<PromptRecord>> {
    let mut prompts = match &eval.prompts {
        Some(p) => crate::prompts::load_prompts(p)?,
        None => eval_prompts()?,
    };
    if eval.limit > 0 {
        prompts.truncate(eval.limit);
    }
    if prompts.is_empty() {
        return Err(crate::LoopError::Config("[eval] has no prompts".into()));
    }
    let norm = |t: &str| {
        t.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let ids: std::collections::HashSet<&str> = training.iter().map(|p| p.id.as_str()).collect();
    let texts: std::collections::HashSet<String> =
        training.iter().map(|p| norm(&p.prompt)).collect();
    if let Some(p) = prompts
        .iter()
        .find(|p| ids.contains(p.id.as_str()) || texts.contains(&norm(&p.prompt)))
    {
        return Err(crate::LoopError::Config(format!(
            "[eval] prompt `{}` is also a training prompt; held-out prompts must not be trained on",
            p.id
        )));
    }
    Ok(prompts)
}

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
        let e = super::eval_prompts().unwrap();
        assert_eq!(e.len(), 24);
        let section = crate::config::EvalSection::default();
        assert_eq!(super::eval_prompts_for(&section, &p).unwrap().len(), 24);
        let clash = vec![crate::PromptRecord {
            id: "x".into(),
            prompt: e[3].prompt.to_uppercase(),
        }];
        assert!(super::eval_prompts_for(&section, &clash).is_err());
    }
}
