//! One chunk of a generation call: the shared prefill, the expansion to samples, and the decoding
//! loop with its per-row stop checks and batch compaction.

use tch::Tensor;
use tsr_judge::{Completion, FinishReason, SamplingParams};

use super::chunking::Piece;
use super::{LogprobMode, Progress, Sample, Sampler};
use crate::error::{SampleError, TchContext};
use crate::processors::{mark_seen, seen_mask, Processors};
use crate::select::{argmax, sample_candidates, token_logprobs, SequenceRng};
use crate::stop::StopStrings;

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

impl Sampler<'_> {
    pub(super) fn run_chunk(
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
