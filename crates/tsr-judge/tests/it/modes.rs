//! The probability judge modes (`direct`, `expected`) over a scripted generator + probe.

use tsr_judge::{
    Completion, FinishReason, GenRequest, GenerateError, Generator, Judge, JudgeConfig, JudgeError,
    JudgeItem, JudgeMode, LlmJudge, NextTokenProbe, ParseFailure, ProbeRequest, ProbeResult,
    Prompt, SamplingParams, TokenLogprob,
};

/// A judge model whose next-token distribution after `Score: ` depends on the response length:
/// responses longer than 10 characters put most mass on `4` (and a leading-space ` 4`), shorter
/// ones on `1`; responses containing "??" put almost nothing on digits.
#[derive(Default)]
struct LengthJudge {
    generate_calls: Vec<(Vec<GenRequest>, SamplingParams)>,
    probe_calls: Vec<Vec<ProbeRequest>>,
    no_probe: bool,
}

fn response_in(p: &Prompt) -> String {
    let Prompt::Chat(m) = p else {
        panic!("chat prompt")
    };
    let c = &m[0].content;
    let s = c.find("<response>").unwrap() + "<response>".len();
    c[s..c.rfind("</response>").unwrap()].to_string()
}

fn lp(token: &str, p: f64) -> TokenLogprob {
    TokenLogprob {
        token: token.into(),
        logprob: p.ln(),
        id: None,
    }
}

impl Generator for LengthJudge {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, GenerateError> {
        self.generate_calls
            .push((requests.to_vec(), params.clone()));
        Ok(requests
            .iter()
            .map(|r| {
                (0..r.n)
                    .map(|j| Completion {
                        text: format!(
                            "Justification {j} of a {}-char answer.\n",
                            response_in(&r.prompt).len()
                        ),
                        token_ids: vec![1; 6],
                        finish_reason: FinishReason::Stop,
                        prompt_tokens: 50,
                    })
                    .collect()
            })
            .collect())
    }
    fn as_probe(&mut self) -> Option<&mut dyn NextTokenProbe> {
        if self.no_probe {
            None
        } else {
            Some(self)
        }
    }
}

impl NextTokenProbe for LengthJudge {
    fn next_token_logprobs(
        &mut self,
        requests: &[ProbeRequest],
        top_k: usize,
    ) -> Result<Vec<ProbeResult>, GenerateError> {
        self.probe_calls.push(requests.to_vec());
        Ok(requests
            .iter()
            .map(|r| {
                let resp = response_in(&r.prompt);
                let mut top = if resp.contains("??") {
                    vec![lp("I", 0.95), lp("3", 0.02)]
                } else if resp.len() > 10 {
                    vec![lp("4", 0.6), lp(" 4", 0.1), lp("5", 0.2), lp("x", 0.1)]
                } else {
                    vec![lp("1", 0.5), lp("2", 0.3), lp("\n", 0.2)]
                };
                top.truncate(top_k);
                ProbeResult {
                    top,
                    prompt_tokens: 40,
                }
            })
            .collect())
    }
}

fn items() -> Vec<JudgeItem> {
    vec![
        JudgeItem::new("long", "Q?", "A long and complete answer."),
        JudgeItem::new("short", "Q?", "Short."),
        JudgeItem::new("confused", "Q?", "?? what"),
    ]
}

fn config(mode: JudgeMode) -> JudgeConfig {
    JudgeConfig {
        mode,
        samples: 2,
        ..JudgeConfig::default()
    }
}

