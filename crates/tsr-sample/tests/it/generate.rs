//! Batched generation on a tiny random model.

use crate::tiny;
use tch::{Kind, Tensor};
use tsr_judge::{FinishReason, GenRequest, Generator, Prompt, SamplingParams};
use tsr_model::Model;
use tsr_sample::{LogprobMode, Sample, SampleError, Sampler, SamplerOptions};

fn greedy(max_new: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens: max_new,
        ..Default::default()
    }
}

fn sampled(max_new: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 40,
        max_new_tokens: max_new,
        ..Default::default()
    }
}

fn opts() -> SamplerOptions {
    SamplerOptions {
        ignore_eos: true,
        ..Default::default()
    }
}

fn run(
    model: &Model,
    tok: &tsr_model::ChatTokenizer,
    options: SamplerOptions,
    prompts: &[Vec<u32>],
    reqs: &[(usize, u64)],
    params: &SamplingParams,
) -> Vec<Vec<Sample>> {
    Sampler::new(model, tok)
        .with_options(options)
        .sample_ids(prompts, reqs, params)
        .unwrap()
}

fn ids(out: &[Vec<Sample>]) -> Vec<Vec<Vec<u32>>> {
    out.iter()
        .map(|v| v.iter().map(|s| s.completion.token_ids.clone()).collect())
        .collect()
}

/// Log-probs of the tokens a cached-path generation produced equal those of a full forward over
/// prompt + generated tokens, for every step and every (left-padded) row.
#[test]
fn cache_path_matches_full_forward() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 128);
    let prompts = tiny::prompts();
    let reqs = vec![(2, 1), (1, 2), (2, 3)];
    let options = SamplerOptions {
        logprobs: LogprobMode::Raw,
        ..opts()
    };
    let out = run(&model, &tok, options, &prompts, &reqs, &sampled(12));
    let _g = tch::no_grad_guard();
    for (p, samples) in prompts.iter().zip(&out) {
        for s in samples {
            let gen = &s.completion.token_ids;
            assert_eq!(gen.len(), 12);
            let all: Vec<i64> = p.iter().chain(gen).map(|&t| t as i64).collect();
            let n = all.len() as i64;
            let input = Tensor::from_slice(&all).reshape([1, n]);
            let mask = Tensor::ones([1, n], (Kind::Int64, tch::Device::Cpu));
            let lp = model
                .logits(&input, &mask, false)
                .unwrap()
                .log_softmax(-1, Kind::Float);
            let got = s.logprobs.as_ref().unwrap();
            for (k, &t) in gen.iter().enumerate() {
                let want = lp.double_value(&[0, (p.len() + k - 1) as i64, t as i64]);
                assert!(
                    (want - got[k] as f64).abs() < 1e-4,
                    "step {k}: full {want} vs cached {}",
                    got[k]
                );
            }
        }
    }
}

#[test]
fn greedy_processed_logprobs_are_raw_when_no_processor_applies() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 128);
    let p = tiny::prompts();
    let raw = run(
        &model,
        &tok,
        SamplerOptions {
            logprobs: LogprobMode::Raw,
            ..opts()
        },
        &p,
        &[(1, 0); 3],
        &greedy(5),
    );
    let pro = run(
        &model,
        &tok,
        SamplerOptions {
            logprobs: LogprobMode::Processed,
            ..opts()
        },
        &p,
        &[(1, 0); 3],
        &greedy(5),
    );
    assert_eq!(raw, pro);
    let none = run(&model, &tok, opts(), &p, &[(1, 0); 3], &greedy(5));
    assert!(none[0][0].logprobs.is_none());
}

#[test]
fn max_new_tokens_ends_with_length() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 128);
    for max_new in [1, 7] {
        let out = run(
            &model,
            &tok,
            opts(),
            &tiny::prompts(),
            &[(2, 0), (1, 0), (3, 0)],
            &sampled(max_new),
        );
        for s in out.iter().flatten() {
            assert_eq!(s.completion.token_ids.len(), max_new);
            assert_eq!(s.completion.finish_reason, FinishReason::Length);
        }
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1, 3]);
    }
}

