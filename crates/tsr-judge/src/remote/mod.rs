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

mod capabilities;
mod config;
mod error;
mod generate;
mod jobs;
mod probe;
mod transport;
pub mod wire;

use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::Duration;

pub use capabilities::Capabilities;
pub use config::RemoteConfig;
pub use error::RemoteError;
pub use transport::health_ok;
pub use wire::LogprobLayout;

#[cfg(doc)]
use crate::generate::{
    FinishReason, GenRequest, Generator, NextTokenProbe, ProbeRequest, Prompt, SamplingParams,
};

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

    fn url(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.urls[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::generate::{GenRequest, Generator, Prompt, SamplingParams};

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