#[test]
fn direct_mode_is_one_probe_per_item_and_no_sampling() {
    let mut judge =
        LlmJudge::from_config(LengthJudge::default(), &config(JudgeMode::Direct)).unwrap();
    let v = judge.judge(&items()).unwrap();
    let g = judge.generator();
    assert!(g.generate_calls.is_empty(), "direct mode samples nothing");
    assert_eq!(g.probe_calls.len(), 1, "one batched probe call");
    assert_eq!(g.probe_calls[0].len(), 3);
    assert!(g.probe_calls[0].iter().all(|r| r.prefill == "Score: "));

    // long: (4 * 0.7 + 5 * 0.2) / 0.9
    let s = v[0].score.unwrap();
    assert!((s - 3.8 / 0.9).abs() < 1e-9, "{s}");
    assert_eq!(v[0].samples.len(), 1);
    let probs = v[0].samples[0].digit_probs.unwrap();
    assert!((probs[4] - 0.7).abs() < 1e-9);
    assert!((v[0].samples[0].digit_mass.unwrap() - 0.9).abs() < 1e-9);
    // short: (1 * 0.5 + 2 * 0.3) / 0.8
    assert!((v[1].score.unwrap() - 1.1 / 0.8).abs() < 1e-9);
    // confused: 2% on digits is below the default threshold 0.1: unparsed, no score.
    assert_eq!(v[2].score, None);
    assert!(matches!(
        v[2].samples[0].failure,
        Some(ParseFailure::LowDigitMass { .. })
    ));
    let st = judge.stats();
    assert_eq!(st.probed_samples, 3);
    assert_eq!(st.unscored_items, 1);
    assert!((st.digit_mass_min.unwrap() - 0.02).abs() < 1e-9);
    assert!((st.digit_mass_mean().unwrap() - (0.9 + 0.8 + 0.02) / 3.0).abs() < 1e-9);
}

#[test]
fn threshold_is_configurable() {
    let cfg = JudgeConfig {
        min_digit_mass: 0.0,
        ..config(JudgeMode::Direct)
    };
    let mut judge = LlmJudge::from_config(LengthJudge::default(), &cfg).unwrap();
    let v = judge.judge(&items()).unwrap();
    assert_eq!(v[2].score, Some(3.0));
}

#[test]
fn expected_mode_probes_after_each_justification() {
    let mut judge =
        LlmJudge::from_config(LengthJudge::default(), &config(JudgeMode::Expected)).unwrap();
    let v = judge.judge(&items()).unwrap();
    let g = judge.generator();
    assert_eq!(g.generate_calls.len(), 1);
    let (reqs, params) = &g.generate_calls[0];
    assert!(reqs.iter().all(|r| r.n == 2));
    assert!(
        params.stop.iter().any(|s| s == "Score:"),
        "{:?}",
        params.stop
    );
    assert_eq!(g.probe_calls[0].len(), 6, "one probe per justification");
    assert_eq!(
        g.probe_calls[0][1].prefill,
        "Justification 1 of a 27-char answer.\nScore: "
    );
    assert_eq!(v[0].samples.len(), 2);
    assert!(v[0].samples[1].text.starts_with("Justification 1"));
    assert_eq!(v[0].samples[0].completion_tokens, 6);
    assert_eq!(v[0].samples[0].prompt_tokens, 40);
    assert!((v[0].score.unwrap() - 3.8 / 0.9).abs() < 1e-9);
}

#[test]
fn top_k_is_passed_to_the_probe() {
    let cfg = JudgeConfig {
        top_logprobs: 1,
        ..config(JudgeMode::Direct)
    };
    let mut judge = LlmJudge::from_config(LengthJudge::default(), &cfg).unwrap();
    let v = judge.judge(&items()).unwrap();
    // Only the top token `4` is seen: the expectation is exactly 4.
    assert_eq!(v[0].score, Some(4.0));
}

#[test]
fn a_generator_without_probabilities_is_a_clear_error() {
    let g = LengthJudge {
        no_probe: true,
        ..Default::default()
    };
    let mut judge = LlmJudge::from_config(g, &config(JudgeMode::Direct)).unwrap();
    let e = judge.judge(&items()).unwrap_err();
    assert!(matches!(e, JudgeError::NoProbe { mode: "direct" }), "{e}");
    assert!(e.to_string().contains("sampled"), "{e}");
}

#[test]
fn verdict_records_keep_the_probabilities() {
    let mut judge =
        LlmJudge::from_config(LengthJudge::default(), &config(JudgeMode::Direct)).unwrap();
    let v = judge.judge(&items()).unwrap();
    let json = serde_json::to_value(&v[0]).unwrap();
    assert_eq!(
        json["samples"][0]["digit_probs"].as_array().unwrap().len(),
        6
    );
    assert!(json["samples"][0]["digit_mass"].is_number());
    let back: tsr_judge::Verdict = serde_json::from_value(json).unwrap();
    assert_eq!(back, v[0]);
}
