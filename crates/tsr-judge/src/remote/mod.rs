//! Generation and next-token probing on OpenAI-compatible inference servers (a llama.cpp server,
//! vLLM, SGLang), behind the same [`Generator`] and [`NextTokenProbe`] seams as the local sampler.
//!
//! [`OpenAiEngine`] sends
//! * chat prompts ([`Prompt::Chat`]) to `/v1/chat/completions` and raw text ([`Prompt::Text`]) to
//!   `/v1/completions`, one HTTP request per [`GenRequest`] with its `n`, its `seed` (folded to
//!   32 bits, see [`wire::wire_seed`]) and the [`SamplingParams`] (`temperature`, `top_p`,
//!   `top_k`, `min_p`, `max_tokens`, `stop`; the repetition penalty when it is on). A llama.cpp
//!   server takes at most its slot count as `n` (`total_slots` of `/props`); a larger `n` is
//!   split into requests of at most that many samples, the one starting at sample `j` seeded
//!   `seed + j` ([`wire::chunk_seed`]), which gives exactly the samples one request would;
//! * probes ([`ProbeRequest`]: a prompt whose answer is begun) as the chat rendered by the server's
//!   own template (llama.cpp's `/apply-template`; the OpenAI chat API cannot prefill the assistant
//!   turn) with the prefill appended, to `/v1/completions` with `max_tokens: 1`, temperature 0 and
//!   `logprobs: k`; the top-k list at the first generated position is the answer.
//!
//! # Finish reasons and token ids
//! `"length"` is [`FinishReason::Length`]; `"stop"` is [`FinishReason::Stop`] when the engine
//! shows that a stop string matched and [`FinishReason::Eos`] otherwise (the rules are in
//! [`wire::finish_reason`]). `token_ids` come from the log-probs when the engine reports ids
//! there (llama.cpp does; they include the end-of-sequence token, as the local sampler's do);
//! otherwise the text is re-tokenised with `/tokenize` when the engine has it (llama.cpp's
//! format); otherwise they stay empty (the judge's token counts are then 0).
//!
//! # Capabilities
//! What a server can do is found out once per URL, on first use ([`OpenAiEngine::capabilities`]):
//! `/v1/models` (the model name when none is configured), `/apply-template`, `/tokenize`, and a
//! one-token `/v1/completions` with `logprobs` (which layout, whether ids are included). A role
//! that needs what a server lacks fails with [`RemoteError::Unsupported`], naming the URL and the
//! capability; generation needs none of them.
//!
//! # Several servers, limits, failures
//! Requests of one call are spread over the URLs: each URL gets `max_in_flight` worker threads
//! (so at most that many requests in flight on it), and every worker takes the next request as
//! soon as it is free (a faster server takes more). Connection errors, timeouts and 5xx/429
//! answers are retried `retries` times with exponential backoff (0.5 s, 1 s, 2 s, ... at most
//! 30 s); then, as on a 4xx or on JSON that does not have the expected shape, the call fails
//! with an error naming the URL. Outputs are in request order whichever server answered.
//!
//! The API key is read once from the environment variable named by `api_key_env` and sent as
//! `Authorization: Bearer ...`; it is never logged, printed (`Debug` hides it) or serialised.

pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, warn};

use crate::generate::{
    Completion, GenRequest, GenerateError, Generator, NextTokenProbe, ProbeRequest, ProbeResult,
    Prompt, SamplingParams,
};
pub use wire::LogprobLayout;

/// The `[backend]` settings of a remote engine (one role's servers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Base URLs of the servers (replicas of one model), e.g. `http://127.0.0.1:8080`; a trailing
    /// `/` or `/v1` is dropped.
    pub urls: Vec<String>,
    /// The `model` field of each request; `None`: the first model the server lists in
    /// `/v1/models` (a llama.cpp server ignores the field).
    pub model: Option<String>,
    /// The NAME of the environment variable holding the API key (`None`: no key is sent).
    pub api_key_env: Option<String>,
    /// Requests in flight per URL.
    pub max_in_flight: usize,
    /// Time limit of one HTTP request, connecting and reading the whole answer, in seconds.
    pub timeout_s: f64,
    /// Retries after a connection error, timeout or 5xx answer (0: try once).
    pub retries: u32,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            model: None,
            api_key_env: None,
            max_in_flight: 4,
            timeout_s: 600.0,
            retries: 3,
        }
    }
}

