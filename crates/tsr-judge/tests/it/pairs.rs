//! The judge-accuracy pair set: determinism, kinds, and what each kind's answers are.

use std::collections::HashSet;

use tsr_judge::pairs::{
    first_sixth, gsm8k_wrong_answer_pairs, read_pairs, relevance_pairs, strip_calculator,
    truncation_pairs, with_final_answer, write_pairs,
};
use tsr_judge::{
    build_pair_set, reference_number, AlpacaItem, GsmProblem, JudgePair, PairKind, PairSetOptions,
};

/// A stand-in for AlpacaEval: `n` instructions whose outputs have 5..=124 words (lengths from a
/// small LCG, so they vary without any pattern tied to the index).
pub fn alpaca(n: usize) -> Vec<AlpacaItem> {
    let mut x: u64 = 12345;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let words = 5 + (x >> 33) as usize % 120;
            AlpacaItem {
                instruction: format!("Instruction number {i}?"),
                output: (0..words)
                    .map(|w| format!("w{i}x{w}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                dataset: "test".into(),
            }
        })
        .collect()
}

/// A stand-in for the GSM8K problems: `n` problems with worked solutions and calculator
/// annotations.
pub fn gsm(n: usize) -> Vec<GsmProblem> {
    (0..n)
        .map(|i| GsmProblem {
            id: format!("gsm8k-{i:04}"),
            question: format!("Tom has {i} apples and buys 7 more. How many apples?"),
            answer: format!(
                "He has {i} + 7 = <<{i}+7={}>>{} apples.\n#### {}",
                i + 7,
                i + 7,
                i + 7
            ),
        })
        .collect()
}

#[test]
fn the_set_is_seeded_and_has_every_kind() {
    let (a, g) = (alpaca(200), gsm(60));
    let opts = PairSetOptions {
        per_kind: 40,
        ..PairSetOptions::default()
    };
    let pairs = build_pair_set(&a, &g, &opts);
    for kind in PairKind::ALL {
        assert_eq!(
            pairs.iter().filter(|p| p.kind == kind).count(),
            40,
            "{kind}"
        );
    }
    let ids: HashSet<&str> = pairs.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), pairs.len());
    assert_eq!(build_pair_set(&a, &g, &opts), pairs);
    let other = build_pair_set(&a, &g, &PairSetOptions { seed: 1, ..opts });
    assert_ne!(other, pairs);
    // Fewer eligible items than asked: all of them, no more.
    let few = build_pair_set(&alpaca(10), &gsm(3), &opts);
    assert_eq!(
        few.iter()
            .filter(|p| p.kind == PairKind::Gsm8kWrongAnswer)
            .count(),
        3
    );
    assert_eq!(
        few.iter().filter(|p| p.kind == PairKind::Relevance).count(),
        10
    );
}

#[test]
fn relevance_pairs_pit_an_answer_against_another_instructions() {
    let a = alpaca(50);
    let pairs = relevance_pairs(&a, 30, 0);
    assert_eq!(pairs.len(), 30);
    for p in &pairs {
        let own = a.iter().find(|x| x.instruction == p.prompt).unwrap();
        assert_eq!(p.better, own.output);
        assert_ne!(p.worse, own.output);
        assert!(a
            .iter()
            .any(|x| x.output == p.worse && x.instruction != p.prompt));
    }
    assert!(relevance_pairs(&a[..1], 5, 0).is_empty());
}

#[test]
fn truncation_pairs_keep_a_sixth() {
    let a = alpaca(80);
    let pairs = truncation_pairs(&a, 100, 3, 240);
    let eligible = a.iter().filter(|x| x.output.chars().count() >= 240).count();
    assert_eq!(pairs.len(), eligible);
    for p in &pairs {
        assert!(p.better.chars().count() >= 240);
        assert!(p.better.starts_with(&p.worse));
        assert!(p.worse.chars().count() <= p.better.chars().count() / 6);
        assert!(!p.worse.is_empty() && !p.worse.ends_with(' '));
    }
    assert_eq!(
        first_sixth("one two three four five six seven eight nine ten eleven twelve"),
        "one two"
    );
    assert_eq!(first_sixth("aaaa bbbb cccc dddd eeee ffff"), "aaaa");
    assert_eq!(first_sixth("ééééééééééééé"), "éé");
}

#[test]
fn wrong_answer_pairs_change_only_the_final_number() {
    let g = gsm(40);
    let pairs = gsm8k_wrong_answer_pairs(&g, 40, 9);
    assert_eq!(pairs.len(), 40);
    for p in &pairs {
        let problem = g.iter().find(|x| x.question == p.prompt).unwrap();
        let right = reference_number(&problem.answer).unwrap();
        assert_eq!(reference_number(&p.better), Some(right));
        let wrong = reference_number(&p.worse).unwrap();
        assert_ne!(wrong, right);
        assert!(wrong >= 0.0 && wrong.fract() == 0.0, "{wrong}");
        let head = |s: &str| s[..s.rfind("####").unwrap()].to_string();
        assert_eq!(head(&p.better), head(&p.worse));
        assert!(!p.better.contains("<<") && !p.worse.contains(">>"));
    }
    assert_eq!(strip_calculator("6*2 = <<6*2=12>>12 pens"), "6*2 = 12 pens");
    assert_eq!(strip_calculator("a << b"), "a << b");
    assert_eq!(
        with_final_answer("x\n#### 12", "13").as_deref(),
        Some("x\n#### 13")
    );
    assert_eq!(with_final_answer("12", "13"), None);
}

#[test]
fn pair_files_round_trip() {
    let pairs = build_pair_set(
        &alpaca(30),
        &gsm(5),
        &PairSetOptions {
            per_kind: 5,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    let mut buf = Vec::new();
    write_pairs(&mut buf, &pairs).unwrap();
    std::fs::write(&path, &buf).unwrap();
    assert_eq!(read_pairs(&path).unwrap(), pairs);
    let first: serde_json::Value =
        serde_json::from_slice(buf.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["kind"], "relevance");
    let last = String::from_utf8(buf.clone()).unwrap();
    assert!(last.contains("\"kind\":\"gsm8k-wrong-answer\""));

    let dup: Vec<JudgePair> = vec![pairs[0].clone(), pairs[0].clone()];
    let mut buf = Vec::new();
    write_pairs(&mut buf, &dup).unwrap();
    std::fs::write(&path, &buf).unwrap();
    let e = read_pairs(&path).unwrap_err().to_string();
    assert!(e.contains(":2:") && e.contains("duplicate pair id"), "{e}");
    std::fs::write(&path, "{\"id\": \"x\", \"kind\": \"nope\", \"prompt\": \"p\", \"better\": \"b\", \"worse\": \"w\"}\n").unwrap();
    assert!(read_pairs(&path).is_err());
    assert_eq!("truncation".parse::<PairKind>(), Ok(PairKind::Truncation));
    assert!("Truncation".parse::<PairKind>().is_err());
}
