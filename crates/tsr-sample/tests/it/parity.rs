//! Greedy parity with transformers on the real SmolLM2-135M-Instruct GGUF
//! (tests/fixtures/make_greedy.py). Loads the built-in model (fetched once into the tsr home).

use serde::Deserialize;
use tsr_judge::{ChatMessage, FinishReason, GenRequest, Prompt, SamplingParams};
use tsr_model::{load, LoadOptions};
use tsr_sample::Sampler;

#[derive(Deserialize)]
struct Fixture {
    max_new_tokens: usize,
    eos_token_id: u32,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    messages: Vec<ChatMessage>,
    prompt_text: String,
    prompt_ids: Vec<u32>,
    new_token_ids: Vec<u32>,
}

#[test]
fn smollm2_greedy_tokens_match_transformers() {
    let fx: Fixture = serde_json::from_str(include_str!("../fixtures/greedy.json")).unwrap();
    let loaded =
        load("smollm2-135m-instruct", &LoadOptions::default()).expect("built-in SmolLM2 loads");
    let mut sampler =
        Sampler::new(&loaded.model, &loaded.tokenizer).with_generation_config(&loaded.generation);
    assert!(sampler.eos_ids().contains(&fx.eos_token_id));
    let params = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens: fx.max_new_tokens,
        ..Default::default()
    };
    let requests: Vec<GenRequest> = fx
        .cases
        .iter()
        .map(|c| GenRequest {
            prompt: Prompt::Chat(c.messages.clone()),
            n: 1,
            seed: 0,
        })
        .collect();
    for (c, r) in fx.cases.iter().zip(&requests) {
        let text = loaded
            .tokenizer
            .apply_chat_template(&c.messages, true)
            .unwrap();
        assert_eq!(text, c.prompt_text);
        assert_eq!(sampler.encode_prompt(&r.prompt).unwrap(), c.prompt_ids);
    }
    // All three prompts in one left-padded batch, then each alone.
    let batch = sampler.sample(&requests, &params).unwrap();
    for (i, c) in fx.cases.iter().enumerate() {
        let got = &batch[i][0].completion;
        assert_eq!(got.token_ids, c.new_token_ids, "prompt {i} (batched)");
        let want_reason = if c.new_token_ids.last() == Some(&fx.eos_token_id) {
            FinishReason::Eos
        } else {
            FinishReason::Length
        };
        assert_eq!(got.finish_reason, want_reason);
        let alone = sampler
            .sample(std::slice::from_ref(&requests[i]), &params)
            .unwrap();
        assert_eq!(
            alone[0][0].completion.token_ids, c.new_token_ids,
            "prompt {i} (alone)"
        );
    }
}
