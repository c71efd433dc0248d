//! The JSON that goes over the wire: request bodies and the parsing of answers. Pure functions,
//! tested with canned responses in the shapes a llama.cpp server (and vLLM) send.

use serde_json::{json, Map, Value};

use super::RemoteError;
use crate::generate::{ChatMessage, FinishReason, SamplingParams, TokenLogprob};

/// Where an engine puts log-probs in a completion choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogprobLayout {
    /// `logprobs.content[j].{token, logprob, id?, top_logprobs[]}` (chat layout; a llama.cpp
    /// server uses it on `/v1/completions` too).
    Content,
    /// `logprobs.{tokens[], token_logprobs[], top_logprobs[{token: logprob}]}` (the legacy
    /// completions layout, e.g. vLLM's `/v1/completions`).
    Legacy,
}

/// The seed sent for a request: engines take 32-bit seeds (llama.cpp reads `seed` as a `uint32`
/// and treats `0xFFFFFFFF` as "random"), so the 64-bit seed is folded into `0..0xFFFFFFFF`.
pub fn wire_seed(seed: u64) -> u64 {
    let folded = (seed ^ (seed >> 32)) & 0xFFFF_FFFF;
    folded % 0xFFFF_FFFF
}

/// The seed of a request that asks for samples `first..` of a prompt seeded with `seed`: a
/// llama.cpp server draws sample `j` of a request seeded `s` with seed `s + j` (sample `j` of
/// one request equals sample 0 of a request seeded `s + j`), so a request split into chunks
/// gives the same samples as one request would.
pub fn chunk_seed(seed: u64, first: usize) -> u64 {
    (wire_seed(seed) + first as u64) % 0xFFFF_FFFF
}

/// The sampling fields shared by both endpoints (`seed` as sent: see [`chunk_seed`]). `top_k` and `min_p` are always sent (0 turns
/// them off, as in the local sampler; a llama.cpp server would otherwise apply its own defaults
/// of 40 and 0.05); the repetition penalty only when it is on, under both engines' names.
fn sampling_fields(body: &mut Map<String, Value>, n: usize, seed: u64, params: &SamplingParams) {
    body.insert("n".into(), json!(n));
    body.insert("seed".into(), json!(seed));
    body.insert("temperature".into(), json!(params.temperature));
    body.insert("top_p".into(), json!(params.top_p));
    body.insert("top_k".into(), json!(params.top_k));
    body.insert("min_p".into(), json!(params.min_p));
    if params.repetition_penalty != 1.0 {
        body.insert(
            "repetition_penalty".into(),
            json!(params.repetition_penalty),
        );
        body.insert("repeat_penalty".into(), json!(params.repetition_penalty));
    }
    body.insert("max_tokens".into(), json!(params.max_new_tokens));
    if !params.stop.is_empty() {
        body.insert("stop".into(), json!(params.stop));
    }
}

fn with_model(model: Option<&str>) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(m) = model {
        body.insert("model".into(), json!(m));
    }
    body
}

/// The body of a `/v1/chat/completions` request. `logprobs` asks for the sampled tokens'
/// log-probs (only to learn their ids).
pub fn chat_body(
    model: Option<&str>,
    messages: &[ChatMessage],
    n: usize,
    seed: u64,
    params: &SamplingParams,
    logprobs: bool,
) -> Value {
    let mut body = with_model(model);
    body.insert("messages".into(), json!(messages));
    sampling_fields(&mut body, n, seed, params);
    if logprobs {
        body.insert("logprobs".into(), json!(true));
    }
    Value::Object(body)
}

/// The body of a `/v1/completions` request for raw text. `logprobs` asks for the sampled
/// tokens' log-probs (legacy integer form: the number of alternatives, here 1).
pub fn text_body(
    model: Option<&str>,
    prompt: &str,
    n: usize,
    seed: u64,
    params: &SamplingParams,
    logprobs: bool,
) -> Value {
    let mut body = with_model(model);
    body.insert("prompt".into(), json!(prompt));
    sampling_fields(&mut body, n, seed, params);
    if logprobs {
        body.insert("logprobs".into(), json!(1));
    }
    Value::Object(body)
}

