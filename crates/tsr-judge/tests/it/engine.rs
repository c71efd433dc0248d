//! [`OpenAiEngine`] against a real llama.cpp server: the `xllamacpp` wheel serving the built-in
//! SmolLM2-135M-Instruct GGUF on 127.0.0.1, started by `docs/examples/engines/serve_llamacpp.py`.
//!
//! Needs a Python with `xllamacpp` (`TSR_ENGINE_PYTHON`, else the tsr cache's `venv-engines`)
//! and the GGUF (`TSR_ENGINE_GGUF`, else the tsr home's built-in model): `cargo xtask engines`
//! installs both, and `cargo xtask test` does it before the tests. Without them the test fails
//! and says so, unless `TSR_SKIP_ENGINE_TESTS=1`, which skips it with a note on stderr.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tsr_judge::remote::LogprobLayout;
use tsr_judge::{
    digit_of, DigitDistribution, FinishReason, GenRequest, Generator, Judge, JudgeConfig,
    JudgeItem, JudgeMode, LlmJudge, OpenAiEngine, ProbeRequest, Prompt, RemoteConfig,
    SamplingParams, SCORE_PREFILL,
};

const INSTALL: &str = "run `cargo xtask engines` (it installs xllamacpp into the tsr cache and \
                       fetches the built-in GGUF; `cargo xtask test` does it too), or set \
                       TSR_SKIP_ENGINE_TESTS=1 to skip the llama.cpp server tests";

/// `$TSR_DEV_CACHE`, else `~/.cache/tsr` (where xtask keeps its environments).
fn dev_cache() -> PathBuf {
    std::env::var_os("TSR_DEV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(home_cache)
}

fn home_cache() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tsr")
}

/// `$TSR_HOME`, else `~/.cache/tsr` (where tsr keeps built-in models).
fn tsr_home() -> PathBuf {
    std::env::var_os("TSR_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(home_cache)
}

/// The Python with xllamacpp and the GGUF, or `None` when the tests are to be skipped.
#[allow(clippy::print_stderr)]
fn engine_env() -> Option<(PathBuf, PathBuf)> {
    if std::env::var("TSR_SKIP_ENGINE_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping the llama.cpp server tests: TSR_SKIP_ENGINE_TESTS=1");
        return None;
    }
    let python = std::env::var_os("TSR_ENGINE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| dev_cache().join("venv-engines/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import xllamacpp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no Python with xllamacpp at {} (TSR_ENGINE_PYTHON): {INSTALL}",
        python.display()
    );
    let gguf = std::env::var_os("TSR_ENGINE_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            tsr_home().join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        gguf.is_file(),
        "the built-in GGUF is not at {} (TSR_ENGINE_GGUF): {INSTALL}",
        gguf.display()
    );
    Some((python, gguf))
}

/// A llama.cpp server child process, killed when dropped (also when a check panics).
struct Server {
    child: Child,
    url: String,
    _log: tempfile::NamedTempFile,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(python: &PathBuf, gguf: &PathBuf) -> Server {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/examples/engines/serve_llamacpp.py"
        );
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(python)
            .arg(script)
            .arg(gguf)
            .args([
                "--parallel",
                "4",
                "--threads",
                "2",
                "--ctx-per-slot",
                "2048",
            ])
            // The script exits when its stdin closes: the server cannot outlive this process.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let log_tail = |log: &tempfile::NamedTempFile| {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        let mut server = Server {
            child,
            url: String::new(),
            _log: log,
        };
        server.url = match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(url) => url,
            Err(_) => panic!(
                "the llama.cpp server did not report its address; its log ends:\n{}",
                log_tail(&server._log)
            ),
        };
        // Poll /health until the model is ready.
        let t0 = Instant::now();
        loop {
            let ok = ureq::get(&format!("{}/health", server.url))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .is_some_and(|b| b.contains("\"ok\""));
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{}/health never answered ok; server log ends:\n{}",
                server.url,
                log_tail(&server._log)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }
}

fn engine(urls: Vec<String>, max_in_flight: usize) -> OpenAiEngine {
    OpenAiEngine::new(&RemoteConfig {
        urls,
        max_in_flight,
        timeout_s: 300.0,
        retries: 1,
        ..RemoteConfig::default()
    })
    .unwrap()
}

fn text(prompt: &str, n: usize, seed: u64) -> GenRequest {
    GenRequest {
        prompt: Prompt::Text(prompt.into()),
        n,
        seed,
    }
}

fn greedy(max_new_tokens: usize, stop: &[&str]) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        ..SamplingParams::default()
    }
}

