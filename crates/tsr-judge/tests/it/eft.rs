//! EFT data: rendering, scores, duplicates, the held-out split, the evaluation guard and
//! verifier labelling.

use std::collections::HashSet;

use tsr_judge::eft::{
    assistant_turn, eft_score, heldout_prompts, label_with_verifier, read_eft_input,
    render_example, write_examples, SampledAnswer, VerifierLabels,
};
use tsr_judge::{
    build_eft, EftInput, EftOptions, EvalGuard, GsmProblem, JudgeError, JudgeTemplate,
};

fn input(id: &str, prompt: &str, response: &str, score: u8) -> EftInput {
    EftInput {
        id: id.into(),
        prompt: prompt.into(),
        response: response.into(),
        score,
        justification: None,
    }
}

#[test]
fn examples_are_the_template_filled_literally_and_a_score_line() {
    let t = JudgeTemplate::new("t", "Q: {instruction}\nA: {response}\nRate 0-5.").unwrap();
    let mut i = input("a", "What is {response}?", "It is {instruction}.", 4);
    let e = render_example(&t, &i);
    assert_eq!(e.messages.len(), 2);
    assert_eq!(e.messages[0].role, "user");
    assert_eq!(
        e.messages[0].content,
        "Q: What is {response}?\nA: It is {instruction}.\nRate 0-5."
    );
    assert_eq!(e.messages[1].role, "assistant");
    assert_eq!(e.messages[1].content, "Score: 4");
    i.justification = Some("  Correct and complete.\n".into());
    let e = render_example(&t, &i);
    assert_eq!(e.messages[1].content, "Correct and complete.\nScore: 4");
    assert_eq!(assistant_turn(Some("  "), 0), "Score: 0");

    // TRL's conversational format, nothing else on the line.
    let mut buf = Vec::new();
    write_examples(&mut buf, &[e]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"messages": [
            {"role": "user", "content": "Q: What is {response}?\nA: It is {instruction}.\nRate 0-5."},
            {"role": "assistant", "content": "Correct and complete.\nScore: 4"}
        ]})
    );

    // The paper's prompt and the short one are usable as is.
    let add = render_example(&JudgeTemplate::additive_5pt(), &i);
    assert!(add.messages[0]
        .content
        .contains("User: What is {response}?\n<response>It is {instruction}.</response>"));
    let short = render_example(&JudgeTemplate::short(), &i);
    assert!(short.messages[0]
        .content
        .starts_with("Question: What is {response}?\nAnswer: It is {instruction}.\n"));
}

#[test]
fn scores_are_integers_from_0_to_5() {
    use serde_json::json;
    assert_eq!(eft_score(&json!(0)), Ok(0));
    assert_eq!(eft_score(&json!(5)), Ok(5));
    assert_eq!(eft_score(&json!(4.0)), Ok(4));
    for bad in [json!(4.5), json!(6), json!(-1), json!("4"), json!(null)] {
        assert!(eft_score(&bad).is_err(), "{bad}");
    }
}

#[test]
fn input_files_are_validated_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.jsonl");
    std::fs::write(
        &p,
        "{\"prompt\": \"p\", \"response\": \"r\", \"score\": 3, \"justification\": \"ok\", \"extra\": 1}\n\n{\"id\": 7, \"prompt\": \"p\", \"response\": \"s\", \"score\": 1}\n",
    )
    .unwrap();
    let v = read_eft_input(&p).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].id, "line-1");
    assert_eq!(v[0].justification.as_deref(), Some("ok"));
    assert_eq!((v[1].id.as_str(), v[1].score), ("7", 1));

    for (text, want) in [
        (
            "{\"prompt\": \"p\", \"response\": \"r\"}\n",
            "missing field `score`",
        ),
        (
            "{\"prompt\": \"p\", \"response\": \"r\", \"score\": 2.5}\n",
            "integer from 0 to 5",
        ),
        (
            "{\"prompt\": \"p\", \"score\": 2}\n",
            "missing field `response`",
        ),
        (
            "{\"prompt\": \"p\", \"response\": \"r\", \"score\": 2, \"justification\": 3}\n",
            "justification",
        ),
    ] {
        std::fs::write(
            &p,
            format!("{{\"prompt\": \"x\", \"response\": \"y\", \"score\": 0}}\n{text}"),
        )
        .unwrap();
        let e = read_eft_input(&p).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains(want), "{e}");
    }
}

