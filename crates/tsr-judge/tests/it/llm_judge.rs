//! `LlmJudge` over a scripted generator: batching, seeds, parsing, averaging, stats, errors.

use tsr_judge::{
    item_seed, FinishReason, Judge, JudgeConfig, JudgeError, JudgeItem, JudgeStats, LlmJudge,
    ParseFailure, Prompt, Verdict, ADDITIVE_5PT,
};

use crate::fake::{response_of, user_message, Scripted};

fn items(n: usize) -> Vec<JudgeItem> {
    (0..n)
        .map(|i| {
            JudgeItem::new(
                format!("p{i}-r0"),
                format!("question {i}"),
                format!("answer {i}"),
            )
        })
        .collect()
}

/// Sample j of a request says `Score: (seed + j) % 6` — a deterministic function of the seed.
fn seed_script() -> Scripted {
    Scripted::new(|r, j| {
        (
            format!("ok.\nScore: {}", (r.seed as usize + j) % 6),
            FinishReason::Eos,
        )
    })
}

#[test]
fn all_items_go_to_the_generator_in_one_call() {
    let mut judge =
        LlmJudge::from_config(Scripted::constant("Score: 4"), &JudgeConfig::default()).unwrap();
    let items = items(5);
    let verdicts = judge.judge(&items).unwrap();
    let calls = &judge.generator().calls;
    assert_eq!(calls.len(), 1, "one generate call for the whole batch");
    let (requests, params) = &calls[0];
    assert_eq!(requests.len(), 5);
    assert!(requests.iter().all(|r| r.n == 3));
    assert_eq!(
        (params.temperature, params.top_p, params.max_new_tokens),
        (0.7, 0.9, 256)
    );
    for ((r, item), v) in requests.iter().zip(&items).zip(&verdicts) {
        assert!(matches!(&r.prompt, Prompt::Chat(m) if m.len() == 1));
        let expected = ADDITIVE_5PT
            .replace("{instruction}", &item.prompt)
            .replace("{response}", &item.response);
        assert_eq!(user_message(r), expected);
        assert_eq!(v.judge_prompt.as_deref(), Some(expected.as_str()));
        assert_eq!(v.id, item.id);
        assert_eq!(v.score, Some(4.0));
        assert_eq!(v.samples.len(), 3);
    }
}

#[test]
fn batch_size_chunks_the_calls_and_keeps_order() {
    let config = JudgeConfig {
        batch_size: 2,
        ..JudgeConfig::default()
    };
    let script = Scripted::new(|r, _| {
        let n: usize = response_of(r)
            .trim_start_matches("answer ")
            .parse()
            .unwrap();
        (format!("Score: {}", n % 6), FinishReason::Eos)
    });
    let mut judge = LlmJudge::from_config(script, &config).unwrap();
    let verdicts = judge.judge(&items(5)).unwrap();
    let sizes: Vec<usize> = judge
        .generator()
        .calls
        .iter()
        .map(|(r, _)| r.len())
        .collect();
    assert_eq!(sizes, [2, 2, 1]);
    let scores: Vec<Option<f64>> = verdicts.iter().map(|v| v.score).collect();
    assert_eq!(
        scores,
        [Some(0.0), Some(1.0), Some(2.0), Some(3.0), Some(4.0)]
    );
}

#[test]
fn empty_batch_calls_nothing() {
    let mut judge =
        LlmJudge::from_config(Scripted::constant("Score: 4"), &JudgeConfig::default()).unwrap();
    assert!(judge.judge(&[]).unwrap().is_empty());
    assert!(judge.generator().calls.is_empty());
}