/// The body of a next-token probe: one greedy token after `prompt`, with the `top_k` most likely
/// alternatives (`logprobs` as an integer is what `/v1/completions` takes; a llama.cpp server
/// maps it to `n_probs`).
pub fn probe_body(model: Option<&str>, prompt: &str, top_k: usize) -> Value {
    let mut body = with_model(model);
    body.insert("prompt".into(), json!(prompt));
    body.insert("max_tokens".into(), json!(1));
    body.insert("temperature".into(), json!(0.0));
    body.insert("n".into(), json!(1));
    body.insert("logprobs".into(), json!(top_k));
    Value::Object(body)
}

/// The body of llama.cpp's `/apply-template`.
pub fn apply_template_body(messages: &[ChatMessage]) -> Value {
    json!({ "messages": messages })
}

/// The body of llama.cpp's `/tokenize` (the text as generated: no BOS added).
pub fn tokenize_body(text: &str) -> Value {
    json!({ "content": text, "add_special": false })
}

/// One parsed choice of a completion response.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub text: String,
    pub finish_reason: FinishReason,
    /// The generated token ids, when the engine reported them (in the log-probs).
    pub token_ids: Option<Vec<u32>>,
}

/// A parsed completion response.
#[derive(Clone, Debug, PartialEq)]
pub struct Completions {
    /// Choices ordered by their `index`.
    pub choices: Vec<Choice>,
    pub prompt_tokens: usize,
}

fn malformed(url: &str, message: impl Into<String>) -> RemoteError {
    RemoteError::Malformed {
        url: url.to_string(),
        message: message.into(),
    }
}

/// Parses a `/v1/completions` (`chat == false`) or `/v1/chat/completions` answer with `n`
/// choices. `stop_requested`: whether the request had stop strings (see [`finish_reason`]).
pub fn parse_completions(
    url: &str,
    v: &Value,
    chat: bool,
    n: usize,
    stop_requested: bool,
) -> Result<Completions, RemoteError> {
    if let Some(e) = v.get("error") {
        return Err(malformed(url, format!("the engine answered an error: {e}")));
    }
    let choices = v
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(url, "no `choices` array in the answer"))?;
    let mut parsed: Vec<(usize, Choice)> = Vec::with_capacity(choices.len());
    for (pos, c) in choices.iter().enumerate() {
        let index = c
            .get("index")
            .and_then(Value::as_u64)
            .map_or(pos, |i| i as usize);
        let text = if chat {
            c.pointer("/message/content")
                .map(|t| t.as_str().unwrap_or_default())
        } else {
            c.get("text").and_then(Value::as_str)
        }
        .ok_or_else(|| {
            malformed(
                url,
                format!(
                    "choice {index} has no {}",
                    if chat { "`message.content`" } else { "`text`" }
                ),
            )
        })?
        .to_string();
        let reason = c
            .get("finish_reason")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(url, format!("choice {index} has no `finish_reason`")))?;
        let finish_reason = finish_reason(url, reason, c, stop_requested)?;
        parsed.push((
            index,
            Choice {
                text,
                finish_reason,
                token_ids: logprob_ids(c),
            },
        ));
    }
    parsed.sort_by_key(|(i, _)| *i);
    if parsed.len() != n || parsed.iter().enumerate().any(|(j, (i, _))| j != *i) {
        return Err(malformed(
            url,
            format!(
                "expected {n} choice(s) indexed 0..{n}, got indices {:?}",
                parsed.iter().map(|(i, _)| *i).collect::<Vec<_>>()
            ),
        ));
    }
    Ok(Completions {
        choices: parsed.into_iter().map(|(_, c)| c).collect(),
        prompt_tokens: prompt_tokens(v),
    })
}

fn prompt_tokens(v: &Value) -> usize {
    v.pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize
}