impl RemoteConfig {
    /// One server, the other settings at their defaults.
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            ..Self::default()
        }
    }

    /// Checks the values; returns the normalised base URLs.
    pub fn validate(&self) -> Result<Vec<String>, RemoteError> {
        let invalid = |field, reason: &str| RemoteError::InvalidConfig {
            field,
            reason: reason.to_string(),
        };
        if self.urls.is_empty() {
            return Err(invalid("urls", "must name at least one server"));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1"));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(invalid("timeout_s", "must be a positive number of seconds"));
        }
        if self.api_key_env.as_deref() == Some("") {
            return Err(invalid("api_key_env", "must name an environment variable"));
        }
        self.urls
            .iter()
            .map(|u| {
                let u = u.trim();
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(RemoteError::InvalidConfig {
                        field: "urls",
                        reason: format!("{u:?} does not start with http:// or https://"),
                    });
                }
                let u = u.trim_end_matches('/');
                Ok(u.strip_suffix("/v1").unwrap_or(u).to_string())
            })
            .collect()
    }
}

/// What goes wrong talking to a remote engine. Every variant that concerns a server names its
/// URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// A configuration value is out of its allowed range.
    #[error("invalid remote engine config: `{field}` {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// `api_key_env` names a variable that is not set (its value is never shown).
    #[error("the API key variable `{var}` (api_key_env) is not set or not valid unicode")]
    ApiKey { var: String },

    /// No answer: connection refused, reset, timed out, or the name did not resolve.
    #[error("{url}: no answer after {attempts} attempt(s) (is the server running?): {reason}")]
    Unreachable {
        url: String,
        attempts: u32,
        reason: String,
    },

    /// An HTTP error status (a 5xx or 429 after the retries; a 4xx at once).
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },

    /// The answer is not JSON, or not in the expected shape.
    #[error("{url}: malformed answer: {message}")]
    Malformed { url: String, message: String },

    /// The server lacks something a role needs.
    #[error("{url}: the server does not support {capability}, which {needed_for} needs")]
    Unsupported {
        url: String,
        capability: &'static str,
        needed_for: &'static str,
    },
}

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

/// A [`Generator`] and [`NextTokenProbe`] over OpenAI-compatible HTTP servers; see the
/// [module docs](self).
pub struct OpenAiEngine {
    urls: Vec<String>,
    model: Option<String>,
    api_key: Option<String>,
    agent: ureq::Agent,
    max_in_flight: usize,
    retries: u32,
    backoff: Duration,
    caps: Mutex<Vec<Option<Capabilities>>>,
    /// Where the next call's first worker starts, so single-request calls rotate over the URLs.
    rotate: AtomicUsize,
}

impl std::fmt::Debug for OpenAiEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEngine")
            .field("urls", &self.urls)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "(set)"))
            .field("max_in_flight", &self.max_in_flight)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