#[test]
fn seeds_depend_on_seed_and_id_only() {
    let config = JudgeConfig {
        seed: 1234,
        ..JudgeConfig::default()
    };
    let all = items(4);
    let mut a = LlmJudge::from_config(seed_script(), &config).unwrap();
    let va = a.judge(&all).unwrap();
    // The same items in another order and batch: same seeds, same verdicts.
    let mut b = LlmJudge::from_config(seed_script(), &config).unwrap();
    let subset = [all[3].clone(), all[1].clone()];
    let vb = b.judge(&subset).unwrap();
    assert_eq!(vb[0], va[3]);
    assert_eq!(vb[1], va[1]);
    let seeds_a: Vec<u64> = a.generator().calls[0].0.iter().map(|r| r.seed).collect();
    let expected: Vec<u64> = all.iter().map(|i| item_seed(1234, &i.id)).collect();
    assert_eq!(seeds_a, expected);
    assert_eq!(b.generator().calls[0].0[0].seed, seeds_a[3]);
    // Distinct ids get distinct seeds; another base seed changes them.
    let mut uniq = seeds_a.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(uniq.len(), 4);
    assert_ne!(item_seed(1235, &all[0].id), seeds_a[0]);
    // Same configuration again: identical verdicts.
    let mut c = LlmJudge::from_config(seed_script(), &config).unwrap();
    assert_eq!(c.judge(&all).unwrap(), va);
}

#[test]
fn unparseable_samples_are_kept_counted_and_left_out_of_the_mean() {
    let texts = [
        "Relevant.\nScore: 3",
        "I like it a lot.",
        "Useful.\n**Score:** 4",
    ];
    let script = Scripted::new(move |_, j| (texts[j].to_string(), FinishReason::Eos));
    let mut judge = LlmJudge::from_config(script, &JudgeConfig::default()).unwrap();
    let v = judge.judge(&items(1)).unwrap().remove(0);
    assert_eq!(
        v.samples
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>(),
        texts
    );
    assert_eq!(v.sample_scores(), [Some(3.0), None, Some(4.0)]);
    assert_eq!(v.samples[1].failure, Some(ParseFailure::NoScore));
    assert_eq!(v.samples[0].failure, None);
    assert_eq!(v.score, Some(3.5));
    assert_eq!(v.unparsed(), 1);
    let s = judge.stats();
    assert_eq!((s.samples, s.parsed_samples, s.unparsed_samples), (3, 2, 1));
    assert_eq!((s.scored_items, s.unscored_items), (1, 0));
}

#[test]
fn no_parsed_sample_means_no_score() {
    let mut judge = LlmJudge::from_config(
        Scripted::constant("Score: <total points>"),
        &JudgeConfig::default(),
    )
    .unwrap();
    let v = judge.judge(&items(2)).unwrap();
    assert!(v.iter().all(|v| v.score.is_none()));
    assert!(v[0]
        .samples
        .iter()
        .all(|s| s.failure == Some(ParseFailure::TemplateEcho)));
    assert_eq!(judge.stats().unscored_items, 2);
    assert_eq!(judge.stats().unparsed_samples, 6);
}

#[test]
fn length_finished_verdicts_are_counted() {
    // Sample 0 finished; sample 1 hit the limit after its score line; sample 2 was cut before it.
    let script = Scripted::new(|_, j| match j {
        0 => ("Good.\nScore: 4".into(), FinishReason::Eos),
        1 => (
            "Good.\nScore: 5\nAlso, the response".into(),
            FinishReason::Length,
        ),
        _ => (
            "The response is relevant and addresses".into(),
            FinishReason::Length,
        ),
    });
    let mut judge = LlmJudge::from_config(script, &JudgeConfig::default()).unwrap();
    let v = judge.judge(&items(3)).unwrap();
    assert_eq!(v[0].score, Some(4.5));
    assert!(v[0].samples[2].is_unfinished());
    let s = judge.stats();
    assert_eq!(s.unfinished_samples, 6);
    assert_eq!(s.unfinished_unparsed_samples, 3);
    assert_eq!(s.unparsed_samples, 3);
    assert_eq!(*s, JudgeStats::of(&v));
    // Stats accumulate over calls.
    judge.judge(&items(1)).unwrap();
    assert_eq!(judge.stats().items, 4);
    assert_eq!(judge.stats().unfinished_samples, 8);
}