/// All checks share one server (loading it takes seconds; 4 parallel slots).
#[test]
fn llama_cpp_server() {
    let Some((python, gguf)) = engine_env() else {
        return;
    };
    let server = Server::start(&python, &gguf);
    let url = server.url.clone();
    let mut e = engine(vec![url.clone()], 4);

    // What the server can do.
    let caps = e.capabilities(0).unwrap();
    assert!(
        caps.apply_template && caps.tokenize && caps.logprob_ids,
        "{caps:?}"
    );
    assert_eq!(caps.logprobs, Some(LogprobLayout::Content));
    assert_eq!(caps.max_n, Some(4));
    e.require_probe().unwrap();

    // Seeded sampling with n = 2 is reproducible, also spread over two URLs (the same server
    // twice) with a different concurrency; the two samples of a request differ.
    let sampled = SamplingParams {
        temperature: 0.8,
        top_p: 0.95,
        max_new_tokens: 10,
        ..SamplingParams::default()
    };
    let reqs = [
        text("Once upon a time", 2, 7),
        text("My favourite food is", 2, 8),
    ];
    let a = e.generate(&reqs, &sampled).unwrap();
    let mut two = engine(vec![url.clone(), url.clone()], 1);
    let b = two.generate(&reqs, &sampled).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    for out in &a {
        assert_eq!(out.len(), 2);
        assert_ne!(out[0].text, out[1].text);
        for c in out {
            assert_eq!(c.finish_reason, FinishReason::Length);
            assert_eq!(c.token_ids.len(), 10, "{c:?}");
            assert!(c.prompt_tokens > 0);
        }
    }
    let other_seed = e
        .generate(&[text("Once upon a time", 2, 99)], &sampled)
        .unwrap();
    assert_ne!(other_seed[0], a[0]);

    // Stop strings: cut before the stop, reported as Stop; without them the limit ends it.
    let paris = e
        .generate(
            &[text("The capital of France is", 1, 0)],
            &greedy(16, &["."]),
        )
        .unwrap();
    assert_eq!(paris[0][0].text, " Paris");
    assert_eq!(paris[0][0].finish_reason, FinishReason::Stop);
    let short = e
        .generate(&[text("The capital of France is", 1, 0)], &greedy(2, &[]))
        .unwrap();
    assert_eq!(short[0][0].text, " Paris.");
    assert_eq!(short[0][0].finish_reason, FinishReason::Length);

    // Chat vs text: the chat prompt goes through the model's template (system prompt and
    // all), so it has more prompt tokens and answers as an assistant.
    let q = "What is the capital of France? Answer in one word.";
    let chat = e
        .generate(
            &[
                GenRequest {
                    prompt: Prompt::user(q),
                    n: 1,
                    seed: 0,
                },
                text(q, 1, 0),
            ],
            &greedy(24, &[]),
        )
        .unwrap();
    let (c, t) = (&chat[0][0], &chat[1][0]);
    assert!(c.prompt_tokens > t.prompt_tokens + 10, "{c:?} vs {t:?}");
    assert!(c.text.contains("Paris"), "{c:?}");
    assert_ne!(c.text, t.text);
    assert!(!c.token_ids.is_empty(), "{c:?}");

    // A `direct` probe: a judge-like chat prompt, the answer prefilled with `Score: `.
    let judge_prompt = "Question: What is 2 + 2?\nAnswer: 2 + 2 = 4.\n\nDoes the answer respond \
                        to the question? Rate from 1 (unrelated) to 5 (fully answers it).";
    let probe = e.as_probe().unwrap();
    let r = probe
        .next_token_logprobs(
            &[
                ProbeRequest {
                    prompt: Prompt::user(judge_prompt),
                    prefill: SCORE_PREFILL.into(),
                },
                ProbeRequest {
                    prompt: Prompt::Text("The capital of France is".into()),
                    prefill: String::new(),
                },
            ],
            20,
        )
        .unwrap();
    let top = &r[0].top;
    assert!(!top.is_empty() && top.len() <= 20, "{top:?}");
    assert!(top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
    let total: f64 = top.iter().map(|t| t.logprob.exp()).sum();
    assert!(total <= 1.0 + 1e-6, "{total}");
    assert!(top.iter().any(|t| digit_of(&t.token).is_some()), "{top:?}");
    assert!(DigitDistribution::from_top(top).mass > 0.0);
    assert!(r[0].prompt_tokens > 30);
    assert_eq!(r[1].top[0].token, " Paris");

    // LlmJudge in `direct` mode over the engine.
    let config = JudgeConfig {
        mode: JudgeMode::Direct,
        template: "short".into(),
        ..JudgeConfig::default()
    };
    let mut judge = LlmJudge::from_config(&mut e, &config).unwrap();
    let items = [
        JudgeItem::new("a", "What is 2 + 2?", "2 + 2 = 4."),
        JudgeItem::new("b", "Name a primary colour.", "Red is a primary colour."),
        JudgeItem::new("c", "What is the capital of Italy?", "Bananas are yellow."),
    ];
    let verdicts = judge.judge(&items).unwrap();
    assert_eq!(verdicts.len(), 3);
    for v in &verdicts {
        let s = &v.samples[0];
        assert!(s.digit_mass.unwrap() > 0.0, "{v:?}");
        if let Some(score) = v.score {
            assert!((0.0..=5.0).contains(&score), "{v:?}");
        }
    }

    // A server that is down: retried, then an error naming its URL.
    drop(server);
    let mut e = engine(vec![url.clone()], 1).with_backoff(Duration::from_millis(20));
    let err = e
        .generate(&[text("x", 1, 0)], &greedy(2, &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&url) && err.contains("2 attempt(s)"), "{err}");
}