const NEEDS_PROBE: &str = "next-token probing (the `direct` and `expected` judge modes)";
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl OpenAiEngine {
    /// Validates `config`, reads the API key variable, and builds the HTTP client. Contacts no
    /// server yet.
    pub fn new(config: &RemoteConfig) -> Result<Self, RemoteError> {
        let urls = config.validate()?;
        let api_key = match &config.api_key_env {
            Some(var) => {
                Some(std::env::var(var).map_err(|_| RemoteError::ApiKey { var: var.clone() })?)
            }
            None => None,
        };
        let timeout = Duration::from_secs_f64(config.timeout_s);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_idle_connections_per_host(config.max_in_flight.max(3))
            .build()
            .into();
        Ok(Self {
            caps: Mutex::new(vec![None; urls.len()]),
            urls,
            model: config.model.clone(),
            api_key,
            agent,
            max_in_flight: config.max_in_flight,
            retries: config.retries,
            backoff: Duration::from_millis(500),
            rotate: AtomicUsize::new(0),
        })
    }

    /// The first retry waits `backoff`, each further one twice as long (at most 30 s).
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The normalised base URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

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

    fn check_probe(&self, i: usize, c: &Capabilities, chat: bool) -> Result<(), RemoteError> {
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

    fn url(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.urls[i])
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

    fn get(&self, i: usize, path: &str) -> Result<Value, RemoteError> {
        self.request(i, path, None)
    }

    fn post(&self, i: usize, path: &str, body: &Value) -> Result<Value, RemoteError> {
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

    /// Runs `jobs` jobs over the servers: `max_in_flight` workers per URL, each taking the next
    /// job when free. Results in job order; the first failing job (in job order) fails the call,
    /// and no new job starts after a failure.
    fn run_jobs<T, F>(&self, jobs: usize, job: F) -> Result<Vec<T>, RemoteError>
    where
        T: Send,
        F: Fn(usize, usize) -> Result<T, RemoteError> + Sync,
    {
        if jobs == 0 {
            return Ok(Vec::new());
        }
        let n_urls = self.urls.len();
        let workers = jobs.min(n_urls * self.max_in_flight);
        let start = self.rotate.fetch_add(1, Ordering::Relaxed);
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<T, RemoteError>>>> =
            Mutex::new((0..jobs).map(|_| None).collect());
        std::thread::scope(|s| {
            for w in 0..workers {
                let url = (start + w) % n_urls;
                let (next, failed, results, job) = (&next, &failed, &results, &job);
                s.spawn(move || loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs {
                        break;
                    }
                    let r = job(url, j);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results.lock().expect("results lock")[j] = Some(r);
                });
            }
        });
        let mut out = Vec::with_capacity(jobs);
        for r in results.into_inner().expect("results lock") {
            match r {
                Some(Ok(t)) => out.push(t),
                Some(Err(e)) => return Err(e),
                // Not started because another job failed; that error comes later in order.
                None => {}
            }
        }
        assert_eq!(out.len(), jobs, "jobs are skipped only after a failure");
        Ok(out)
    }

    /// The largest `n` any server takes (the smallest `max_n`), asking every server once (here,
    /// not from each worker at the same time).
    fn max_n(&self) -> Result<Option<usize>, RemoteError> {
        let mut limit: Option<usize> = None;
        for i in 0..self.urls.len() {
            if let Some(m) = self.capabilities(i)?.max_n {
                limit = Some(limit.map_or(m, |l| l.min(m)));
            }
        }
        Ok(limit)
    }

    /// Samples `first..first + n` of `request`.
    fn generate_chunk(
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

    fn probe_one(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c: RemoteConfig = toml::from_str(
            r#"urls = ["http://127.0.0.1:8080/v1/", "https://h.example/"]
               api_key_env = "MY_KEY""#,
        )
        .unwrap();
        assert_eq!(c.max_in_flight, 4);
        assert_eq!(c.retries, 3);
        assert_eq!(c.timeout_s, 600.0);
        assert_eq!(
            c.validate().unwrap(),
            ["http://127.0.0.1:8080", "https://h.example"]
        );
        assert!(toml::from_str::<RemoteConfig>("urls = []\nmodle = \"x\"").is_err());
        for (bad, field) in [
            (RemoteConfig::default(), "urls"),
            (RemoteConfig::single("127.0.0.1:8080"), "urls"),
            (
                RemoteConfig {
                    max_in_flight: 0,
                    ..RemoteConfig::single("http://h")
                },
                "max_in_flight",
            ),
            (
                RemoteConfig {
                    timeout_s: 0.0,
                    ..RemoteConfig::single("http://h")
                },
                "timeout_s",
            ),
        ] {
            match bad.validate() {
                Err(RemoteError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn api_key_is_read_by_name_and_never_shown() {
        let var = "TSR_REMOTE_UNIT_TEST_KEY_UNSET";
        let c = RemoteConfig {
            api_key_env: Some(var.into()),
            ..RemoteConfig::single("http://h")
        };
        let e = OpenAiEngine::new(&c).unwrap_err();
        assert!(e.to_string().contains(var), "{e}");
        // A variable that is set (PATH always is): its value stays out of Debug.
        let c = RemoteConfig {
            api_key_env: Some("PATH".into()),
            ..RemoteConfig::single("http://h")
        };
        let engine = OpenAiEngine::new(&c).unwrap();
        let shown = format!("{engine:?}");
        assert!(shown.contains("(set)"), "{shown}");
        assert!(!shown.contains(&std::env::var("PATH").unwrap()), "{shown}");
    }

    #[test]
    fn jobs_keep_their_order_and_the_first_error_wins() {
        let c = RemoteConfig {
            urls: vec!["http://a".into(), "http://b".into()],
            max_in_flight: 3,
            ..RemoteConfig::default()
        };
        let engine = OpenAiEngine::new(&c).unwrap();
        let in_flight = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let out = engine
            .run_jobs(40, |url, j| {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                in_flight.fetch_sub(1, Ordering::SeqCst);
                assert!(url < 2);
                Ok(j * 10)
            })
            .unwrap();
        assert_eq!(out, (0..40).map(|j| j * 10).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 6);
        let e = engine
            .run_jobs(10, |_, j| {
                if j >= 3 {
                    Err(RemoteError::Malformed {
                        url: format!("u{j}"),
                        message: "x".into(),
                    })
                } else {
                    Ok(j)
                }
            })
            .unwrap_err();
        assert!(e.to_string().starts_with("u3:"), "{e}");
    }

    /// A one-thread HTTP server answering each connection with the next canned response
    /// (status, body); returns its base URL and the request paths it saw.
    fn canned(answers: Vec<(u16, &'static str)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut paths = Vec::new();
            for (status, body) in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                paths.push(
                    line.split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string(),
                );
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                }
                let mut buf = vec![0; length];
                reader.read_exact(&mut buf).unwrap();
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            paths
        });
        (url, handle)
    }

    fn engine_at(url: &str, retries: u32) -> OpenAiEngine {
        OpenAiEngine::new(&RemoteConfig {
            retries,
            timeout_s: 10.0,
            max_in_flight: 1,
            model: Some("m".into()),
            ..RemoteConfig::single(url)
        })
        .unwrap()
        .with_backoff(Duration::from_millis(1))
    }

    #[test]
    fn server_errors_are_retried_and_bad_json_is_named() {
        let (url, server) = canned(vec![(503, "busy"), (200, "{not json")]);
        let e = engine_at(&url, 1).get(0, "/v1/models").unwrap_err();
        assert!(matches!(e, RemoteError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains(&format!("{url}/v1/models")), "{e}");
        assert_eq!(server.join().unwrap(), ["/v1/models", "/v1/models"]);

        let (url, server) = canned(vec![(500, "a"), (502, "b")]);
        let e = engine_at(&url, 1)
            .post(0, "/x", &serde_json::json!({}))
            .unwrap_err();
        assert!(e.to_string().contains("HTTP 502: b"), "{e}");
        server.join().unwrap();

        // A 4xx is not retried.
        let (url, server) = canned(vec![(404, "{\"error\":\"nope\"}")]);
        let e = engine_at(&url, 3)
            .post(0, "/x", &serde_json::json!({}))
            .unwrap_err();
        assert!(matches!(e, RemoteError::Status { status: 404, .. }), "{e}");
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn a_server_without_templates_or_logprobs_is_named_for_probing() {
        // /v1/models, /props (404), /apply-template (404), /tokenize (404), the logprobs probe
        // (no logprobs).
        let (url, server) = canned(vec![
            (200, r#"{"data":[{"id":"m"}]}"#),
            (404, "not found"),
            (404, "not found"),
            (404, "not found"),
            (
                200,
                r#"{"choices":[{"index":0,"text":"x","logprobs":null,"finish_reason":"length"}]}"#,
            ),
        ]);
        let engine = engine_at(&url, 0);
        let caps = engine.capabilities(0).unwrap();
        assert!(!caps.apply_template && !caps.tokenize && caps.logprobs.is_none());
        let e = engine.require_probe().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("{url}/v1/completions")), "{msg}");
        assert!(msg.contains("log-probs") && msg.contains("direct"), "{msg}");
        // Remembered: no more requests.
        assert_eq!(engine.capabilities(0).unwrap(), caps);
        assert_eq!(server.join().unwrap().len(), 5);
    }

    #[test]
    fn a_closed_port_is_retried_then_named() {
        // Bind then drop a listener: the port is (almost surely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = RemoteConfig {
            retries: 2,
            timeout_s: 5.0,
            ..RemoteConfig::single(format!("http://127.0.0.1:{port}"))
        };
        let mut engine = OpenAiEngine::new(&c)
            .unwrap()
            .with_backoff(Duration::from_millis(1));
        let e = engine
            .generate(
                &[GenRequest {
                    prompt: Prompt::Text("x".into()),
                    n: 1,
                    seed: 1,
                }],
                &SamplingParams::default(),
            )
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("http://127.0.0.1:{port}")), "{msg}");
        assert!(msg.contains("after 3 attempt(s)"), "{msg}");
    }
}
