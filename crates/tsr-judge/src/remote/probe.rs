//! Next-token probing on the servers: the [`NextTokenProbe`] implementation of [`OpenAiEngine`]
//! (the chat rendered by the server's template, the prefill appended, top-k log-probs of one
//! token).

use super::capabilities::NEEDS_PROBE;
use super::wire;
use super::{OpenAiEngine, RemoteError};
use crate::generate::{GenerateError, NextTokenProbe, ProbeRequest, ProbeResult, Prompt};

impl OpenAiEngine {
    pub(super) fn probe_one(
        &self,
        i: usize,
        request: &ProbeRequest,
        top_k: usize,
    ) -> Result<ProbeResult, RemoteError> {
        let caps = self.capabilities(i)?;
        let chat = matches!(request.prompt, Prompt::Chat(_));
        self.check_probe(i, &caps, chat)?;
        let mut text = match &request.prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Chat(messages) => {
                let v = self.post(i, "/apply-template", &wire::apply_template_body(messages))?;
                wire::parse_apply_template(&self.url(i, "/apply-template"), &v)?
            }
        };
        text.push_str(&request.prefill);
        let path = "/v1/completions";
        let v = self.post(
            i,
            path,
            &wire::probe_body(caps.model.as_deref(), &text, top_k),
        )?;
        let Some((mut top, prompt_tokens)) = wire::parse_probe(&self.url(i, path), &v)? else {
            return Err(RemoteError::Unsupported {
                url: self.url(i, path),
                capability: "top-k log-probs (`logprobs`)",
                needed_for: NEEDS_PROBE,
            });
        };
        top.truncate(top_k);
        Ok(ProbeResult { top, prompt_tokens })
    }
}

impl NextTokenProbe for OpenAiEngine {
    fn next_token_logprobs(
        &mut self,
        requests: &[ProbeRequest],
        top_k: usize,
    ) -> Result<Vec<ProbeResult>, GenerateError> {
        let this = &*self;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        // Ask every server once here rather than from each worker at the same time.
        for i in 0..this.urls.len() {
            this.capabilities(i)?;
        }
        Ok(this.run_jobs(requests.len(), |url, j| {
            this.probe_one(url, &requests[j], top_k)
        })?)
    }
}
