//! What a server can do ([`Capabilities`]), found out once per URL on first use, and the checks
//! that fail a role naming the URL and the capability it lacks.

use serde::Serialize;
use serde_json::Value;
use tracing::debug;

use super::wire::{self, LogprobLayout};
use super::{OpenAiEngine, RemoteError};

/// What one server can do, found out by [`OpenAiEngine::capabilities`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// The model name sent with requests (configured, or the first of `/v1/models`).
    pub model: Option<String>,
    /// llama.cpp's `/apply-template`: renders a chat with the server's template (assistant
    /// prefill, so the `direct` and `expected` judge modes on chat prompts).
    pub apply_template: bool,
    /// llama.cpp's `/tokenize` (token ids when the log-probs do not carry them).
    pub tokenize: bool,
    /// Top-k log-probs on `/v1/completions`, and in which layout.
    #[serde(skip)]
    pub logprobs: Option<LogprobLayout>,
    /// Whether the log-probs name token ids.
    pub logprob_ids: bool,
    /// The largest `n` one request may ask for (llama.cpp: its slot count, `total_slots` of
    /// `/props`); `None`: no known limit.
    pub max_n: Option<usize>,
}

pub(super) const NEEDS_PROBE: &str = "next-token probing (the `direct` and `expected` judge modes)";

impl OpenAiEngine {
    /// What the server at `urls()[index]` can do; asked once, then remembered. Fails when the
    /// server does not answer (after the retries).
    pub fn capabilities(&self, index: usize) -> Result<Capabilities, RemoteError> {
        if let Some(c) = &self.caps.lock().expect("capabilities lock")[index] {
            return Ok(c.clone());
        }
        let c = self.detect(index)?;
        debug!(url = %self.urls[index], ?c, "engine capabilities");
        self.caps.lock().expect("capabilities lock")[index] = Some(c.clone());
        Ok(c)
    }

    /// Fails unless every server can answer next-token probes on chat prompts (what the
    /// `direct` and `expected` judge modes need), naming the first that cannot.
    pub fn require_probe(&self) -> Result<(), RemoteError> {
        for i in 0..self.urls.len() {
            let c = self.capabilities(i)?;
            self.check_probe(i, &c, true)?;
        }
        Ok(())
    }

    pub(super) fn check_probe(
        &self,
        i: usize,
        c: &Capabilities,
        chat: bool,
    ) -> Result<(), RemoteError> {
        if c.logprobs.is_none() {
            return Err(RemoteError::Unsupported {
                url: self.url(i, "/v1/completions"),
                capability: "top-k log-probs (`logprobs`)",
                needed_for: NEEDS_PROBE,
            });
        }
        if chat && !c.apply_template {
            return Err(RemoteError::Unsupported {
                url: self.url(i, "/apply-template"),
                capability:
                    "rendering a chat with an assistant prefill (llama.cpp's `/apply-template`)",
                needed_for: NEEDS_PROBE,
            });
        }
        Ok(())
    }

    fn detect(&self, i: usize) -> Result<Capabilities, RemoteError> {
        // `/v1/models` first: it tells whether the server answers at all.
        let model = match self.get(i, "/v1/models") {
            Ok(v) => self.model.clone().or_else(|| wire::parse_first_model(&v)),
            Err(RemoteError::Status { status, .. }) if (400..500).contains(&status) => {
                self.model.clone()
            }
            Err(RemoteError::Malformed { .. }) => self.model.clone(),
            Err(e) => return Err(e),
        };
        fn supported<T>(r: Result<T, RemoteError>) -> Result<bool, RemoteError> {
            match r {
                Ok(_) => Ok(true),
                Err(RemoteError::Status { status, .. }) if (400..500).contains(&status) => {
                    Ok(false)
                }
                Err(RemoteError::Malformed { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        }
        let max_n = match self.get(i, "/props") {
            Ok(v) => v
                .get("total_slots")
                .and_then(Value::as_u64)
                .filter(|&n| n > 0)
                .map(|n| n as usize),
            Err(RemoteError::Status { status, .. }) if (400..500).contains(&status) => None,
            Err(RemoteError::Malformed { .. }) => None,
            Err(e) => return Err(e),
        };
        let messages = [crate::generate::ChatMessage::user("Hi")];
        let apply_template = supported(
            self.post(i, "/apply-template", &wire::apply_template_body(&messages))
                .and_then(|v| wire::parse_apply_template(&self.url(i, "/apply-template"), &v)),
        )?;
        let tokenize = supported(
            self.post(i, "/tokenize", &wire::tokenize_body("Hi"))
                .and_then(|v| wire::parse_tokenize(&self.url(i, "/tokenize"), &v)),
        )?;
        let probe = match self.post(
            i,
            "/v1/completions",
            &wire::probe_body(model.as_deref(), "Hi", 2),
        ) {
            Ok(v) => wire::logprob_layout(&v),
            Err(RemoteError::Status { status, .. }) if (400..500).contains(&status) => None,
            Err(e) => return Err(e),
        };
        Ok(Capabilities {
            model,
            apply_template,
            tokenize,
            logprobs: probe.map(|(layout, _)| layout),
            logprob_ids: probe.is_some_and(|(_, ids)| ids),
            max_n,
        })
    }

    /// The largest `n` any server takes (the smallest `max_n`), asking every server once (here,
    /// not from each worker at the same time).
    pub(super) fn max_n(&self) -> Result<Option<usize>, RemoteError> {
        let mut limit: Option<usize> = None;
        for i in 0..self.urls.len() {
            if let Some(m) = self.capabilities(i)?.max_n {
                limit = Some(limit.map_or(m, |l| l.min(m)));
            }
        }
        Ok(limit)
    }
}