/// Maps an OpenAI `finish_reason`. `"length"` is [`FinishReason::Length`]. `"stop"` covers both
/// an end-of-sequence token and a stop string, told apart by:
/// 1. vLLM's `stop_reason`: a string is the stop string that matched ([`FinishReason::Stop`]),
///    `null` or a token id an end of sequence ([`FinishReason::Eos`]);
/// 2. no stop strings in the request: [`FinishReason::Eos`];
/// 3. log-probs in the chat layout (llama.cpp): the end-of-sequence token is the last entry and
///    decodes to empty text; a stop string's tokens are left out, so a last entry with text means
///    [`FinishReason::Stop`];
/// 4. otherwise the engine gives no way to tell: [`FinishReason::Eos`].
pub fn finish_reason(
    url: &str,
    reason: &str,
    choice: &Value,
    stop_requested: bool,
) -> Result<FinishReason, RemoteError> {
    match reason {
        "length" => Ok(FinishReason::Length),
        "stop" | "eos" => {
            if let Some(sr) = choice.get("stop_reason") {
                return Ok(if sr.is_string() {
                    FinishReason::Stop
                } else {
                    FinishReason::Eos
                });
            }
            if !stop_requested {
                return Ok(FinishReason::Eos);
            }
            match choice
                .pointer("/logprobs/content")
                .and_then(Value::as_array)
                .and_then(|c| c.last())
                .and_then(|t| t.get("token"))
                .and_then(Value::as_str)
            {
                Some(last) if !last.is_empty() => Ok(FinishReason::Stop),
                _ => Ok(FinishReason::Eos),
            }
        }
        other => Err(malformed(url, format!("unknown finish_reason {other:?}"))),
    }
}

/// The generated token ids from chat-layout log-probs that carry `id`s (llama.cpp); `None` when
/// the engine did not report them.
fn logprob_ids(choice: &Value) -> Option<Vec<u32>> {
    let content = choice.pointer("/logprobs/content")?.as_array()?;
    content
        .iter()
        .map(|t| t.get("id")?.as_u64().map(|i| i as u32))
        .collect()
}