/// 20 prompts with 3 responses each.
fn many() -> Vec<EftInput> {
    let mut v = Vec::new();
    for q in 0..20 {
        for r in 0..3u8 {
            v.push(input(
                &format!("{q}-{r}"),
                &format!("question {q}"),
                &format!("answer {r} to {q}"),
                r + 1,
            ));
        }
    }
    v
}

#[test]
fn the_split_is_by_prompt_seeded_and_disjoint() {
    let t = JudgeTemplate::short();
    let inputs = many();
    let opts = EftOptions {
        holdout: 0.2,
        seed: 5,
    };
    let s = build_eft(&inputs, &t, &opts, None, "in").unwrap();
    assert_eq!(s.stats.inputs, 60);
    assert_eq!(s.stats.examples, 60);
    assert_eq!((s.stats.heldout_prompts, s.stats.train_prompts), (4, 16));
    assert_eq!((s.stats.heldout, s.stats.train), (12, 48));
    assert_eq!(s.stats.score_counts, [0, 20, 20, 20, 0, 0]);
    let train: HashSet<&str> = s.train_inputs.iter().map(|i| i.prompt.as_str()).collect();
    let held: HashSet<&str> = s.heldout_inputs.iter().map(|i| i.prompt.as_str()).collect();
    assert!(train.is_disjoint(&held));
    assert_eq!(train.len() + held.len(), 20);
    // Examples and their inputs line up.
    for (e, i) in s.heldout.iter().zip(&s.heldout_inputs) {
        assert_eq!(e, &render_example(&t, i));
    }

    // Same seed: same split, whatever the input order. Another seed: another split.
    let mut reversed = inputs.clone();
    reversed.reverse();
    let r = build_eft(&reversed, &t, &opts, None, "in").unwrap();
    let held_r: HashSet<&str> = r.heldout_inputs.iter().map(|i| i.prompt.as_str()).collect();
    assert_eq!(held, held_r);
    let other = build_eft(&inputs, &t, &EftOptions { seed: 6, ..opts }, None, "in").unwrap();
    let held_o: HashSet<&str> = other
        .heldout_inputs
        .iter()
        .map(|i| i.prompt.as_str())
        .collect();
    assert_ne!(held, held_o);

    // No hold-out, and never everything held out.
    let none = build_eft(
        &inputs,
        &t,
        &EftOptions {
            holdout: 0.0,
            seed: 1,
        },
        None,
        "in",
    )
    .unwrap();
    assert_eq!((none.stats.train, none.stats.heldout), (60, 0));
    assert_eq!(heldout_prompts(["a"], 0.9, 0).len(), 0);
    assert_eq!(heldout_prompts(["a", "b"], 0.9, 0).len(), 1);
    for bad in [1.0, -0.1, f64::NAN] {
        let e = build_eft(
            &inputs,
            &t,
            &EftOptions {
                holdout: bad,
                seed: 0,
            },
            None,
            "in",
        );
        assert!(matches!(
            e,
            Err(JudgeError::InvalidOption {
                name: "holdout",
                ..
            })
        ));
    }
}

#[test]
fn duplicates_are_dropped_and_contradictions_refused() {
    let t = JudgeTemplate::short();
    let mut v = vec![
        input("a", "p", "r", 4),
        input("b", "p", "r", 4),
        input("c", "p", "other", 1),
    ];
    let s = build_eft(&v, &t, &EftOptions::default(), None, "in").unwrap();
    assert_eq!(
        (s.stats.inputs, s.stats.duplicates_dropped, s.stats.examples),
        (3, 1, 2)
    );
    v.push(input("d", "p", "r", 2));
    let e = build_eft(&v, &t, &EftOptions::default(), None, "in").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("`a`") && msg.contains("`d`") && msg.contains("4 and 2"),
        "{msg}"
    );
}

