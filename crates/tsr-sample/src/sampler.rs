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

use crate::error::{SampleError, TchContext};
use crate::processors::{mark_seen, seen_mask, Processors};
use crate::select::{argmax, sample_candidates, token_logprobs, SequenceRng};
use crate::stop::StopStrings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tch::Tensor;
use tsr_judge::{
    Completion, FinishReason, GenRequest, GenerateError, Generator, Prompt, SamplingParams,
};
use tsr_model::{ChatTokenizer, GenerationConfig, Model};

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

/// A prompt, tokenized, with the samples of it that one chunk decodes.
#[derive(Clone, Debug)]
struct Piece {
    request: usize,
    ids: std::sync::Arc<Vec<u32>>,
    seed: u64,
    samples: std::ops::Range<usize>,
}

/// A sequence being decoded.
#[derive(Debug)]
struct Row {
    request: usize,
    sample: usize,
    prompt_tokens: usize,
    next_position: i64,
    rng: SequenceRng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
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

    fn fit_prompt(
        &self,
        index: usize,
        ids: &[u32],
        context: usize,
    ) -> Result<Vec<u32>, SampleError> {
        if ids.is_empty() {
            return Err(SampleError::EmptyPrompt { prompt: index });
        }
        if ids.len() < context {
            return Ok(ids.to_vec());
        }
        if !self.options.truncate_prompt {
            return Err(SampleError::PromptTooLong {
                prompt: index,
                tokens: ids.len(),
                context,
            });
        }
        // Keep the end of the prompt and leave at least one position to generate into.
        let keep = context.saturating_sub(1).max(1);
        tracing::warn!(
            prompt = index,
            tokens = ids.len(),
            kept = keep,
            "prompt truncated on the left"
        );
        Ok(ids[ids.len() - keep..].to_vec())
    }

    /// Refuses shapes that cannot fit (see [`tsr_model::memory`]): the largest chunk's weights,
    /// KV cache and activations plus the results of all `total` sequences. Host memory, so the
    /// chunks are checked on the CPU only.
    fn check_memory(
        &self,
        chunks: &[Vec<Piece>],
        total: usize,
        max_new: usize,
    ) -> Result<(), SampleError> {
        use tsr_model::memory;
        if self.model.device() != tch::Device::Cpu {
            return Ok(());
        }
        let elem = self.model.kind().elt_size_in_bytes();
        let worst = chunks
            .iter()
            .map(|c| {
                let rows: usize = c.iter().map(|p| p.samples.len()).sum();
                let longest = c.iter().map(|p| p.ids.len()).max().unwrap_or(0);
                memory::generation(self.model.config(), rows, longest, max_new, elem)
            })
            .max_by_key(memory::Estimate::bytes);
        if let Some(mut w) = worst {
            w.parts.extend(memory::results(total, max_new).parts);
            w.what = format!("{}, {total} sequences in all,", w.what);
            w.check(
                "lower the batch (--max-batch / max_batch_rows, max_batch_tokens), the number of \
                 samples or max_new_tokens",
            )?;
        }
        Ok(())
    }

    fn chunk(&self, pieces: Vec<Piece>, max_new: usize) -> Vec<Vec<Piece>> {
        let mut chunks: Vec<Vec<Piece>> = Vec::new();
        let mut rows = 0usize;
        let mut longest = 0usize;
        for p in pieces {
            let n = p.samples.len();
            let len = p.ids.len().max(longest);
            let fits = rows + n <= self.options.max_batch_rows
                && (rows + n) * (len + max_new) <= self.options.max_batch_tokens;
            match chunks.last_mut() {
                Some(last) if fits => {
                    last.push(p);
                    rows += n;
                    longest = len;
                }
                _ => {
                    rows = n;
                    longest = p.ids.len();
                    chunks.push(vec![p]);
                }
            }
        }
        chunks
    }

