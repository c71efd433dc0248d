//! EFT data: judge examples for teaching a seed model to judge (Yuan et al. 2024, section 2).
//!
//! An EFT example is one judging conversation in TRL's conversational format:
//! `{"messages": [{"role": "user", "content": <judge prompt>}, {"role": "assistant", "content":
//! "<justification>\nScore: k"}]}`. The user turn is a [`JudgeTemplate`] filled literally with
//! the prompt and the response; the assistant turn is the justification (when there is one),
//! a newline and `Score: k`, or just `Score: k`.
//!
//! Two sources of judged examples:
//! * (a) responses with a known quality: [`read_eft_input`] reads `{prompt, response, score[,
//!   justification, id]}` lines, `score` an integer 0..=5;
//! * (b) a verifiable task: sampled answers to problems with a known final number,
//!   [`label_with_verifier`] scores them with the [`VerifierJudge`] logic and maps correct to a
//!   high score and incorrect to a low one ([`VerifierLabels`]).
//!
//! [`build_eft`] validates, drops duplicates, refuses evaluation prompts ([`EvalGuard`]) and
//! splits by prompt into train and held-out sets with a seed: every example of a prompt lands on
//! the same side, so held-out examples measure judging on prompts the model never saw.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::JudgeError;
use crate::evalsets::{EvalGuard, GsmProblem};
use crate::generate::ChatMessage;
use crate::llm::item_seed;
use crate::template::JudgeTemplate;
use crate::verdict::{Judge, JudgeItem};
use crate::verifier::VerifierJudge;

/// Highest score an EFT example may carry (the scale of the judge prompts, 0..=5).
pub const MAX_EFT_SCORE: u8 = 5;

/// One judged example: a response to a prompt with a known score.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EftInput {
    /// From the input line (`id`), else `line-N`.
    pub id: String,
    pub prompt: String,
    pub response: String,
    /// 0..=[`MAX_EFT_SCORE`].
    pub score: u8,
    /// Why the response earns the score; written before the score line when present.
    pub justification: Option<String>,
}

/// One EFT example in TRL's conversational format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EftExample {
    pub messages: Vec<ChatMessage>,
}

/// A score of an input line: an integer 0..=5 (a JSON number such as `4` or `4.0`). Halves
/// and other fractions are refused: the assistant turn teaches the judge to write one digit,
/// which is also the token that probability judging reads.
pub fn eft_score(v: &Value) -> Result<u8, String> {
    let x = v
        .as_f64()
        .ok_or_else(|| format!("field `score` must be a number, got {v}"))?;
    if !(x.is_finite() && x.fract() == 0.0 && (0.0..=f64::from(MAX_EFT_SCORE)).contains(&x)) {
        return Err(format!(
            "field `score` must be an integer from 0 to {MAX_EFT_SCORE}, got {v}"
        ));
    }
    Ok(x as u8)
}

/// The assistant turn: `"<justification>\nScore: k"`, or `"Score: k"` without a justification
/// (an empty or blank one counts as none). The justification is trimmed.
pub fn assistant_turn(justification: Option<&str>, score: u8) -> String {
    match justification.map(str::trim).filter(|j| !j.is_empty()) {
        Some(j) => format!("{j}\nScore: {score}"),
        None => format!("Score: {score}"),
    }
}

/// The EFT example of an input: the template filled with its prompt and response as the user
/// turn, [`assistant_turn`] as the assistant turn.
pub fn render_example(template: &JudgeTemplate, input: &EftInput) -> EftExample {
    EftExample {
        messages: vec![
            ChatMessage::user(template.render(&input.prompt, &input.response)),
            ChatMessage::assistant(assistant_turn(input.justification.as_deref(), input.score)),
        ],
    }
}

/// Reads source (a): JSON lines with string fields `prompt` and `response`, an integer `score`
/// 0..=5 ([`eft_score`]), optional string `justification` and string-or-integer `id`. Other
/// fields are ignored. A malformed line is an error naming the file and line.
pub fn read_eft_input(path: &Path) -> Result<Vec<EftInput>, JudgeError> {
    let records = crate::jsonl::read_jsonl_file(path)?;
    let mut out = Vec::with_capacity(records.len());
    for r in &records {
        let item = crate::jsonl::to_judge_item(r, path)?;
        let err = |message: String| JudgeError::Jsonl {
            path: path.to_path_buf(),
            line: r.line,
            message,
        };
        let score = match r.fields.get("score") {
            Some(v) => eft_score(v).map_err(err)?,
            None => return Err(err("missing field `score`".into())),
        };
        let justification = match r.fields.get("justification") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                return Err(err(format!(
                    "field `justification` must be a string, got {v}"
                )))
            }
        };
        out.push(EftInput {
            id: item.id,
            prompt: item.prompt,
            response: item.response,
            score,
            justification,
        });
    }
    Ok(out)
}

