//! Next-token log-probabilities after a prefilled prompt: the local engine behind the judge's
//! probability modes (`tsr_judge::NextTokenProbe`).
//!
//! Each request is rendered (a chat prompt through the chat template with the assistant turn
//! opened), its prefill appended, and tokenized; requests are sorted by length and run in
//! left-padded batches of full-sequence forwards (no KV cache: one pass per request), and only
//! the last position goes through the LM head. The result is the exact top-`k` of the model's
//! untempered distribution, each token decoded on its own.

use tch::{Kind, Tensor};
use tsr_judge::{GenerateError, NextTokenProbe, ProbeRequest, ProbeResult, Prompt, TokenLogprob};

use crate::error::{SampleError, TchContext};
use crate::sampler::Sampler;

/// Most tokens (rows x padded length) in one probe forward.
const PROBE_BATCH_TOKENS: usize = 8 * 1024;

impl Sampler<'_> {
    /// Token ids of a prefilled prompt (see the module docs).
    pub fn encode_prefilled(&self, request: &ProbeRequest) -> Result<Vec<u32>, SampleError> {
        Ok(match &request.prompt {
            Prompt::Text(text) => self
                .tokenizer
                .encode(&format!("{text}{}", request.prefill), true)?,
            Prompt::Chat(messages) => {
                let mut text = self.tokenizer.apply_chat_template(messages, true)?;
                text.push_str(&request.prefill);
                self.tokenizer.encode(&text, false)?
            }
        })
    }

    /// For each request, the `top_k` most likely next tokens after its prefilled prompt.
    pub fn probe(
        &self,
        requests: &[ProbeRequest],
        top_k: usize,
    ) -> Result<Vec<ProbeResult>, SampleError> {
        if top_k == 0 {
            return Err(SampleError::InvalidParam {
                name: "top_k",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let context = self.model.config().max_position_embeddings;
        let mut prompts = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            let ids = self.encode_prefilled(r)?;
            if ids.is_empty() {
                return Err(SampleError::EmptyPrompt { prompt: i });
            }
            if ids.len() > context {
                return Err(SampleError::PromptTooLong {
                    prompt: i,
                    tokens: ids.len(),
                    context,
                });
            }
            prompts.push(ids);
        }
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by_key(|&i| prompts[i].len());
        let rows_limit = self.options.max_batch_rows.max(1);
        let mut out: Vec<Option<ProbeResult>> = vec![None; prompts.len()];
        let _guard = tch::no_grad_guard();
        let mut start = 0;
        while start < order.len() {
            // The batch grows while rows x longest stays in budget (sorted: the last is longest).
            let mut end = start + 1;
            while end < order.len()
                && end - start < rows_limit
                && (end + 1 - start) * prompts[order[end]].len() <= PROBE_BATCH_TOKENS
            {
                end += 1;
            }
            let batch: Vec<&[u32]> = order[start..end]
                .iter()
                .map(|&i| prompts[i].as_slice())
                .collect();
            let tops = self.probe_batch(&batch, top_k)?;
            for (&i, top) in order[start..end].iter().zip(tops) {
                out[i] = Some(ProbeResult {
                    top,
                    prompt_tokens: prompts[i].len(),
                });
            }
            start = end;
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every request probed"))
            .collect())
    }

    fn probe_batch(
        &self,
        rows: &[&[u32]],
        top_k: usize,
    ) -> Result<Vec<Vec<TokenLogprob>>, SampleError> {
        let device = self.model.device();
        let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let pad = i64::from(self.tokenizer.pad_id());
        let mut ids = Vec::with_capacity(rows.len() * longest);
        let mut mask = Vec::with_capacity(rows.len() * longest);
        for r in rows {
            let padding = longest - r.len();
            ids.extend(std::iter::repeat_n(pad, padding));
            ids.extend(r.iter().map(|&t| i64::from(t)));
            mask.extend(std::iter::repeat_n(0i64, padding));
            mask.extend(std::iter::repeat_n(1i64, r.len()));
        }
        let shape = [rows.len() as i64, longest as i64];
        let ids = Tensor::from_slice(&ids)
            .f_view(shape)
            .during("probe input")?
            .to_device(device);
        let mask = Tensor::from_slice(&mask)
            .f_view(shape)
            .during("probe mask")?
            .to_device(device);
        let hidden = self.model.hidden_states(&ids, &mask, false)?;
        let last = hidden
            .f_select(1, longest as i64 - 1)
            .during("probe last position")?;
        let logprobs = self
            .model
            .lm_head(&last)
            .f_log_softmax(-1, Kind::Float)
            .during("probe log_softmax")?;
        let k = top_k.min(logprobs.size()[1] as usize) as i64;
        let (values, indices) = logprobs.f_topk(k, -1, true, true).during("probe top-k")?;
        let values: Vec<f32> =
            Vec::<f32>::try_from(values.to_device(tch::Device::Cpu).flatten(0, -1))
                .during("probe values")?;
        let indices: Vec<i64> =
            Vec::<i64>::try_from(indices.to_device(tch::Device::Cpu).flatten(0, -1))
                .during("probe indices")?;
        let k = k as usize;
        (0..rows.len())
            .map(|r| {
                (0..k)
                    .map(|j| {
                        let id = indices[r * k + j] as u32;
                        Ok(TokenLogprob {
                            token: self.tokenizer.decode(&[id], false)?,
                            logprob: f64::from(values[r * k + j]),
                            id: Some(id),
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

impl NextTokenProbe for Sampler<'_> {
    fn next_token_logprobs(
        &mut self,
        requests: &[ProbeRequest],
        top_k: usize,
    ) -> Result<Vec<ProbeResult>, GenerateError> {
        Ok(self.probe(requests, top_k)?)
    }
}