#[test]
fn tokens_are_accounted() {
    let mut judge = LlmJudge::from_config(
        Scripted::constant("fine. Score: 4"),
        &JudgeConfig::default(),
    )
    .unwrap();
    let v = judge.judge(&items(2)).unwrap();
    assert!(v
        .iter()
        .flat_map(|v| &v.samples)
        .all(|s| s.completion_tokens == 3 && s.prompt_tokens > 100));
    assert_eq!(judge.stats().completion_tokens, 2 * 3 * 3);
}

#[test]
fn braces_in_the_response_are_not_substituted() {
    let item = JudgeItem::new(
        "x",
        "Explain {response}",
        "Use {instruction} in the template.",
    );
    let mut judge =
        LlmJudge::from_config(Scripted::constant("Score: 2"), &JudgeConfig::default()).unwrap();
    let v = judge.judge(std::slice::from_ref(&item)).unwrap();
    let p = v[0].judge_prompt.as_deref().unwrap();
    assert!(p.contains(
        "User: Explain {response}\n<response>Use {instruction} in the template.</response>"
    ));
    assert_eq!(p.matches("{instruction}").count(), 1);
    assert_eq!(p.matches("{response}").count(), 1);
}

#[test]
fn custom_template_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("judge.txt");
    std::fs::write(&path, "Q: {instruction}\nA: {response}\nScore 0-5.").unwrap();
    let config = JudgeConfig {
        template_path: Some(path.clone()),
        samples: 1,
        ..JudgeConfig::default()
    };
    let mut judge = LlmJudge::from_config(Scripted::constant("Score: 1"), &config).unwrap();
    let v = judge.judge(&items(1)).unwrap();
    assert_eq!(
        v[0].judge_prompt.as_deref(),
        Some("Q: question 0\nA: answer 0\nScore 0-5.")
    );
    std::fs::write(&path, "Q: {instruction}").unwrap();
    let e = LlmJudge::from_config(Scripted::constant(""), &config).unwrap_err();
    assert!(
        matches!(
            e,
            JudgeError::TemplatePlaceholder {
                placeholder: "{response}",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn generator_errors_are_reported() {
    let mut g = Scripted::constant("Score: 4");
    g.fail = true;
    let e = LlmJudge::from_config(g, &JudgeConfig::default())
        .unwrap()
        .judge(&items(2))
        .unwrap_err();
    assert!(matches!(e, JudgeError::Generator { requests: 2, .. }));
    // The generator's error is the source (printed by the chain), not part of the message.
    let printed = format!("{:#}", anyhow::Error::from(e));
    assert_eq!(
        printed,
        "judge generator failed on a batch of 2 request(s): out of memory (scripted)"
    );

    let mut g = Scripted::constant("Score: 4");
    g.drop_last_output = true;
    let e = LlmJudge::from_config(g, &JudgeConfig::default())
        .unwrap()
        .judge(&items(3))
        .unwrap_err();
    assert!(
        matches!(
            e,
            JudgeError::OutputCount {
                expected: 3,
                got: 2
            }
        ),
        "{e}"
    );

    let mut g = Scripted::constant("Score: 4");
    g.short_samples = true;
    let e = LlmJudge::from_config(g, &JudgeConfig::default())
        .unwrap()
        .judge(&items(1))
        .unwrap_err();
    assert!(
        matches!(
            e,
            JudgeError::SampleCount {
                expected: 3,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn verdicts_round_trip_through_json() {
    let texts = ["Score: 3", "Score: 3-4"];
    let script = Scripted::new(move |_, j| (texts[j].to_string(), FinishReason::Length));
    let config = JudgeConfig {
        samples: 2,
        ..JudgeConfig::default()
    };
    let v = LlmJudge::from_config(script, &config)
        .unwrap()
        .judge(&items(1))
        .unwrap();
    let json = serde_json::to_string(&v).unwrap();
    let back: Vec<Verdict> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, v);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value[0]["samples"][1]["failure"]["kind"], "ambiguous");
    assert_eq!(value[0]["samples"][1]["finish_reason"], "length");
    assert_eq!(value[0]["score"], 3.0);
}
