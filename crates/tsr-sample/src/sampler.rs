//! Batched generation: many prompts x K samples on one [`Model`] with a KV cache.
//!
//! Per sub-batch ("chunk") of requests:
//! 1. the distinct prompts are left-padded and prefilled once each;
//! 2. the cache rows (and the last-position logits) are expanded K times with
//!    `KvCache::index_select`, so the K samples of a prompt share its prefill;
//! 3. every decoding step runs the processors on the whole `[R, V]` batch, picks one token per row
//!    (argmax, or inverse-CDF with one uniform from the row's own seeded RNG, on the candidate
//!    sets of [`Processors::apply_candidates`] so top-p does not sort the whole vocabulary),
//!    copies the `[R]` chosen ids to the host once, and checks EOS / stop strings /
//!    `max_new_tokens` per row (at least 1: 0 is refused); logits with a NaN or `+inf`, or
//!    `-inf` everywhere, stop generation with [`SampleError::NonFiniteLogits`] (no token could be
//!    drawn from them: sampling would silently pick the last one);
//! 4. rows that finished are dropped from the cache and every per-row tensor (index_select), so
//!    finished sequences stop costing compute.
//!
//! What a [`Sample`] holds:
//! - `token_ids`: every generated token, including the EOS token when the finish reason is `eos`
//!   (as in transformers' `sequences`), and for `stop` every token up to the one that completed
//!   the stop string;
//! - `text`: the generated tokens decoded with special tokens skipped, without the EOS token, and
//!   cut before the first stop string for `stop`;
//! - `logprobs` (optional): see [`LogprobMode`]; `Processed` gives the log-probability under the
//!   distribution the token was actually drawn from (transformers' processed `scores`).
//!
//! Randomness: sample `j` of a request with seed `s` uses its own ChaCha20 stream `(s, j)` and one
//! uniform per step, so its tokens do not depend on the other requests in the call, the chunking,
//! or the position of the request (up to float rounding differences between batch shapes, which
//! the tests check do not change tokens on a tiny model).
//!
//! Requests are cut into chunks of at most `max_batch_rows` rows and `max_batch_tokens` tokens
//! (rows x (longest prompt + max_new_tokens)), which bounds the KV cache memory.
//!
//! Beside this file: `chunking` (prompt fitting, chunks, the memory check) and `decode` (one
//! chunk's prefill and decoding loop).

use crate::error::SampleError;
use crate::processors::Processors;
use crate::stop::StopStrings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tsr_judge::{Completion, GenRequest, GenerateError, Generator, Prompt, SamplingParams};
use tsr_model::{ChatTokenizer, GenerationConfig, Model};

mod chunking;
mod decode;

use chunking::Piece;

/// Which distribution the optional per-token log-probs are taken under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogprobMode {
    /// No log-probs.
    #[default]
    None,
    /// `log_softmax` of the processed logits (after repetition penalty, temperature, top-k/p,
    /// min-p): the distribution the token was drawn from, like transformers' `output_scores`.
    Processed,
    /// `log_softmax` of the raw model logits.
    Raw,
}

/// How the sampler batches and what it returns besides the completions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerOptions {
    /// Most sequences decoded together.
    pub max_batch_rows: usize,
    /// Most tokens (rows x (longest prompt + max_new_tokens)) held in one chunk's KV cache.
    pub max_batch_tokens: usize,
    /// Keep the last tokens of a prompt longer than the context instead of failing.
    pub truncate_prompt: bool,
    /// Per-token log-probs of the sampled tokens.
    pub logprobs: LogprobMode,
    /// Never stop on EOS (benchmarks: always generate exactly `max_new_tokens`).
    pub ignore_eos: bool,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        Self {
            max_batch_rows: 64,
            max_batch_tokens: 64 * 1024,
            truncate_prompt: false,
            logprobs: LogprobMode::None,
            ignore_eos: false,
        }
    }
}

/// One sampled completion with its optional log-probs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub completion: Completion,
    /// One per generated token (see [`LogprobMode`]); `None` when not requested.
    pub logprobs: Option<Vec<f32>>,
}

/// Where a generation call is (passed to the progress callback after every step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Index of the current chunk and number of chunks.
    pub chunk: usize,
    pub chunks: usize,
    /// Sequences still decoding in this chunk.
    pub active_rows: usize,
    /// Sequences finished so far, over all chunks, and the total.
    pub finished: usize,
    pub total: usize,
    /// Tokens generated so far, over all chunks.
    pub generated_tokens: usize,
}

type ProgressFn<'a> = Box<dyn FnMut(&Progress) + 'a>;

/// Batched sampler over a model and its tokenizer.
pub struct Sampler<'a> {
    pub(crate) model: &'a Model,
    pub(crate) tokenizer: &'a ChatTokenizer,
    eos: BTreeSet<u32>,
    pub(crate) options: SamplerOptions,
    progress: Option<ProgressFn<'a>>,
}

