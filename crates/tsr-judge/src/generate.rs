//! The generation seam: what a judge (and the iteration loop) needs from a text generator.
//!
//! `tsr-sample` implements [`Generator`] on a local libtorch model; a remote OpenAI-compatible
//! engine (vLLM, SGLang, llama.cpp server) can implement it too. The types are plain data so this
//! crate stays free of libtorch.

use serde::{Deserialize, Serialize};

/// One chat message (`role` is `system`, `user` or `assistant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// A prompt: raw text fed to the model as is, or chat messages rendered through the model's
/// chat template with the generation prompt appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

impl Prompt {
    /// A single-turn chat prompt.
    pub fn user(content: impl Into<String>) -> Self {
        Prompt::Chat(vec![ChatMessage::user(content)])
    }
}

/// How to sample. `temperature == 0.0` means greedy decoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    pub top_p: f64,
    /// Keep the k most likely tokens; 0 disables it.
    pub top_k: usize,
    /// Drop tokens whose probability is below `min_p` times the top one; 0 disables it.
    pub min_p: f64,
    /// CTRL-style repetition penalty; 1 disables it.
    pub repetition_penalty: f64,
    pub max_new_tokens: usize,
    /// Generation stops when the decoded text contains one of these (it is cut before it).
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    /// The Self-Rewarding paper's sampling: T = 0.7, top_p = 0.9.
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            max_new_tokens: 512,
            stop: Vec::new(),
        }
    }
}

/// One prompt to sample `n` completions for. Sample `j` of a request is drawn with an RNG seeded
/// from `(seed, j)`, so results do not depend on which other requests share the batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenRequest {
    pub prompt: Prompt,
    pub n: usize,
    pub seed: u64,
}

/// Why a completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-sequence token.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// One generated completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    /// Number of prompt tokens (after templating), for compute accounting.
    pub prompt_tokens: usize,
}

/// Errors of a generator are its own; they travel boxed.
pub type GenerateError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Something that turns prompts into sampled completions.
pub trait Generator {
    /// For each request, `request.n` completions, in request order.
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, GenerateError>;

    /// The same engine as a [`NextTokenProbe`], if it can report next-token log-probabilities
    /// (a local model can; a remote engine can when it returns top-k log-probs). The judge modes
    /// that read score probabilities (`expected`, `direct`) need it; the default is `None`.
    fn as_probe(&mut self) -> Option<&mut dyn NextTokenProbe> {
        None
    }
}

impl<G: Generator + ?Sized> Generator for &mut G {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, GenerateError> {
        (**self).generate(requests, params)
    }
    fn as_probe(&mut self) -> Option<&mut dyn NextTokenProbe> {
        (**self).as_probe()
    }
}

impl<G: Generator + ?Sized> Generator for Box<G> {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, GenerateError> {
        (**self).generate(requests, params)
    }
    fn as_probe(&mut self) -> Option<&mut dyn NextTokenProbe> {
        (**self).as_probe()
    }
}

/// A prompt whose answer is already begun: the chat prompt is rendered with the generation
/// prompt (the assistant turn opened), then `prefill` is appended as the start of the answer.
/// For a [`Prompt::Text`], `prefill` is appended to the text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub prompt: Prompt,
    pub prefill: String,
}

/// One candidate next token and its log-probability under the model (natural log, from the full,
/// untempered distribution).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text as it decodes on its own (a remote engine may give the raw piece, such as
    /// `▁4`, `Ġ4` or `<0x34>`; [`digit_of`](crate::probs::digit_of) understands those too).
    pub token: String,
    pub logprob: f64,
    /// The token id, when the engine reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

/// What a [`NextTokenProbe`] reports for one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The most likely next tokens, most likely first.
    pub top: Vec<TokenLogprob>,
    /// Tokens of the prompt and prefill (after templating), for compute accounting.
    pub prompt_tokens: usize,
}

/// Something that reports the most likely next tokens after a (prefilled) prompt: one forward
/// pass per request, no sampling. A local model returns its exact top-`k`; an OpenAI-compatible
/// engine returns its `top_logprobs` at the first generated position.
pub trait NextTokenProbe {
    /// For each request, in order, its `top_k` most likely next tokens.
    fn next_token_logprobs(
        &mut self,
        requests: &[ProbeRequest],
        top_k: usize,
    ) -> Result<Vec<ProbeResult>, GenerateError>;
}