#[test]
fn evaluation_prompts_are_refused() {
    let t = JudgeTemplate::short();
    let gsm = vec![GsmProblem {
        id: "gsm8k-0000".into(),
        question: "Benny has 2 boxes of 6 pens each. How many pens does he have?".into(),
        answer: "6 * 2 = 12\n#### 12".into(),
    }];
    let guard = EvalGuard::of_eval_sets(&[], &gsm);
    let mut v = many();
    assert!(build_eft(&v, &t, &EftOptions::default(), Some(&guard), "in").is_ok());
    v.push(input(
        "leak",
        "Solve: Benny has 2 boxes of 6 pens each.  How many pens does he have?",
        "12",
        5,
    ));
    let e = build_eft(&v, &t, &EftOptions::default(), Some(&guard), "train.jsonl").unwrap_err();
    match &e {
        JudgeError::EvalOverlap {
            count, first_index, ..
        } => assert_eq!((*count, *first_index), (1, 60)),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("GSM8K test problems"), "{e}");
}

#[test]
fn verifier_labels_correct_and_incorrect_answers() {
    let problems = vec![
        GsmProblem {
            id: "p1".into(),
            question: "2 + 3?".into(),
            answer: "2 + 3 = 5\n#### 5".into(),
        },
        GsmProblem {
            id: "p2".into(),
            question: "Cost of 3 pens at $1,000 each?".into(),
            answer: "#### 3,000".into(),
        },
    ];
    let answers = vec![
        SampledAnswer {
            problem_id: "p1".into(),
            sample: 0,
            response: "2 + 3 = 5. The answer is 5.".into(),
        },
        SampledAnswer {
            problem_id: "p1".into(),
            sample: 1,
            response: "It is 6.".into(),
        },
        SampledAnswer {
            problem_id: "p2".into(),
            sample: 0,
            response: "They cost $3,000 in all.".into(),
        },
        SampledAnswer {
            problem_id: "p2".into(),
            sample: 1,
            response: "No idea.".into(),
        },
    ];
    let (inputs, stats) =
        label_with_verifier(&problems, &answers, VerifierLabels::default()).unwrap();
    assert_eq!(
        inputs
            .iter()
            .map(|i| (i.id.as_str(), i.score))
            .collect::<Vec<_>>(),
        [("p1-s0", 5), ("p1-s1", 1), ("p2-s0", 5), ("p2-s1", 1)]
    );
    assert_eq!((stats.answers, stats.correct, stats.incorrect), (4, 2, 2));
    assert_eq!(inputs[2].prompt, "Cost of 3 pens at $1,000 each?");
    assert!(inputs.iter().all(|i| i.justification.is_none()));

    let four = VerifierLabels {
        correct: 4,
        incorrect: 0,
    };
    let (inputs, _) = label_with_verifier(&problems, &answers, four).unwrap();
    assert_eq!(
        inputs.iter().map(|i| i.score).collect::<Vec<_>>(),
        [4, 0, 4, 0]
    );
    // The labelled inputs build EFT examples like any others.
    let s = build_eft(
        &inputs,
        &JudgeTemplate::short(),
        &EftOptions {
            holdout: 0.5,
            seed: 0,
        },
        None,
        "v",
    )
    .unwrap();
    assert_eq!((s.stats.train_prompts, s.stats.heldout_prompts), (1, 1));

    let bad = VerifierLabels {
        correct: 1,
        incorrect: 1,
    };
    assert!(label_with_verifier(&problems, &answers, bad).is_err());
    let stray = [SampledAnswer {
        problem_id: "p9".into(),
        sample: 0,
        response: "1".into(),
    }];
    let e = label_with_verifier(&problems, &stray, VerifierLabels::default()).unwrap_err();
    assert!(e.to_string().contains("unknown problem `p9`"), "{e}");
}
