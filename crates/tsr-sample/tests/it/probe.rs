//! `Sampler::probe` and the judge's probability modes against transformers
//! (fixtures from `tests/fixtures/make_probe.py`): a byte-level BPE and a SentencePiece
//! vocabulary in which every score digit has several token ids.

use std::path::PathBuf;

use serde_json::Value;
use tsr_judge::{
    ChatMessage, Judge, JudgeConfig, JudgeItem, JudgeMode, JudgeTemplate, LlmJudge, ProbeRequest,
    Prompt,
};
use tsr_model::{load, LoadOptions};
use tsr_sample::Sampler;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("probe.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn messages(case: &Value) -> Vec<ChatMessage> {
    serde_json::from_value(case["messages"].clone()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn probe_matches_transformers_and_sums_every_digit_id() {
    for case in cases() {
        let name = case["gguf"].as_str().unwrap();
        let loaded = load(
            fixtures().join(name).to_str().unwrap(),
            &LoadOptions::default(),
        )
        .unwrap();
        let sampler = Sampler::new(&loaded.model, &loaded.tokenizer);
        let request = ProbeRequest {
            prompt: Prompt::Chat(messages(&case)),
            prefill: case["prefill"].as_str().unwrap().into(),
        };
        let ids = sampler.encode_prefilled(&request).unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(ids, want_ids, "{name}: token ids of the prefilled prompt");

        // The top-8 ids and log-probs.
        let top = sampler.probe(std::slice::from_ref(&request), 8).unwrap();
        assert_eq!(top[0].prompt_tokens, want_ids.len());
        for (j, t) in top[0].top.iter().enumerate() {
            assert_eq!(
                t.id.unwrap() as u64,
                case["top_ids"][j].as_u64().unwrap(),
                "{name} top {j}"
            );
            assert!(
                (t.logprob - f(&case["top_logprobs"][j])).abs() < 1e-5,
                "{name} top {j}"
            );
        }

        // Over the whole vocabulary, digit probabilities summed over all of each digit's ids
        // equal transformers'; each digit has at least two ids in these vocabularies.
        let vocab = loaded.model.config().vocab_size;
        let full = sampler
            .probe(std::slice::from_ref(&request), vocab)
            .unwrap();
        let dist = tsr_judge::DigitDistribution::from_top(&full[0].top);
        for d in 0..6 {
            let ids = case["digit_ids"][d].as_array().unwrap();
            assert!(ids.len() >= 2, "{name}: digit {d} has {} id(s)", ids.len());
            let want = f(&case["digit_probs"][d]);
            assert!(
                rel(dist.probs[d], want) < 1e-4,
                "{name} digit {d}: {} vs {want}",
                dist.probs[d]
            );
        }
        assert!(rel(dist.mass, f(&case["digit_mass"])) < 1e-4, "{name}");
        assert!(
            (dist.expected().unwrap() - f(&case["expected"])).abs() < 1e-5,
            "{name}"
        );
    }
}

#[test]
fn direct_judge_scores_the_expected_digit_of_transformers() {
    // The judge renders its template into the user message; a template that is just the
    // question and answer reproduces the fixture's message exactly.
    for case in cases() {
        let name = case["gguf"].as_str().unwrap();
        let loaded = load(
            fixtures().join(name).to_str().unwrap(),
            &LoadOptions::default(),
        )
        .unwrap();
        let sampler = Sampler::new(&loaded.model, &loaded.tokenizer);
        let content = messages(&case)[0].content.clone();
        let (q, rest) = content.split_once("\nAnswer: ").unwrap();
        let (a, _) = rest.split_once('\n').unwrap();
        let template = JudgeTemplate::new(
            "test",
            "Question: {instruction}\nAnswer: {response}\nRate it.",
        )
        .unwrap();
        let cfg = JudgeConfig {
            mode: JudgeMode::Direct,
            top_logprobs: loaded.model.config().vocab_size,
            min_digit_mass: 0.0,
            ..JudgeConfig::default()
        };
        let settings = cfg.validate().unwrap().with_template(template);
        let mut judge = LlmJudge::new(sampler, settings);
        let item = JudgeItem::new("x", q.strip_prefix("Question: ").unwrap(), a);
        let v = judge.judge(&[item]).unwrap();
        let s = v[0].score.unwrap();
        assert!((s - f(&case["expected"])).abs() < 1e-5, "{name}: {s}");
        assert!(rel(v[0].samples[0].digit_mass.unwrap(), f(&case["digit_mass"])) < 1e-4);
    }
}

#[test]
fn batched_probes_equal_single_ones() {
    let case = &cases()[0];
    let name = case["gguf"].as_str().unwrap();
    let loaded = load(
        fixtures().join(name).to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let sampler = Sampler::new(&loaded.model, &loaded.tokenizer);
    let requests: Vec<ProbeRequest> = ["a", "longer answer here", "bb"]
        .iter()
        .map(|a| ProbeRequest {
            prompt: Prompt::user(format!("Question: q\nAnswer: {a}")),
            prefill: "Score: ".into(),
        })
        .collect();
    let together = sampler.probe(&requests, 5).unwrap();
    for (r, t) in requests.iter().zip(&together) {
        let alone = sampler.probe(std::slice::from_ref(r), 5).unwrap();
        for (x, y) in alone[0].top.iter().zip(&t.top) {
            assert_eq!(x.id, y.id);
            assert!((x.logprob - y.logprob).abs() < 1e-5);
        }
    }
}