impl std::fmt::Debug for Sampler<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("eos", &self.eos)
            .field("options", &self.options)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Sampler<'a> {
    /// Stops on the tokenizer's EOS ids and the model config's `eos_token_id`.
    pub fn new(model: &'a Model, tokenizer: &'a ChatTokenizer) -> Self {
        let mut eos: BTreeSet<u32> = tokenizer.eos_ids().iter().copied().collect();
        eos.extend(model.config().eos_ids());
        Self {
            model,
            tokenizer,
            eos,
            options: SamplerOptions::default(),
            progress: None,
        }
    }

    /// Also stop on the EOS ids of a `generation_config.json`.
    pub fn with_generation_config(mut self, generation: &GenerationConfig) -> Self {
        self.eos.extend(generation.eos_ids());
        self
    }

    pub fn with_options(mut self, options: SamplerOptions) -> Self {
        self.options = options;
        self
    }

    /// Call `f` after every decoding step.
    pub fn on_progress(mut self, f: impl FnMut(&Progress) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    pub fn options(&self) -> &SamplerOptions {
        &self.options
    }

    /// The EOS ids generation stops on.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos.iter().copied().collect()
    }

    /// Token ids of a prompt. Chat prompts go through the chat template with the generation
    /// prompt and are encoded without special tokens (the template writes them); text prompts are
    /// encoded with the tokenizer's special tokens (`add_special_tokens = true`), as transformers'
    /// `tokenizer(text)` does.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, SampleError> {
        Ok(match prompt {
            Prompt::Text(text) => self.tokenizer.encode(text, true)?,
            Prompt::Chat(messages) => {
                let text = self.tokenizer.apply_chat_template(messages, true)?;
                self.tokenizer.encode(&text, false)?
            }
        })
    }

    /// For each request, `request.n` samples in order.
    pub fn sample(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Sample>>, SampleError> {
        let prompts = requests
            .iter()
            .map(|r| self.encode_prompt(&r.prompt))
            .collect::<Result<Vec<_>, _>>()?;
        let seeds: Vec<(usize, u64)> = requests.iter().map(|r| (r.n, r.seed)).collect();
        self.sample_ids(&prompts, &seeds, params)
    }

    /// Like [`Sampler::sample`] on already tokenized prompts; `requests[i] = (n, seed)`.
    pub fn sample_ids(
        &mut self,
        prompts: &[Vec<u32>],
        requests: &[(usize, u64)],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Sample>>, SampleError> {
        let procs = Processors::from_params(params)?;
        if params.max_new_tokens == 0 {
            // transformers and vLLM refuse it too; generating nothing needs no sampler.
            return Err(SampleError::InvalidParam {
                name: "max_new_tokens",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if self.options.max_batch_rows == 0 {
            return Err(SampleError::InvalidParam {
                name: "max_batch_rows",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let total: usize = requests.iter().map(|r| r.0).sum();
        tsr_model::memory::results(total, params.max_new_tokens)
            .check("lower the number of samples or max_new_tokens")?;
        let context = self.model.config().max_position_embeddings;
        let mut pieces = Vec::new();
        for (i, (ids, &(n, seed))) in prompts.iter().zip(requests).enumerate() {
            let ids = self.fit_prompt(i, ids, context)?;
            let ids = std::sync::Arc::new(ids);
            let mut start = 0;
            while start < n {
                let end = (start + self.options.max_batch_rows).min(n);
                pieces.push(Piece {
                    request: i,
                    ids: ids.clone(),
                    seed,
                    samples: start..end,
                });
                start = end;
            }
        }
        // Similar lengths together: less padding. Stable, so the chunking is deterministic.
        pieces.sort_by_key(|p| p.ids.len());
        let chunks = self.chunk(pieces, params.max_new_tokens);
        self.check_memory(&chunks, total, params.max_new_tokens)?;

        let mut out: Vec<Vec<Option<Sample>>> =
            requests.iter().map(|&(n, _)| vec![None; n]).collect();
        let mut counters = (0usize, 0usize);
        let _guard = tch::no_grad_guard();
        let stops = StopStrings::new(&params.stop);
        for (c, chunk) in chunks.iter().enumerate() {
            tracing::debug!(
                chunk = c,
                chunks = chunks.len(),
                prompts = chunk.len(),
                rows = chunk.iter().map(|p| p.samples.len()).sum::<usize>(),
                "generation chunk"
            );
            let done = self.run_chunk(
                chunk,
                &procs,
                params,
                &stops,
                (c, chunks.len(), total),
                &mut counters,
            )?;
            for (request, sample, s) in done {
                out[request][sample] = Some(s);
            }
        }
        tracing::debug!(sequences = total, tokens = counters.1, "generation done");
        Ok(out
            .into_iter()
            .map(|v| {
                v.into_iter()
                    .map(|s| s.expect("every sample generated"))
                    .collect()
            })
            .collect())
    }
}

impl Generator for Sampler<'_> {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, GenerateError> {
        let out = self.sample(requests, params)?;
        Ok(out
            .into_iter()
            .map(|v| v.into_iter().map(|s| s.completion).collect())
            .collect())
    }

    fn as_probe(&mut self) -> Option<&mut dyn tsr_judge::NextTokenProbe> {
        Some(self)
    }
}