    fn run_chunk(
        &mut self,
        pieces: &[Piece],
        procs: &Processors,
        params: &SamplingParams,
        stops: &StopStrings,
        (chunk, chunks, total): (usize, usize, usize),
        counters: &mut (usize, usize),
    ) -> Result<Vec<(usize, usize, Sample)>, SampleError> {
        let device = self.model.device();
        let context = self.model.config().max_position_embeddings;
        let pad = self.tokenizer.pad_id() as i64;
        let m = pieces.len() as i64;
        let longest = pieces.iter().map(|p| p.ids.len()).max().unwrap_or(0) as i64;

        // Prefill every distinct prompt once, left-padded.
        let mut ids = Vec::with_capacity((m * longest) as usize);
        let mut mask = Vec::with_capacity(ids.capacity());
        let mut pos = Vec::with_capacity(ids.capacity());
        for p in pieces {
            let padn = longest as usize - p.ids.len();
            ids.extend(std::iter::repeat_n(pad, padn).chain(p.ids.iter().map(|&t| t as i64)));
            mask.extend(std::iter::repeat_n(0i64, padn).chain(std::iter::repeat_n(1, p.ids.len())));
            pos.extend(std::iter::repeat_n(0i64, padn).chain(0..p.ids.len() as i64));
        }
        let to_dev = |v: &[i64], what| {
            Tensor::from_slice(v)
                .f_reshape([m, longest])
                .and_then(|t| t.f_to_device(device))
                .during(what)
        };
        let input = to_dev(&ids, "prefill input ids")?;
        let mut attn = to_dev(&mask, "prefill attention mask")?;
        let positions = to_dev(&pos, "prefill positions")?;
        let mut cache = self.model.new_cache(pieces.len());
        let hidden = self
            .model
            .forward_cached(&input, &positions, &attn, &mut cache)?;
        let last = hidden
            .f_select(1, longest - 1)
            .during("prefill last position")?;
        let mut logits = self.model.lm_head(&last);

        // Expand each prompt to its samples.
        let mut rows = Vec::new();
        let mut expand = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            for j in p.samples.clone() {
                expand.push(i as i64);
                rows.push(Row {
                    request: p.request,
                    sample: j,
                    prompt_tokens: p.ids.len(),
                    next_position: p.ids.len() as i64,
                    rng: SequenceRng::new(p.seed, j as u64),
                    tokens: Vec::new(),
                    logprobs: Vec::new(),
                });
            }
        }
        if expand.len() as i64 != m || expand.iter().enumerate().any(|(a, &b)| a as i64 != b) {
            let idx = Tensor::from_slice(&expand)
                .f_to_device(device)
                .during("expanding samples")?;
            cache.index_select(&idx);
            attn = attn.f_index_select(0, &idx).during("expanding samples")?;
            logits = logits.f_index_select(0, &idx).during("expanding samples")?;
        }
        let mut seen = if procs.uses_seen_mask() {
            let v = logits.size().last().copied().unwrap_or(0);
            let prompts: Vec<&[u32]> = rows
                .iter()
                .map(|r| {
                    let p = pieces
                        .iter()
                        .find(|p| p.request == r.request)
                        .expect("row has a piece");
                    p.ids.as_slice()
                })
                .collect();
            Some(seen_mask(&prompts, v, device)?)
        } else {
            None
        };

