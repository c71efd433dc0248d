//! One HTTP request to a server, with retries and exponential backoff; the readiness check
//! `GET /health`.

use std::time::Duration;

use serde_json::Value;
use tracing::warn;

use super::{OpenAiEngine, RemoteError};

const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl OpenAiEngine {
    pub(super) fn get(&self, i: usize, path: &str) -> Result<Value, RemoteError> {
        self.request(i, path, None)
    }

    pub(super) fn post(&self, i: usize, path: &str, body: &Value) -> Result<Value, RemoteError> {
        self.request(i, path, Some(body))
    }

    /// One request with retries: connection errors, timeouts, 5xx and 429 are retried with
    /// exponential backoff; a 4xx fails at once; the answer must be JSON.
    fn request(&self, i: usize, path: &str, body: Option<&Value>) -> Result<Value, RemoteError> {
        let url = self.url(i, path);
        let payload = body.map(Value::to_string);
        let attempts = self.retries + 1;
        let mut wait = self.backoff;
        for attempt in 1..=attempts {
            let last = attempt == attempts;
            let sent = match &payload {
                Some(p) => {
                    let mut r = self
                        .agent
                        .post(&url)
                        .header("Content-Type", "application/json");
                    if let Some(k) = &self.api_key {
                        r = r.header("Authorization", &format!("Bearer {k}"));
                    }
                    r.send(p.as_str())
                }
                None => {
                    let mut r = self.agent.get(&url);
                    if let Some(k) = &self.api_key {
                        r = r.header("Authorization", &format!("Bearer {k}"));
                    }
                    r.call()
                }
            };
            let failure = match sent {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    match resp.body_mut().read_to_string() {
                        Ok(text) if (200..300).contains(&status) => {
                            return serde_json::from_str(&text).map_err(|e| {
                                RemoteError::Malformed {
                                    url,
                                    message: format!("not JSON ({e}): {}", excerpt(&text)),
                                }
                            });
                        }
                        Ok(text) if status >= 500 || status == 429 => RemoteError::Status {
                            url: url.clone(),
                            status,
                            body: excerpt(&text),
                        },
                        Ok(text) => {
                            return Err(RemoteError::Status {
                                url,
                                status,
                                body: excerpt(&text),
                            })
                        }
                        Err(e) => RemoteError::Unreachable {
                            url: url.clone(),
                            attempts: attempt,
                            reason: format!("reading the answer: {e}"),
                        },
                    }
                }
                Err(e) => RemoteError::Unreachable {
                    url: url.clone(),
                    attempts: attempt,
                    reason: e.to_string(),
                },
            };
            if last {
                return Err(failure);
            }
            warn!(%url, attempt, of = attempts, error = %failure, wait_ms = wait.as_millis() as u64, "engine request failed; retrying");
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        unreachable!("the last attempt returns")
    }
}

/// Whether the server at `base_url` answers `GET /health` with status 200 within `timeout` (a
/// llama.cpp server answers 503 while it loads the model; vLLM and SGLang answer 200 once ready).
pub fn health_ok(base_url: &str, timeout: Duration) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/health", base_url.trim_end_matches('/'));
    agent.get(&url).call().is_ok_and(|r| r.status() == 200)
}

/// At most 300 characters of an answer, for error messages.
fn excerpt(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &t[..cut]),
        None => t.to_string(),
    }
}
