//! `tsr-judge`: LLM-as-a-judge for self-rewarding training.
//!
//! Scores (prompt, response) pairs for the Self-Rewarding / Temporal Self-Rewarding loop and
//! for evaluation. Plain Rust: no libtorch; a model comes in through the [`Generator`] trait.
//!
//! # Pieces
//! * [`Judge`]: the abstraction. `judge(&mut self, &[JudgeItem]) -> Vec<Verdict>`, one verdict
//!   per item, in order. A [`Verdict`] keeps the rendered judge prompt, every raw sample (text,
//!   finish reason, tokens), each sample's parsed score or [`ParseFailure`], and the final
//!   score: the mean of the samples that parsed, `None` when none did (never a stand-in 0).
//!   Verdicts are serde-serializable for the run directory.
//! * [`LlmJudge`]: the paper's judge over any [`Generator`] (the policy itself, or another
//!   model). The prompt is the Self-Rewarding paper's additive 5-point prompt
//!   ([`ADDITIVE_5PT`], verbatim) or a [`JudgeTemplate`] of yours, filled literally and sent as
//!   one user chat message so the generator applies the judge model's chat template. All items
//!   of a call go to the generator in one batch (or chunks of `batch_size`), with `samples`
//!   completions per item and a per-item seed ([`item_seed`]) independent of the batch.
//! * [`parse_score`]: reads `Score: X` (last statement wins, X in [0, 5]; markdown, `/5`,
//!   trailing periods tolerated; ranges, other scales and template echoes rejected). The rules
//!   are in the [`parse`] module docs.
//! * [`VerifierJudge`]: for known-answer tasks (GSM8K `#### N`), compares final numbers.
//! * [`JudgeConfig`] / [`JudgeSettings`]: the `[judge]` configuration section (paper defaults:
//!   3 samples, T = 0.7, top_p = 0.9; `max_new_tokens` 256) and its validated form.
//! * [`JudgeStats`]: counts (unparsed samples, samples cut at `max_new_tokens`, tokens).
//! * [`jsonl`]: the JSON-lines input/output of `tsr judge`.
//! * [`eft`]: EFT data (judge examples to teach a seed model to judge), from judged responses or
//!   from verifier-scored answers, with a seeded held-out split.
//! * [`evalsets`]: the offline evaluation data (AlpacaEval instructions, GSM8K test problems)
//!   and [`EvalGuard`], which keeps them out of training data.
//! * [`pairs`] / [`judge_eval`]: the built-in judge-accuracy pair set and pairwise accuracy of
//!   any [`Judge`] on it ([`evaluate_judge`]).
//! * [`pairwise`] / [`winrate`]: pairwise judges ([`LlmPairwiseJudge`], [`RuleJudge`]) and the
//!   win rate of one model's answers over another's, judged in both orders ([`win_rate`]).
//! * [`gsm_eval`]: GSM8K accuracy of a model's answers ([`score_gsm8k`]).
//! * [`remote`]: [`OpenAiEngine`], a [`Generator`] and [`NextTokenProbe`] over OpenAI-compatible
//!   inference servers (a llama.cpp server, vLLM, SGLang), configured by [`RemoteConfig`].
//!
//! # Example
//! ```
//! use tsr_judge::*;
//!
//! /// A stand-in model: every judge sample says "Score: 4". A real one is `tsr-sample`'s
//! /// sampler, or a client for an inference server.
//! struct Fixed;
//! impl Generator for Fixed {
//!     fn generate(
//!         &mut self,
//!         requests: &[GenRequest],
//!         _params: &SamplingParams,
//!     ) -> Result<Vec<Vec<Completion>>, GenerateError> {
//!         Ok(requests
//!             .iter()
//!             .map(|r| {
//!                 (0..r.n)
//!                     .map(|_| Completion {
//!                         text: "Clear and correct.\nScore: 4".into(),
//!                         token_ids: vec![0; 7],
//!                         finish_reason: FinishReason::Eos,
//!                         prompt_tokens: 300,
//!                     })
//!                     .collect()
//!             })
//!             .collect())
//!     }
//! }
//!
//! let config = JudgeConfig { samples: 3, seed: 7, ..JudgeConfig::default() };
//! let mut judge = LlmJudge::from_config(Fixed, &config)?;
//! let verdicts = judge.judge(&[JudgeItem::new("q1-r0", "What is 2+2?", "4")])?;
//! assert_eq!(verdicts[0].score, Some(4.0));
//! assert_eq!(verdicts[0].samples.len(), 3);
//! assert!(verdicts[0].judge_prompt.as_deref().unwrap().contains("<response>4</response>"));
//! assert_eq!(judge.stats().unparsed_samples, 0);
//! # Ok::<(), JudgeError>(())
//! ```
//!
//! # Errors and failures
//! A sample that does not parse is data (kept, counted in [`JudgeStats`], logged at `debug`);
//! [`JudgeError`] is for real errors: a bad configuration or template, a failing generator, a
//! generator returning the wrong number of outputs, a malformed input line.

pub mod config;
pub mod error;
pub mod generate;
pub mod jsonl;
pub mod llm;
pub mod parse;
pub mod probs;
pub mod remote;
pub mod seed;
pub mod template;
pub mod verdict;
pub mod verifier;

// EFT data, offline evaluation data and judge accuracy.
pub mod eft;
pub mod evalsets;
pub mod gsm_eval;
pub mod judge_eval;
pub mod pairs;
pub mod pairwise;
mod rng;
pub mod winrate;

pub use config::{JudgeConfig, JudgeMode, JudgeSettings};
pub use error::JudgeError;
pub use generate::{
    ChatMessage, Completion, FinishReason, GenRequest, GenerateError, Generator, NextTokenProbe,
    ProbeRequest, ProbeResult, Prompt, SamplingParams, TokenLogprob,
};
pub use llm::{item_seed, score_prefill, LlmJudge, SCORE_PREFILL};
pub use parse::{mean_score, parse_score, ParseFailure, MAX_SCORE, MIN_SCORE};
pub use probs::{digit_of, DigitDistribution};
pub use remote::{Capabilities, OpenAiEngine, RemoteConfig, RemoteError};
pub use template::{JudgeTemplate, ADDITIVE_5PT, SHORT};
pub use verdict::{Judge, JudgeItem, JudgeSample, JudgeStats, Verdict};
pub use verifier::{final_number, reference_number, VerifierJudge};

pub use eft::{build_eft, EftExample, EftInput, EftOptions, EftSplit};
pub use evalsets::{alpaca_export, AlpacaItem, AlpacaOutput, EvalGuard, GsmProblem};
pub use gsm_eval::{gsm8k_prompt, score_gsm8k, GsmRecord, GsmReport, GSM8K_PROMPT};
pub use judge_eval::{evaluate_judge, JudgeEvalReport, PairOutcome, Tally};
pub use pairs::{build_pair_set, JudgePair, PairKind, PairSetOptions};
pub use pairwise::{
    LlmPairwiseJudge, PairwiseItem, PairwiseJudge, PairwiseMode, PairwiseSettings,
    PairwiseTemplate, PairwiseVerdict, Preference, RuleJudge, StyleRule, PAIRWISE,
};
pub use winrate::{win_rate, Matchup, WinRateRecord, WinRateReport};
