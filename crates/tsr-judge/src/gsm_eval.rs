//! GSM8K-style accuracy: a model's answers to problems with known final numbers, checked by
//! the verifier's rules ([`final_number`] of the answer against [`reference_number`] of the
//! problem).
//!
//! The prompt a model sees is recorded with the results ([`GSM8K_PROMPT`], `{question}` filled
//! in): an accuracy is only comparable between runs with the same prompt format.

use serde::{Deserialize, Serialize};

use crate::error::JudgeError;
use crate::evalsets::GsmProblem;
use crate::judge_eval::{wilson_interval, Z_95};
use crate::verifier::{final_number, reference_number};

/// The default prompt format; `{question}` is replaced by the problem.
pub const GSM8K_PROMPT: &str = "Solve the following math problem step by step. At the end, \
write the final answer as a number on its own line, in the form \"#### <number>\".\n\n{question}";

/// The prompt of one problem under a format with a `{question}` placeholder.
pub fn gsm8k_prompt(format: &str, question: &str) -> String {
    format.replacen("{question}", question, 1)
}

/// One answer to one problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GsmRecord {
    pub id: String,
    /// Which of the problem's answers (0 for greedy decoding).
    pub sample: usize,
    pub question: String,
    pub expected: f64,
    pub response: String,
    /// The final number read from the response; `None` when it has none.
    pub predicted: Option<f64>,
    pub correct: bool,
}

/// Accuracy over a set of answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GsmReport {
    pub problems: usize,
    /// Answers per problem.
    pub samples: usize,
    pub answers: usize,
    pub correct: usize,
    /// Answers without any number.
    pub no_number: usize,
    /// correct / answers (mean accuracy of one answer).
    pub accuracy: f64,
    /// Wilson 95% interval of `accuracy`, over answers (with several samples per problem the
    /// answers are not independent, so the interval is optimistic then).
    pub ci_low: f64,
    pub ci_high: f64,
    /// With several samples: the share of problems whose most frequent final number (ties to
    /// the earliest) is right (maj@n). `None` for one answer per problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub majority_accuracy: Option<f64>,
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

/// Checks `responses[i]` (every answer of problem `i`) against `problems[i]`.
pub fn score_gsm8k(
    problems: &[GsmProblem],
    responses: &[Vec<String>],
) -> Result<(GsmReport, Vec<GsmRecord>), JudgeError> {
    if problems.len() != responses.len() {
        return Err(JudgeError::OutputCount {
            expected: problems.len(),
            got: responses.len(),
        });
    }
    let samples = responses.first().map_or(0, Vec::len);
    let mut records = Vec::new();
    let mut majority_correct = 0;
    for (p, answers) in problems.iter().zip(responses) {
        let expected = reference_number(&p.answer).ok_or_else(|| JudgeError::BadReference {
            id: p.id.clone(),
            reference: p.answer.clone(),
        })?;
        let mut counts: Vec<(f64, usize)> = Vec::new();
        for (sample, response) in answers.iter().enumerate() {
            let predicted = final_number(response);
            if let Some(x) = predicted {
                match counts.iter_mut().find(|(v, _)| same(*v, x)) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((x, 1)),
                }
            }
            records.push(GsmRecord {
                id: p.id.clone(),
                sample,
                question: p.question.clone(),
                expected,
                response: response.clone(),
                predicted,
                correct: predicted.is_some_and(|x| same(x, expected)),
            });
        }
        let best = counts.iter().map(|(_, c)| *c).max().unwrap_or(0);
        if counts
            .iter()
            .find(|(_, c)| *c == best)
            .is_some_and(|(v, _)| same(*v, expected))
        {
            majority_correct += 1;
        }
    }
    let answers = records.len();
    let correct = records.iter().filter(|r| r.correct).count();
    let (ci_low, ci_high) = wilson_interval(correct, answers, Z_95);
    let report = GsmReport {
        problems: problems.len(),
        samples,
        answers,
        correct,
        no_number: records.iter().filter(|r| r.predicted.is_none()).count(),
        accuracy: if answers == 0 {
            0.0
        } else {
            correct as f64 / answers as f64
        },
        ci_low,
        ci_high,
        majority_accuracy: (samples > 1 && !problems.is_empty())
            .then(|| majority_correct as f64 / problems.len() as f64),
    };
    Ok((report, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(id: &str, n: i32) -> GsmProblem {
        GsmProblem {
            id: id.into(),
            question: format!("What is {n} minus zero?"),
            answer: format!("It stays {n}.\n#### {n}"),
        }
    }

    #[test]
    fn counts_correct_answers_and_majorities() {
        let problems = [problem("a", 12), problem("b", 1234)];
        let responses = vec![
            vec![
                "12 - 0 = 12\n#### 12".to_string(),
                "#### 11".into(),
                "12".into(),
            ],
            vec![
                "It is 1,234.".to_string(),
                "no idea".into(),
                "#### 7".into(),
            ],
        ];
        let (r, records) = score_gsm8k(&problems, &responses).unwrap();
        assert_eq!((r.answers, r.correct, r.no_number, r.samples), (6, 3, 1, 3));
        assert!((r.accuracy - 0.5).abs() < 1e-12);
        assert!(r.ci_low < 0.5 && r.ci_high > 0.5);
        // a: 12 twice -> right; b: 1234 once and 7 once, the earliest wins -> right.
        assert_eq!(r.majority_accuracy, Some(1.0));
        assert_eq!(records[1].predicted, Some(11.0));
        assert!(!records[1].correct);
        assert!(score_gsm8k(&problems, &responses[..1]).is_err());
    }

    #[test]
    fn prompt_format_fills_the_question() {
        let p = gsm8k_prompt(GSM8K_PROMPT, "What is 2+2?");
        assert!(p.ends_with("What is 2+2?") && p.contains("####"));
    }
}
