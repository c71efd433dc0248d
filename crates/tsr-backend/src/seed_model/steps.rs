//! The steps of [`super::build_seed_model`] that sample from or judge with a model, and its
//! JSON lines files.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tsr_judge::judge_eval::evaluate_judge;
use tsr_judge::{
    GenRequest, Generator, JudgeConfig, JudgeEvalReport, JudgeMode, JudgePair, JudgeTemplate,
    LlmJudge, Prompt, SamplingParams,
};
use tsr_model::Loaded;
use tsr_sample::Sampler;

use super::{SeedModelEvent, SeedModelRecipe};

/// One answer per instruction (T = 0.7, top_p = 0.9), cached in `path`.
pub(super) fn answers(
    base: &Loaded,
    instructions: &[tsr_loop::PromptRecord],
    args: &SeedModelRecipe,
    path: &Path,
    on_event: &mut dyn FnMut(SeedModelEvent<'_>),
) -> Result<Vec<String>> {
    #[derive(Serialize, Deserialize)]
    struct Answer {
        id: String,
        text: String,
    }
    if let Ok(text) = std::fs::read_to_string(path) {
        let cached: Vec<Answer> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if cached.len() == instructions.len()
            && cached.iter().zip(instructions).all(|(a, p)| a.id == p.id)
        {
            return Ok(cached.into_iter().map(|a| a.text).collect());
        }
    }
    on_event(SeedModelEvent::SamplingAnswers {
        count: instructions.len(),
        base: &args.base,
    });
    let out = sample_one_each(
        base,
        instructions,
        args.seed,
        "seed-model",
        args.max_new_tokens,
    )
    .context("sampling answers")?;
    let answers: Vec<Answer> = instructions
        .iter()
        .zip(out)
        .map(|(p, c)| Answer {
            id: p.id.clone(),
            text: c.text,
        })
        .collect();
    write_jsonl(path, &answers)?;
    Ok(answers.into_iter().map(|a| a.text).collect())
}

/// One sampled answer per instruction from the base model (T = 0.7, top_p = 0.9), each seeded
/// from `seed`, `tag` and the instruction's id.
fn sample_one_each(
    base: &Loaded,
    instructions: &[tsr_loop::PromptRecord],
    seed: u64,
    tag: &str,
    max_new_tokens: usize,
) -> Result<Vec<tsr_judge::Completion>> {
    let requests: Vec<GenRequest> = instructions
        .iter()
        .map(|p| GenRequest {
            prompt: Prompt::user(p.prompt.clone()),
            n: 1,
            seed: tsr_loop::derive_seed(seed, &[tag, &p.id]),
        })
        .collect();
    let params = SamplingParams {
        max_new_tokens,
        ..SamplingParams::default()
    };
    let mut sampler =
        Sampler::new(&base.model, &base.tokenizer).with_generation_config(&base.generation);
    let out = sampler
        .generate(&requests, &params)
        .map_err(anyhow::Error::from_boxed)?;
    Ok(out.into_iter().map(|mut c| c.remove(0)).collect())
}

/// An IFT example: an instruction and an answer of the base model that ended by itself.
#[derive(Serialize, Deserialize)]
pub(super) struct IftAnswer {
    pub id: String,
    pub prompt: String,
    pub text: String,
}

/// One sampled answer per instruction (T = 0.7, top_p = 0.9, `ift_max_new_tokens`), kept when
/// it ended with EOS (a cut answer would teach the model to stop mid-sentence); cached in `path`.
pub(super) fn ift_answers(
    base: &Loaded,
    instructions: &[tsr_loop::PromptRecord],
    args: &SeedModelRecipe,
    path: &Path,
    on_event: &mut dyn FnMut(SeedModelEvent<'_>),
) -> Result<Vec<IftAnswer>> {
    let done = path.with_extension("jsonl.done");
    if done.exists() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return text
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("reading {}", path.display())))
            .collect();
    }
    on_event(SeedModelEvent::SamplingIft {
        count: instructions.len(),
        base: &args.base,
        max_new_tokens: args.ift_max_new_tokens,
    });
    let out = sample_one_each(
        base,
        instructions,
        args.seed,
        "seed-model-ift",
        args.ift_max_new_tokens,
    )
    .context("sampling IFT answers")?;
    let answers: Vec<IftAnswer> = instructions
        .iter()
        .zip(out)
        .filter_map(|(p, c)| {
            let text = c.text.trim();
            (c.finish_reason == tsr_judge::FinishReason::Eos && !text.is_empty()).then(|| {
                IftAnswer {
                    id: p.id.clone(),
                    prompt: p.prompt.clone(),
                    text: text.to_string(),
                }
            })
        })
        .collect();
    write_jsonl(path, &answers)?;
    std::fs::write(&done, "").with_context(|| format!("writing {}", done.display()))?;
    Ok(answers)
}

/// How many greedy answers (48 new tokens) of `model` to `instructions` start like a judge's
/// verdict (`Score:`), i.e. the model answers an instruction as if asked to grade it.
pub(super) fn verdict_like_answers(
    model: &Loaded,
    instructions: &[&tsr_loop::PromptRecord],
) -> Result<usize> {
    let requests: Vec<GenRequest> = instructions
        .iter()
        .map(|p| GenRequest {
            prompt: Prompt::user(p.prompt.clone()),
            n: 1,
            seed: 0,
        })
        .collect();
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 48,
        ..SamplingParams::default()
    };
    let mut sampler =
        Sampler::new(&model.model, &model.tokenizer).with_generation_config(&model.generation);
    let out = sampler
        .generate(&requests, &params)
        .map_err(|e| anyhow::Error::from_boxed(e).context("sampling held-out answers"))?;
    Ok(out
        .iter()
        .filter(|c| looks_like_verdict(&c[0].text))
        .count())
}

/// An answer that starts with a `Score:` line (any case, leading whitespace ignored).
fn looks_like_verdict(text: &str) -> bool {
    text.trim_start().to_ascii_lowercase().starts_with("score:")
}

/// Direct-mode judge accuracy of `model` on `pairs`.
pub(super) fn judge_accuracy(
    model: &Loaded,
    template: &JudgeTemplate,
    pairs: &[JudgePair],
) -> Result<JudgeEvalReport> {
    let settings = JudgeConfig {
        mode: JudgeMode::Direct,
        min_digit_mass: 0.0,
        ..JudgeConfig::default()
    }
    .validate()?
    .with_template(template.clone());
    let sampler =
        Sampler::new(&model.model, &model.tokenizer).with_generation_config(&model.generation);
    let mut judge = LlmJudge::new(sampler, settings);
    Ok(evaluate_judge(&mut judge, pairs)?)
}

pub(super) fn accuracy_json(r: &JudgeEvalReport) -> serde_json::Value {
    json!({
        "overall": r.overall,
        "by_kind": r.by_kind,
        "digit_mass_mean": r.judge_stats.digit_mass_mean(),
        "digit_mass_min": r.judge_stats.digit_mass_min,
    })
}

pub(super) fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    crate::write_atomic(path, text)
}

#[cfg(test)]
mod tests {
    use super::looks_like_verdict;

    #[test]
    fn verdict_like_answers_are_told_from_answers() {
        assert!(looks_like_verdict("Score: 4"));
        assert!(looks_like_verdict("  score: 2\nGood."));
        assert!(!looks_like_verdict("The score: 4 goals were scored."));
        assert!(!looks_like_verdict("Tides come from the moon."));
    }
}