/// How [`build_eft`] splits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EftOptions {
    /// Share of the distinct prompts held out, in [0, 1). Default 0.1.
    pub holdout: f64,
    /// Chooses the held-out prompts. Default 0.
    pub seed: u64,
}

impl Default for EftOptions {
    fn default() -> Self {
        Self {
            holdout: 0.1,
            seed: 0,
        }
    }
}

/// Counts of one build, for the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EftStats {
    /// Input records.
    pub inputs: usize,
    /// Records dropped because the same (prompt, response) came earlier with the same score.
    pub duplicates_dropped: usize,
    /// Examples written (train + held out).
    pub examples: usize,
    pub train: usize,
    pub heldout: usize,
    /// Distinct prompts on each side.
    pub train_prompts: usize,
    pub heldout_prompts: usize,
    /// Examples per score 0..=5, train and held out together.
    pub score_counts: [usize; 6],
    /// Examples with a justification.
    pub with_justification: usize,
}

/// Train and held-out EFT examples, with the inputs they came from (same order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EftSplit {
    pub train: Vec<EftExample>,
    pub heldout: Vec<EftExample>,
    /// The input of each train example.
    pub train_inputs: Vec<EftInput>,
    /// The input of each held-out example.
    pub heldout_inputs: Vec<EftInput>,
    pub stats: EftStats,
}

/// The held-out prompts: the distinct prompts ordered by a keyed hash of `(seed, prompt)`, the
/// first `round(holdout * n)` of them (never all of them). The choice depends only on the seed
/// and the set of prompts, not on their order in the input.
pub fn heldout_prompts<'a>(
    prompts: impl IntoIterator<Item = &'a str>,
    holdout: f64,
    seed: u64,
) -> HashSet<&'a str> {
    let mut distinct: Vec<&str> = prompts
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    distinct.sort_by_key(|p| (item_seed(seed, p), *p));
    let n = distinct.len();
    let k = ((holdout * n as f64).round() as usize).min(n.saturating_sub(1));
    distinct.into_iter().take(k).collect()
}

/// Builds EFT examples from judged inputs (see the [module docs](self)).
///
/// * duplicates: a later record with the same prompt and response as an earlier one is dropped
///   when its score is the same, and is an error when the score differs;
/// * `guard`: when given, any prompt that is an evaluation prompt fails the build
///   ([`JudgeError::EvalOverlap`]); `origin` names the input in that message.
pub fn build_eft(
    inputs: &[EftInput],
    template: &JudgeTemplate,
    options: &EftOptions,
    guard: Option<&EvalGuard>,
    origin: &str,
) -> Result<EftSplit, JudgeError> {
    if !(0.0..1.0).contains(&options.holdout) {
        return Err(JudgeError::InvalidOption {
            name: "holdout",
            reason: format!("must be in [0, 1), got {}", options.holdout),
        });
    }
    if let Some(score) = inputs.iter().map(|i| i.score).find(|&s| s > MAX_EFT_SCORE) {
        return Err(JudgeError::InvalidOption {
            name: "score",
            reason: format!("must be at most {MAX_EFT_SCORE}, got {score}"),
        });
    }
    if let Some(g) = guard {
        let hits = g.collisions(inputs.iter().map(|i| i.prompt.as_str()));
        if let Some(first) = hits.first() {
            return Err(JudgeError::EvalOverlap {
                origin: origin.to_string(),
                count: hits.len(),
                sources: g.sources().join(", "),
                first_index: first.index,
                first: inputs[first.index].prompt.clone(),
            });
        }
    }
    let mut stats = EftStats {
        inputs: inputs.len(),
        ..EftStats::default()
    };
    let mut seen: HashMap<(&str, &str), &EftInput> = HashMap::new();
    let mut kept: Vec<&EftInput> = Vec::with_capacity(inputs.len());
    for input in inputs {
        match seen.get(&(input.prompt.as_str(), input.response.as_str())) {
            Some(first) if first.score == input.score => stats.duplicates_dropped += 1,
            Some(first) => {
                return Err(JudgeError::InvalidData {
                    origin: origin.to_string(),
                    message: format!(
                        "items `{}` and `{}` give the same prompt and response different scores ({} and {})",
                        first.id, input.id, first.score, input.score
                    ),
                })
            }
            None => {
                seen.insert((input.prompt.as_str(), input.response.as_str()), input);
                kept.push(input);
            }
        }
    }
    let held = heldout_prompts(
        kept.iter().map(|i| i.prompt.as_str()),
        options.holdout,
        options.seed,
    );
    let mut split = EftSplit {
        train: Vec::new(),
        heldout: Vec::new(),
        train_inputs: Vec::new(),
        heldout_inputs: Vec::new(),
        stats,
    };
    let mut train_prompts = HashSet::new();
    for input in kept {
        let example = render_example(template, input);
        split.stats.score_counts[usize::from(input.score)] += 1;
        if input
            .justification
            .as_deref()
            .is_some_and(|j| !j.trim().is_empty())
        {
            split.stats.with_justification += 1;
        }
        if held.contains(input.prompt.as_str()) {
            split.heldout.push(example);
            split.heldout_inputs.push(input.clone());
        } else {
            train_prompts.insert(input.prompt.as_str());
            split.train.push(example);
            split.train_inputs.push(input.clone());
        }
    }
    split.stats.examples = split.train.len() + split.heldout.len();
    split.stats.train = split.train.len();
    split.stats.heldout = split.heldout.len();
    split.stats.train_prompts = train_prompts.len();
    split.stats.heldout_prompts = held.len();
    Ok(split)
}