#[test]
fn eos_stops_a_sequence_and_is_kept_in_the_ids_only() {
    let (_d, tok) = tiny::tokenizer();
    let prompts = tiny::prompts();
    // Without EOS handling, find the third greedy token of prompt 0 and make it the EOS id.
    let free = run(
        &tiny::model(1, 128),
        &tok,
        opts(),
        &prompts,
        &[(1, 0); 3],
        &greedy(10),
    );
    let first = &free[0][0].completion.token_ids;
    let eos = first.iter().skip(2).copied().find(|&t| t != 1).unwrap();
    let stops = |t: u32| t == eos || t == 1;
    let cut = first.iter().position(|&t| stops(t)).unwrap();
    let model = tiny::model(eos, 128);
    let options = SamplerOptions::default();
    let mut sampler = Sampler::new(&model, &tok).with_options(options);
    assert!(sampler.eos_ids().contains(&eos) && sampler.eos_ids().contains(&1));
    let out = sampler
        .sample_ids(&prompts, &[(1, 0); 3], &greedy(10))
        .unwrap();
    let c = &out[0][0].completion;
    assert_eq!(c.finish_reason, FinishReason::Eos);
    assert_eq!(c.token_ids, first[..=cut].to_vec());
    assert!(
        cut >= 1,
        "the test wants a few tokens before EOS: {first:?}"
    );
    let text_ids: Vec<u32> = first[..cut].to_vec();
    assert_eq!(c.text, tok.decode(&text_ids, true).unwrap());
    // Rows that never emit it still run to the length limit, with the same tokens as before.
    for (i, s) in out.iter().enumerate().skip(1) {
        let free_ids = &free[i][0].completion.token_ids;
        match free_ids.iter().position(|&t| stops(t)) {
            Some(k) => assert_eq!(s[0].completion.token_ids, free_ids[..=k].to_vec()),
            None => assert_eq!(&s[0].completion.token_ids, free_ids),
        }
    }
}

#[test]
fn stop_strings_cut_the_text_before_them() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 128);
    let prompts = tiny::prompts();
    let free = run(&model, &tok, opts(), &prompts, &[(1, 5); 3], &sampled(16));
    let ids = &free[0][0].completion.token_ids;
    // The decoded text of tokens 4 and 5 ("x y") as the stop string.
    let stop = tok.decode(&ids[4..6], true).unwrap();
    let full = tok.decode(ids, true).unwrap();
    let at = full.find(&stop).unwrap();
    let params = SamplingParams {
        stop: vec![stop.clone()],
        ..sampled(16)
    };
    let out = run(&model, &tok, opts(), &prompts, &[(1, 5); 3], &params);
    let c = &out[0][0].completion;
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.text, full[..at]);
    assert!(!c.text.contains(&stop));
    assert!(c.token_ids.len() <= 6 && ids.starts_with(&c.token_ids));
    for (i, s) in out.iter().enumerate() {
        let t = &s[0].completion;
        if t.finish_reason == FinishReason::Stop {
            assert!(!t.text.contains(&stop));
        } else {
            assert_eq!(t.token_ids, free[i][0].completion.token_ids);
        }
    }
}