        let mut done = Vec::new();
        let decode = |ids: &[u32]| self.tokenizer.decode(ids, true);
        let mut uniforms = Vec::with_capacity(rows.len());
        loop {
            check_logits(&logits, &rows)?;
            // Choose one token per row.
            let (chosen, processed_lp) = if procs.is_greedy() {
                let processed = procs.apply(&logits, seen.as_ref())?;
                let chosen = argmax(&processed)?;
                let lp = match self.options.logprobs {
                    LogprobMode::Processed => Some(token_logprobs(&processed, &chosen)?),
                    _ => None,
                };
                (chosen, lp)
            } else {
                uniforms.clear();
                uniforms.extend(rows.iter_mut().map(|r| r.rng.uniform()));
                let cands = procs.apply_candidates(&logits, seen.as_ref())?;
                let (chosen, lp) = sample_candidates(&cands, &uniforms)?;
                (chosen, Some(lp))
            };
            let lps = match self.options.logprobs {
                LogprobMode::None => None,
                LogprobMode::Processed => processed_lp,
                LogprobMode::Raw => Some(token_logprobs(&logits, &chosen)?),
            };
            let host: Vec<i64> = Vec::<i64>::try_from(&chosen).during("copying chosen tokens")?;
            let host_lp: Option<Vec<f32>> = match &lps {
                Some(t) => Some(Vec::<f32>::try_from(t).during("copying log-probs")?),
                None => None,
            };
            if let Some(seen) = seen.as_mut() {
                mark_seen(seen, &chosen)?;
            }
            counters.1 += rows.len();

            // Per-row stop checks.
            let mut keep = Vec::with_capacity(rows.len());
            let mut finished = Vec::new();
            for (r, row) in rows.iter_mut().enumerate() {
                let tok = host[r] as u32;
                row.tokens.push(tok);
                row.next_position += 1;
                if let Some(lp) = &host_lp {
                    row.logprobs.push(lp[r]);
                }
                let reason = if !self.options.ignore_eos && self.eos.contains(&tok) {
                    Some((FinishReason::Eos, None))
                } else if let Some(text) = stops.check(&row.tokens, &decode)? {
                    Some((FinishReason::Stop, Some(text)))
                } else if row.tokens.len() >= params.max_new_tokens
                    || row.next_position as usize >= context
                {
                    Some((FinishReason::Length, None))
                } else {
                    None
                };
                match reason {
                    Some(reason) => finished.push((r, reason)),
                    None => keep.push(r as i64),
                }
            }
            if !finished.is_empty() {
                let mut taken: Vec<Option<Row>> =
                    std::mem::take(&mut rows).into_iter().map(Some).collect();
                for (r, (reason, text)) in finished {
                    let row = taken[r].take().expect("row finishes once");
                    done.push(self.finish(row, reason, text)?);
                    counters.0 += 1;
                }
                rows = taken.into_iter().flatten().collect();
            }
            if let Some(cb) = self.progress.as_mut() {
                cb(&Progress {
                    chunk,
                    chunks,
                    active_rows: rows.len(),
                    finished: counters.0,
                    total,
                    generated_tokens: counters.1,
                });
            }
            if rows.is_empty() {
                break;
            }
            let mut next = chosen;
            if keep.len() < host.len() {
                // Compact: finished rows leave the batch.
                let idx = Tensor::from_slice(&keep)
                    .f_to_device(device)
                    .during("compacting the batch")?;
                cache.index_select(&idx);
                attn = attn
                    .f_index_select(0, &idx)
                    .during("compacting the batch")?;
                next = next
                    .f_index_select(0, &idx)
                    .during("compacting the batch")?;
                if let Some(s) = seen.as_mut() {
                    *s = s.f_index_select(0, &idx).during("compacting the batch")?;
                }
            }

            // One decoding step for the remaining rows.
            let r = rows.len() as i64;
            let ones = Tensor::f_ones([r, 1], (attn.kind(), device)).during("growing the mask")?;
            attn = Tensor::f_cat(&[&attn, &ones], 1).during("growing the mask")?;
            let pos: Vec<i64> = rows.iter().map(|row| row.next_position - 1).collect();
            let positions = Tensor::from_slice(&pos)
                .f_reshape([r, 1])
                .and_then(|t| t.f_to_device(device))
                .during("decode positions")?;
            let input = next.f_reshape([r, 1]).during("decode input ids")?;
            let hidden = self
                .model
                .forward_cached(&input, &positions, &attn, &mut cache)?;
            logits = self
                .model
                .lm_head(&hidden.f_select(1, 0).during("decode hidden state")?);
        }
        Ok(done)
    }

    fn finish(
        &self,
        row: Row,
        reason: FinishReason,
        stop_text: Option<String>,
    ) -> Result<(usize, usize, Sample), SampleError> {
        let text = match stop_text {
            Some(t) => t,
            None => {
                let body = match (reason, row.tokens.split_last()) {
                    (FinishReason::Eos, Some((_, body))) => body,
                    _ => row.tokens.as_slice(),
                };
                self.tokenizer.decode(body, true)?
            }
        };
        let logprobs = (self.options.logprobs != LogprobMode::None).then_some(row.logprobs);
        Ok((
            row.request,
            row.sample,
            Sample {
                completion: Completion {
                    text,
                    token_ids: row.tokens,
                    finish_reason: reason,
                    prompt_tokens: row.prompt_tokens,
                },
                logprobs,
            },
        ))
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

/// Refuses logits no token can be drawn from: a row with a NaN or `+inf`, or `-inf` everywhere
/// (the maximum of a row propagates NaN). One `[R]` copy to the host per step.
fn check_logits(logits: &Tensor, rows: &[Row]) -> Result<(), SampleError> {
    let top = logits
        .f_amax([-1i64].as_slice(), false)
        .and_then(|t| t.f_to_kind(tch::Kind::Double))
        .and_then(|t| t.f_to_device(tch::Device::Cpu))
        .during("checking logits")?;
    let top = Vec::<f64>::try_from(&top).during("checking logits")?;
    for (r, (&m, row)) in top.iter().zip(rows).enumerate() {
        let what = if m.is_nan() {
            "nan"
        } else if m == f64::INFINITY {
            "+inf"
        } else if m == f64::NEG_INFINITY {
            "-inf everywhere"
        } else {
            continue;
        };
        return Err(SampleError::NonFiniteLogits {
            what,
            prompt: row.request,
            sample: row.sample,
            row: r,
            step: row.tokens.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<Row> {
        (0..n)
            .map(|i| Row {
                request: 7,
                sample: i,
                prompt_tokens: 3,
                next_position: 5,
                rng: SequenceRng::new(0, i as u64),
                tokens: vec![1, 2],
                logprobs: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn nan_and_infinite_logits_are_refused_naming_the_row_and_step() {
        let ok = Tensor::from_slice2(&[[0.0f32, 1.0, f32::NEG_INFINITY], [2.0, 0.0, 1.0]]);
        check_logits(&ok, &rows(2)).unwrap();
        for (bad, what) in [(f32::NAN, "nan"), (f32::INFINITY, "+inf")] {
            let t = Tensor::from_slice2(&[[0.0f32, 1.0, 2.0], [2.0, bad, 1.0]]);
            match check_logits(&t, &rows(2)) {
                Err(SampleError::NonFiniteLogits {
                    what: w,
                    prompt: 7,
                    sample: 1,
                    row: 1,
                    step: 2,
                }) => assert_eq!(w, what),
                other => panic!("{what}: {other:?}"),
            }
        }
        let t = Tensor::from_slice2(&[[f32::NEG_INFINITY; 3], [2.0, 0.0, 1.0]]);
        let e = check_logits(&t, &rows(2)).unwrap_err();
        assert!(
            e.to_string().contains("-inf everywhere") && e.to_string().contains("step 2"),
            "{e}"
        );
    }
}
