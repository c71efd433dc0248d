//! Generation on the servers: the [`Generator`] implementation of [`OpenAiEngine`], one request
//! per chunk of at most the server's `max_n` samples.

use super::wire::{self, LogprobLayout};
use super::{OpenAiEngine, RemoteError};
use crate::generate::{
    Completion, GenRequest, GenerateError, Generator, NextTokenProbe, Prompt, SamplingParams,
};

impl OpenAiEngine {
    /// Samples `first..first + n` of `request`.
    pub(super) fn generate_chunk(
        &self,
        i: usize,
        request: &GenRequest,
        first: usize,
        n: usize,
        params: &SamplingParams,
    ) -> Result<Vec<Completion>, RemoteError> {
        let caps = self.capabilities(i)?;
        let model = caps.model.as_deref();
        let ids = caps.logprob_ids;
        let seed = wire::chunk_seed(request.seed, first);
        let (path, body, chat) = match &request.prompt {
            Prompt::Chat(messages) => (
                "/v1/chat/completions",
                wire::chat_body(model, messages, n, seed, params, ids),
                true,
            ),
            Prompt::Text(text) => (
                "/v1/completions",
                wire::text_body(
                    model,
                    text,
                    n,
                    seed,
                    params,
                    ids && caps.logprobs == Some(LogprobLayout::Content),
                ),
                false,
            ),
        };
        let v = self.post(i, path, &body)?;
        let parsed =
            wire::parse_completions(&self.url(i, path), &v, chat, n, !params.stop.is_empty())?;
        parsed
            .choices
            .into_iter()
            .map(|c| {
                let token_ids = match c.token_ids {
                    Some(ids) => ids,
                    None if caps.tokenize && !c.text.is_empty() => {
                        let v = self.post(i, "/tokenize", &wire::tokenize_body(&c.text))?;
                        wire::parse_tokenize(&self.url(i, "/tokenize"), &v)?
                    }
                    None => Vec::new(),
                };
                Ok(Completion {
                    text: c.text,
                    token_ids,
                    finish_reason: c.finish_reason,
                    prompt_tokens: parsed.prompt_tokens,
                })
            })
            .collect()
    }
}

impl Generator for OpenAiEngine {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, GenerateError> {
        let this = &*self;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        // One job per chunk of at most `max_n` samples of one request.
        let max_n = this.max_n()?.unwrap_or(usize::MAX);
        let chunks: Vec<(usize, usize, usize)> = requests
            .iter()
            .enumerate()
            .flat_map(|(r, req)| {
                (0..req.n)
                    .step_by(max_n)
                    .map(move |first| (r, first, max_n.min(req.n - first)))
            })
            .collect();
        let outputs = this.run_jobs(chunks.len(), |url, j| {
            let (r, first, n) = chunks[j];
            this.generate_chunk(url, &requests[r], first, n, params)
        })?;
        let mut per_request: Vec<Vec<Completion>> =
            requests.iter().map(|r| Vec::with_capacity(r.n)).collect();
        for ((r, _, _), completions) in chunks.iter().zip(outputs) {
            per_request[*r].extend(completions);
        }
        Ok(per_request)
    }

    fn as_probe(&mut self) -> Option<&mut dyn NextTokenProbe> {
        Some(self)
    }
}