/// Rows finish at different steps (EOS), so the batch is compacted several times; every sequence
/// must still equal the one generated alone with the same seed.
#[test]
fn compaction_and_batching_do_not_change_results() {
    let (_d, tok) = tiny::tokenizer();
    let prompts = tiny::prompts();
    let reqs = [(3, 11), (2, 12), (3, 13)];
    // An EOS id that shows up in some rows: the most frequent token of a free run.
    let free = run(
        &tiny::model(1, 128),
        &tok,
        opts(),
        &prompts,
        &reqs,
        &sampled(20),
    );
    let mut counts = [0usize; tiny::VOCAB];
    free.iter().flatten().for_each(|s| {
        s.completion
            .token_ids
            .iter()
            .for_each(|&t| counts[t as usize] += 1)
    });
    let eos = (2..tiny::VOCAB).max_by_key(|&t| counts[t]).unwrap() as u32;
    let model = tiny::model(eos, 128);
    for params in [greedy(20), sampled(20)] {
        let batch = run(
            &model,
            &tok,
            SamplerOptions::default(),
            &prompts,
            &reqs,
            &params,
        );
        let lengths: std::collections::BTreeSet<usize> = batch
            .iter()
            .flatten()
            .map(|s| s.completion.token_ids.len())
            .collect();
        assert!(
            lengths.len() > 1,
            "rows should finish at different steps: {lengths:?}"
        );
        for (i, p) in prompts.iter().enumerate() {
            let alone = run(
                &model,
                &tok,
                SamplerOptions::default(),
                std::slice::from_ref(p),
                &reqs[i..=i],
                &params,
            );
            assert_eq!(ids(&alone)[0], ids(&batch)[i], "prompt {i}");
        }
        // Small sub-batches (max 2 rows) give the same sequences too.
        let small = SamplerOptions {
            max_batch_rows: 2,
            ..Default::default()
        };
        let split = run(&model, &tok, small, &prompts, &reqs, &params);
        assert_eq!(ids(&split), ids(&batch));
    }
}

#[test]
fn same_seed_same_samples_other_seed_other_samples() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 128);
    let p = tiny::prompts();
    let a = run(
        &model,
        &tok,
        opts(),
        &p,
        &[(4, 1), (4, 2), (4, 3)],
        &sampled(10),
    );
    let b = run(
        &model,
        &tok,
        opts(),
        &p,
        &[(4, 1), (4, 2), (4, 3)],
        &sampled(10),
    );
    let c = run(
        &model,
        &tok,
        opts(),
        &p,
        &[(4, 9), (4, 2), (4, 3)],
        &sampled(10),
    );
    assert_eq!(ids(&a), ids(&b));
    assert_ne!(ids(&a)[0], ids(&c)[0]);
    assert_eq!(ids(&a)[1..], ids(&c)[1..]);
    // The K samples of one prompt differ from each other.
    let s = &ids(&a)[0];
    assert!(s.iter().any(|x| x != &s[0]));
}

#[test]
fn repetition_penalty_changes_greedy_choices_deterministically() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 128);
    let p = tiny::prompts();
    let plain = run(&model, &tok, opts(), &p, &[(1, 0); 3], &greedy(16));
    let pen = SamplingParams {
        repetition_penalty: 5.0,
        ..greedy(16)
    };
    let a = run(&model, &tok, opts(), &p, &[(1, 0); 3], &pen);
    let b = run(&model, &tok, opts(), &p, &[(1, 0); 3], &pen);
    assert_eq!(ids(&a), ids(&b));
    assert_ne!(ids(&a), ids(&plain));
    // With a strong penalty a greedy sequence repeats far less.
    for s in a.iter().flatten() {
        let distinct: std::collections::BTreeSet<_> = s.completion.token_ids.iter().collect();
        assert!(distinct.len() >= 12, "{:?}", s.completion.token_ids);
    }
}

#[test]
fn prompts_longer_than_the_context_fail_or_are_truncated() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 16);
    let long: Vec<u32> = (0..20).map(|i| 2 + (i % 50)).collect();
    let prompts = vec![vec![3, 4], long.clone()];
    let err = Sampler::new(&model, &tok)
        .sample_ids(&prompts, &[(1, 0), (1, 0)], &greedy(4))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SampleError::PromptTooLong {
                prompt: 1,
                tokens: 20,
                context: 16
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("prompt 1"));
    let options = SamplerOptions {
        truncate_prompt: true,
        ..opts()
    };
    let out = run(
        &model,
        &tok,
        options,
        &prompts,
        &[(1, 0), (1, 0)],
        &greedy(4),
    );
    let c = &out[1][0].completion;
    assert_eq!(c.prompt_tokens, 15);
    // The context also caps generation: 15 prompt tokens + 1 new token fill 16 positions.
    assert_eq!(c.token_ids.len(), 1);
    assert_eq!(c.finish_reason, FinishReason::Length);
    // Truncation keeps the end of the prompt: same as giving the last 15 tokens directly.
    let direct = run(
        &model,
        &tok,
        opts(),
        &[long[5..].to_vec()],
        &[(1, 0)],
        &greedy(4),
    );
    assert_eq!(direct[0][0].completion.token_ids, c.token_ids);
}