/// Writes examples as JSON lines (one `{"messages": [...]}` per line).
pub fn write_examples(mut w: impl Write, examples: &[EftExample]) -> std::io::Result<()> {
    for e in examples {
        serde_json::to_writer(&mut w, e)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// One sampled answer to a problem (source (b)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampledAnswer {
    /// The [`GsmProblem::id`] it answers.
    pub problem_id: String,
    /// Which sample of that problem (0-based); part of the example's id.
    pub sample: usize,
    pub response: String,
}

/// The scores verified answers get. Default: correct 5, incorrect 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifierLabels {
    pub correct: u8,
    pub incorrect: u8,
}

impl Default for VerifierLabels {
    fn default() -> Self {
        Self {
            correct: 5,
            incorrect: 1,
        }
    }
}

/// Counts of [`label_with_verifier`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifierStats {
    pub answers: usize,
    pub correct: usize,
    pub incorrect: usize,
}

/// Source (b): scores sampled answers by their final number against the problem's reference
/// (the [`VerifierJudge`] rules: last `\boxed{}`, else after `####`, else the last number) and
/// labels them `labels.correct` or `labels.incorrect`. The EFT input's id is
/// `<problem id>-s<sample>`, its prompt the problem's question; no justification.
pub fn label_with_verifier(
    problems: &[GsmProblem],
    answers: &[SampledAnswer],
    labels: VerifierLabels,
) -> Result<(Vec<EftInput>, VerifierStats), JudgeError> {
    if labels.correct <= labels.incorrect || labels.correct > MAX_EFT_SCORE {
        return Err(JudgeError::InvalidOption {
            name: "labels",
            reason: format!(
                "need incorrect < correct <= {MAX_EFT_SCORE}, got correct {} and incorrect {}",
                labels.correct, labels.incorrect
            ),
        });
    }
    let by_id: HashMap<&str, &GsmProblem> = problems.iter().map(|p| (p.id.as_str(), p)).collect();
    let items = answers
        .iter()
        .map(|a| {
            let p = by_id
                .get(a.problem_id.as_str())
                .ok_or_else(|| JudgeError::InvalidData {
                    origin: "sampled answers".into(),
                    message: format!("answer for unknown problem `{}`", a.problem_id),
                })?;
            Ok(JudgeItem::new(
                format!("{}-s{}", a.problem_id, a.sample),
                p.question.clone(),
                a.response.clone(),
            )
            .with_reference(p.answer.clone()))
        })
        .collect::<Result<Vec<_>, JudgeError>>()?;
    let mut verifier = VerifierJudge {
        correct: f64::from(labels.correct),
        incorrect: f64::from(labels.incorrect),
    };
    let verdicts = verifier.judge(&items)?;
    let mut stats = VerifierStats {
        answers: items.len(),
        ..VerifierStats::default()
    };
    let inputs = items
        .into_iter()
        .zip(verdicts)
        .map(|(item, v)| {
            let correct = v.score == Some(f64::from(labels.correct));
            if correct {
                stats.correct += 1;
            } else {
                stats.incorrect += 1;
            }
            EftInput {
                id: item.id,
                prompt: item.prompt,
                response: item.response,
                score: if correct {
                    labels.correct
                } else {
                    labels.incorrect
                },
                justification: None,
            }
        })
        .collect();
    Ok((inputs, stats))
}