/// The top-k list at the first generated position of a probe answer, most likely first, in
/// either layout; `Ok(None)` when the answer has no log-probs at all.
pub fn parse_probe(
    url: &str,
    v: &Value,
) -> Result<Option<(Vec<TokenLogprob>, usize)>, RemoteError> {
    if let Some(e) = v.get("error") {
        return Err(malformed(url, format!("the engine answered an error: {e}")));
    }
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| malformed(url, "no `choices[0]` in the answer"))?;
    let Some(lp) = choice.get("logprobs").filter(|l| !l.is_null()) else {
        return Ok(None);
    };
    let mut top = if let Some(content) = lp.get("content") {
        let first = content
            .get(0)
            .ok_or_else(|| malformed(url, "`logprobs.content` is empty"))?;
        let list = first
            .get("top_logprobs")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(url, "`logprobs.content[0]` has no `top_logprobs` list"))?;
        list.iter()
            .map(|t| {
                let token = t.get("token").and_then(Value::as_str);
                let logprob = t.get("logprob").and_then(Value::as_f64);
                match (token, logprob) {
                    (Some(token), Some(logprob)) => Ok(TokenLogprob {
                        token: token.to_string(),
                        logprob,
                        id: t.get("id").and_then(Value::as_u64).map(|i| i as u32),
                    }),
                    _ => Err(malformed(
                        url,
                        format!("a top_logprobs entry lacks `token` or `logprob`: {t}"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?
    } else if let Some(list) = lp.get("top_logprobs").and_then(Value::as_array) {
        let first = list
            .first()
            .and_then(Value::as_object)
            .ok_or_else(|| malformed(url, "`logprobs.top_logprobs[0]` is not an object"))?;
        first
            .iter()
            .map(|(token, lp)| {
                lp.as_f64()
                    .map(|logprob| TokenLogprob {
                        token: token.clone(),
                        logprob,
                        id: None,
                    })
                    .ok_or_else(|| malformed(url, format!("log-prob of {token:?} is not a number")))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        return Err(malformed(
            url,
            "`logprobs` has neither `content` (chat layout) nor `top_logprobs` (legacy layout)",
        ));
    };
    top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
    Ok(Some((top, prompt_tokens(v))))
}

/// Which log-prob layout a probe answer uses and whether it names token ids; `None` without
/// log-probs.
pub fn logprob_layout(v: &Value) -> Option<(LogprobLayout, bool)> {
    let lp = v.pointer("/choices/0/logprobs").filter(|l| !l.is_null())?;
    if let Some(c) = lp.get("content").and_then(Value::as_array) {
        let ids = c.first().is_some_and(|t| t.get("id").is_some());
        Some((LogprobLayout::Content, ids))
    } else if lp.get("top_logprobs").is_some() {
        Some((LogprobLayout::Legacy, false))
    } else {
        None
    }
}

/// The templated prompt of an `/apply-template` answer.
pub fn parse_apply_template(url: &str, v: &Value) -> Result<String, RemoteError> {
    v.get("prompt")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| malformed(url, "`/apply-template` answer has no `prompt` string"))
}

/// The ids of a `/tokenize` answer: `tokens` as plain ids, or as `{id, piece}` objects
/// (`with_pieces`).
pub fn parse_tokenize(url: &str, v: &Value) -> Result<Vec<u32>, RemoteError> {
    let tokens = v
        .get("tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(url, "`/tokenize` answer has no `tokens` array"))?;
    tokens
        .iter()
        .map(|t| {
            t.as_u64()
                .or_else(|| t.get("id").and_then(Value::as_u64))
                .map(|i| i as u32)
                .ok_or_else(|| malformed(url, format!("`/tokenize` token {t} is not an id")))
        })
        .collect()
}

/// The first model id of a `/v1/models` answer.
pub fn parse_first_model(v: &Value) -> Option<String> {
    v.pointer("/data/0/id")
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://h:1";

    // Shapes as a llama.cpp server (xllamacpp 2026.10.11549) sends them.
    const TEXT_N2: &str = r#"{"choices":[{"text":", the company's CEO","index":1,"logprobs":null,"finish_reason":"length"},{"text":", I saw a young woman","index":0,"logprobs":null,"finish_reason":"length"}],"created":1796232786,"model":"m.gguf","object":"text_completion","usage":{"completion_tokens":12,"prompt_tokens":4,"total_tokens":16},"id":"chatcmpl-c1EB"}"#;
    const TEXT_STOP: &str = r#"{"choices":[{"text":" Paris.","index":0,"logprobs":{"content":[{"id":7042,"token":" Paris","bytes":[32,80,97,114,105,115],"logprob":-0.2589,"top_logprobs":[{"id":7042,"token":" Paris","bytes":[32,80,97,114,105,115],"logprob":-0.2589}]},{"id":30,"token":".","bytes":[46],"logprob":-0.398,"top_logprobs":[{"id":30,"token":".","bytes":[46],"logprob":-0.398}]}]},"finish_reason":"stop"}],"usage":{"completion_tokens":3,"prompt_tokens":5,"total_tokens":8}}"#;
    const CHAT_EOS: &str = r#"{"choices":[{"finish_reason":"stop","index":0,"message":{"role":"assistant","content":"Hello!"},"logprobs":{"content":[{"id":19556,"token":"Hello","bytes":[72],"logprob":-0.5,"top_logprobs":[]},{"id":17,"token":"!","bytes":[33],"logprob":-0.1,"top_logprobs":[]},{"id":2,"token":"","bytes":[],"logprob":-0.01,"top_logprobs":[]}]}}],"usage":{"completion_tokens":3,"prompt_tokens":32,"total_tokens":35}}"#;
    const PROBE: &str = r#"{"choices":[{"text":"4","index":0,"logprobs":{"content":[{"id":36,"token":"4","bytes":[52],"logprob":-0.9,"top_logprobs":[{"id":35,"token":"3","bytes":[51],"logprob":-1.2},{"id":36,"token":"4","bytes":[52],"logprob":-0.9},{"id":216,"token":" ","bytes":[32],"logprob":-2.5}]}]},"finish_reason":"length"}],"usage":{"completion_tokens":1,"prompt_tokens":120,"total_tokens":121}}"#;
    // vLLM's legacy completions layout.
    const PROBE_LEGACY: &str = r#"{"choices":[{"index":0,"text":"4","logprobs":{"text_offset":[0],"token_logprobs":[-0.9],"tokens":["4"],"top_logprobs":[{"4":-0.9,"3":-1.2}]},"finish_reason":"length","stop_reason":null}],"usage":{"prompt_tokens":50,"total_tokens":51,"completion_tokens":1}}"#;

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn bodies_carry_the_sampling_settings() {
        let params = SamplingParams {
            temperature: 0.8,
            top_p: 0.9,
            max_new_tokens: 64,
            stop: vec!["\n\n".into()],
            ..SamplingParams::default()
        };
        let b = chat_body(Some("m"), &[ChatMessage::user("hi")], 3, 7, &params, true);
        assert_eq!(b["model"], "m");
        assert_eq!(b["messages"][0]["role"], "user");
        assert_eq!(b["messages"][0]["content"], "hi");
        assert_eq!(b["n"], 3);
        assert_eq!(b["seed"], 7);
        assert_eq!(b["temperature"], 0.8);
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["top_k"], 0);
        assert_eq!(b["min_p"], 0.0);
        assert_eq!(b["max_tokens"], 64);
        assert_eq!(b["stop"][0], "\n\n");
        assert_eq!(b["logprobs"], true);
        assert!(b.get("repetition_penalty").is_none());

        let mut p2 = params.clone();
        p2.stop.clear();
        p2.repetition_penalty = 1.1;
        let t = text_body(None, "Once", 1, 1, &p2, false);
        assert!(t.get("model").is_none());
        assert_eq!(t["prompt"], "Once");
        assert!(t.get("stop").is_none());
        assert!(t.get("logprobs").is_none());
        assert_eq!(t["repetition_penalty"], 1.1);
        assert_eq!(t["repeat_penalty"], 1.1);
        assert_eq!(text_body(None, "x", 1, 1, &p2, true)["logprobs"], 1);

        let p = probe_body(Some("m"), "abc", 20);
        assert_eq!(p["max_tokens"], 1);
        assert_eq!(p["temperature"], 0.0);
        assert_eq!(p["logprobs"], 20);
    }

    #[test]
    fn seeds_fit_32_bits_and_avoid_the_random_marker() {
        assert_eq!(wire_seed(7), 7);
        for s in [u64::MAX, 0xFFFF_FFFF, 1 << 40, 0x1234_5678_9abc_def0] {
            assert!(wire_seed(s) < 0xFFFF_FFFF, "{s:#x}");
        }
        assert_ne!(wire_seed(1 << 32), wire_seed(2 << 32));
        assert_eq!(chunk_seed(7, 4), 11);
        assert_eq!(chunk_seed(0xFFFF_FFFE, 1), 0);
    }

    #[test]
    fn text_choices_are_ordered_by_index() {
        let c = parse_completions(URL, &v(TEXT_N2), false, 2, false).unwrap();
        assert_eq!(c.prompt_tokens, 4);
        assert_eq!(c.choices[0].text, ", I saw a young woman");
        assert_eq!(c.choices[1].finish_reason, FinishReason::Length);
        assert_eq!(c.choices[0].token_ids, None);
        let e = parse_completions(URL, &v(TEXT_N2), false, 3, false).unwrap_err();
        assert!(e.to_string().contains("http://h:1"), "{e}");
        assert!(e.to_string().contains("expected 3 choice"), "{e}");
    }

    #[test]
    fn stop_and_eos_are_told_apart() {
        let c = parse_completions(URL, &v(TEXT_STOP), false, 1, true).unwrap();
        assert_eq!(c.choices[0].finish_reason, FinishReason::Stop);
        assert_eq!(c.choices[0].token_ids, Some(vec![7042, 30]));
        let c = parse_completions(URL, &v(TEXT_STOP), false, 1, false).unwrap();
        assert_eq!(c.choices[0].finish_reason, FinishReason::Eos);
        let c = parse_completions(URL, &v(CHAT_EOS), true, 1, true).unwrap();
        assert_eq!(c.choices[0].text, "Hello!");
        assert_eq!(c.choices[0].finish_reason, FinishReason::Eos);
        assert_eq!(c.choices[0].token_ids, Some(vec![19556, 17, 2]));
        assert_eq!(c.prompt_tokens, 32);
        // vLLM's stop_reason decides when present.
        let stop = json!({"finish_reason": "stop", "stop_reason": "\n"});
        let eos = json!({"finish_reason": "stop", "stop_reason": null});
        assert_eq!(
            finish_reason(URL, "stop", &stop, true).unwrap(),
            FinishReason::Stop
        );
        assert_eq!(
            finish_reason(URL, "stop", &eos, true).unwrap(),
            FinishReason::Eos
        );
        assert!(finish_reason(URL, "content_filter", &eos, true).is_err());
    }

    #[test]
    fn malformed_answers_name_the_url() {
        for bad in [
            json!({}),
            json!({"choices": [{"index": 0, "finish_reason": "stop"}]}),
            json!({"choices": [{"index": 0, "text": "x"}]}),
            json!({"error": {"message": "boom", "code": 500}}),
        ] {
            let e = parse_completions(URL, &bad, false, 1, false).unwrap_err();
            assert!(matches!(e, RemoteError::Malformed { .. }), "{e}");
            assert!(e.to_string().contains(URL), "{e}");
        }
    }

    #[test]
    fn probe_top_lists_in_both_layouts() {
        let (top, pt) = parse_probe(URL, &v(PROBE)).unwrap().unwrap();
        assert_eq!(pt, 120);
        let tokens: Vec<&str> = top.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(tokens, ["4", "3", " "]);
        assert_eq!(top[0].id, Some(36));
        assert_eq!(
            logprob_layout(&v(PROBE)),
            Some((LogprobLayout::Content, true))
        );

        let (top, pt) = parse_probe(URL, &v(PROBE_LEGACY)).unwrap().unwrap();
        assert_eq!(pt, 50);
        assert_eq!(top[0].token, "4");
        assert_eq!(top[1].token, "3");
        assert_eq!(top[1].id, None);
        assert_eq!(
            logprob_layout(&v(PROBE_LEGACY)),
            Some((LogprobLayout::Legacy, false))
        );

        assert_eq!(parse_probe(URL, &v(TEXT_N2)).unwrap(), None);
        assert_eq!(logprob_layout(&v(TEXT_N2)), None);
        let bad = json!({"choices": [{"logprobs": {"content": [{"token": "4"}]}}]});
        assert!(parse_probe(URL, &bad).is_err());
    }

    #[test]
    fn native_endpoints() {
        let p = parse_apply_template(URL, &json!({"prompt": "<|im_start|>user\nHi<|im_end|>\n"}));
        assert_eq!(p.unwrap(), "<|im_start|>user\nHi<|im_end|>\n");
        assert!(parse_apply_template(URL, &json!({"x": 1})).is_err());
        assert_eq!(
            parse_tokenize(URL, &json!({"tokens": [32226, 42, 216, 36]})).unwrap(),
            [32226, 42, 216, 36]
        );
        assert_eq!(
            parse_tokenize(URL, &json!({"tokens": [{"id": 5, "piece": "a"}]})).unwrap(),
            [5]
        );
        assert!(parse_tokenize(URL, &json!({"tokens": ["a"]})).is_err());
        assert_eq!(
            parse_first_model(&json!({"object": "list", "data": [{"id": "m.gguf"}]})),
            Some("m.gguf".into())
        );
        assert_eq!(
            tokenize_body("Score: 4"),
            json!({"content": "Score: 4", "add_special": false})
        );
    }
}