#[test]
fn generator_trait_renders_chat_and_text_prompts() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 128);
    let mut sampler = Sampler::new(&model, &tok).with_options(opts());
    let reqs = vec![
        GenRequest {
            prompt: Prompt::user("a b c"),
            n: 2,
            seed: 1,
        },
        GenRequest {
            prompt: Prompt::Text("a b c Z".into()),
            n: 1,
            seed: 1,
        },
    ];
    // The template renders "a b c Z" (content, a space, the generation prompt "Z").
    assert_eq!(
        sampler.encode_prompt(&reqs[0].prompt).unwrap(),
        tok.encode("a b c Z", false).unwrap()
    );
    let out = sampler.generate(&reqs, &sampled(6)).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].len(), 2);
    assert_eq!(out[0][0].prompt_tokens, 4);
    // Same tokens and seed: sample 0 of both requests is the same sequence.
    assert_eq!(out[0][0].token_ids, out[1][0].token_ids);
    let bad = SamplingParams {
        top_p: 0.0,
        ..sampled(4)
    };
    assert!(sampler.generate(&reqs, &bad).is_err());
}

#[test]
fn progress_reports_every_step() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 128);
    let mut seen = Vec::new();
    {
        let mut sampler = Sampler::new(&model, &tok)
            .with_options(opts())
            .on_progress(|p| seen.push(*p));
        sampler
            .sample_ids(&tiny::prompts(), &[(1, 0), (2, 0), (1, 0)], &greedy(5))
            .unwrap();
    }
    assert_eq!(seen.len(), 5);
    let last = seen.last().unwrap();
    assert_eq!(
        (
            last.finished,
            last.total,
            last.generated_tokens,
            last.active_rows
        ),
        (4, 4, 20, 0)
    );
}

/// Issue 14: `max_new_tokens = 0` used to yield one token; it is refused, naming the parameter.
#[test]
fn zero_max_new_tokens_is_refused() {
    let (_d, tok) = tiny::tokenizer();
    let model = tiny::model(1, 128);
    let e = Sampler::new(&model, &tok)
        .sample_ids(&tiny::prompts(), &[(1, 0), (1, 0), (1, 0)], &greedy(0))
        .unwrap_err();
    assert!(
        matches!(
            e,
            SampleError::InvalidParam {
                name: "max_new_tokens",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_new_tokens = 0"), "{e}");
}

/// Issue 14: NaN logits used to make sampling pick the last token; generation stops with an
/// error naming the prompt, sample and step.
#[test]
fn nan_logits_stop_generation_with_an_error_naming_the_step() {
    let (_d, tok) = tiny::tokenizer();
    let mut model = tiny::model(1, 128);
    {
        let _g = tch::no_grad_guard();
        let mut vars = model.var_store_mut().variables();
        let norm = vars
            .iter_mut()
            .find(|(n, _)| n.ends_with("norm.weight") && !n.contains("layers"))
            .map(|(_, t)| t)
            .expect("final norm weight");
        let _ = norm.fill_(f64::NAN);
    }
    for params in [greedy(4), sampled(4)] {
        let e = Sampler::new(&model, &tok)
            .with_options(opts())
            .sample_ids(&tiny::prompts(), &[(1, 0), (2, 0), (1, 0)], &params)
            .unwrap_err();
        match &e {
            SampleError::NonFiniteLogits {
                what: "nan",
                step: 0,
                ..
            } => {}
            other => panic!("expected a nan-logits error, got {other:?}"),
        }
        assert!(e.to_string().contains("generation step 0"), "{e}");
    }
}
