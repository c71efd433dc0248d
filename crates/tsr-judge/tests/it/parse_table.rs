//! The score parser against real-looking judge verdicts, including the failure modes of earlier
//! implementations (algorithm.md, "Known pitfalls"): a regex that never matches, verdicts cut
//! off before `Score:`, template echoes, out-of-range and ambiguous scores.

use tsr_judge::{mean_score, parse_score, ParseFailure};

enum Want {
    Score(f64),
    Fail(fn(&ParseFailure) -> bool),
}
use Want::{Fail, Score};

fn no_score(f: &ParseFailure) -> bool {
    *f == ParseFailure::NoScore
}
fn echo(f: &ParseFailure) -> bool {
    *f == ParseFailure::TemplateEcho
}
fn no_number(f: &ParseFailure) -> bool {
    *f == ParseFailure::NoNumber
}
fn out_of_range(f: &ParseFailure) -> bool {
    matches!(f, ParseFailure::OutOfRange { .. })
}
fn negative(f: &ParseFailure) -> bool {
    matches!(f, ParseFailure::Negative { .. })
}
fn wrong_scale(f: &ParseFailure) -> bool {
    matches!(f, ParseFailure::WrongScale { .. })
}
fn ambiguous(f: &ParseFailure) -> bool {
    matches!(f, ParseFailure::Ambiguous { .. })
}

const CASES: &[(&str, Want)] = &[
    // --- the format the prompt asks for ---
    ("The response is relevant and addresses the question directly, but it lacks depth on the second part.\n\nScore: 3", Score(3.0)),
    ("Justification: the answer is correct, well organised and written from an assistant's perspective.\nScore: 4", Score(4.0)),
    ("The response is off-topic.\nScore: 0", Score(0.0)),
    ("Impeccable, expert answer with no extraneous information.\n\nScore: 5", Score(5.0)),
    ("Score: 2", Score(2.0)),
    ("Relevant (+1), substantial (+1), answers the basics (+1). Score: 3.", Score(3.0)),
    ("score:4", Score(4.0)),
    ("SCORE: 1", Score(1.0)),
    ("Score:4\n", Score(4.0)),
    ("   Score:   5   ", Score(5.0)),
    // --- decimals (means of sub-scores, half points) ---
    ("Mostly complete but slightly verbose.\nScore: 3.5", Score(3.5)),
    ("Score: 4.0", Score(4.0)),
    ("Score: 2.75.", Score(2.75)),
    // --- markdown ---
    ("The response is helpful and well structured.\n\n**Score:** 4", Score(4.0)),
    ("**Score: 4**", Score(4.0)),
    ("Score: **4**", Score(4.0)),
    ("**Score**: 3", Score(3.0)),
    ("### Score: 2", Score(2.0)),
    ("*Score:* _5_", Score(5.0)),
    ("Score: `3`", Score(3.0)),
    ("Score: [4]", Score(4.0)),
    ("**Score:**\n4", Score(4.0)),
    // --- denominators and units ---
    ("Score: 4/5", Score(4.0)),
    ("**Score: 3 / 5**", Score(3.0)),
    ("Score: **4**/5", Score(4.0)),
    ("Score: 4 out of 5", Score(4.0)),
    ("Final Score: 4 points.", Score(4.0)),
    ("Total score: 5/5 - an excellent answer.", Score(5.0)),
    // --- other separators ---
    ("SCORE - 4", Score(4.0)),
    ("Score = 3", Score(3.0)),
    ("Score：4", Score(4.0)),
    // --- last statement wins ---
    ("Score: 2\nOn reflection the response does answer the question completely.\nScore: 4", Score(4.0)),
    ("Criterion 1 met (score: 1). Criterion 2 met (score: 2).\nTotal score: 2", Score(2.0)),
    ("Score: 4\n\nConclude with the score using the format: \"Score: <total points>\"", Score(4.0)),
    ("Score: 3 - the response is relevant but incomplete.", Score(3.0)),
    ("Score: 3.5 (between 3 and 4, leaning up)", Score(3.5)),
    ("Score: 4\n- Add 1 point for relevance\n- Add 1 point for coverage", Score(4.0)),
    // --- lists after `Score:` are not values ---
    ("Score:\n1. Relevance: yes\n2. Coverage: partly\n\nScore: 2", Score(2.0)),
    ("**Score:**\n- 1 point for relevance\n- 1 point for coverage\n**Score:** 2", Score(2.0)),
    ("**Score:**\n4.\n", Score(4.0)),
    ("**Score:**\n**3** points", Score(3.0)),
    // --- failures: no score statement (regex mismatch territory, truncation) ---
    ("The response is relevant and provides useful information. I would award it 4 points.", Fail(no_score)),
    ("The response addresses the user's question about photosynthesis, explaining the light reactions in detail and", Fail(no_score)),
    ("The answer is relevant (+1) and addresses most of the question (+1). Sco", Fail(no_score)),
    ("The response scores highly: 4", Fail(no_score)),
    ("Scored 4 out of 5.", Fail(no_score)),
    ("4/5", Fail(no_score)),
    ("", Fail(no_score)),
    ("Score -4", Fail(no_score)),
    // --- failures: statements without a number ---
    ("The response is good.\nScore:", Fail(no_number)),
    ("Score: four", Fail(no_number)),
    ("**Score:** The response earns most points.", Fail(no_number)),
    ("Score: X", Fail(no_number)),
    ("Score:\n1. Relevant to the question.\n2. Mostly complete.", Fail(no_number)),
    ("**Score:**\n- 1 point for relevance\n- 1 point for coverage", Fail(no_number)),
    // --- failures: template echo ---
    ("Conclude with the score using the format: \"Score: <total points>\"", Fail(echo)),
    ("Score: <total points>", Fail(echo)),
    ("**Score:** <total points>", Fail(echo)),
    // --- failures: out of range, negative, other scales ---
    ("Score: 6", Fail(out_of_range)),
    ("Score: 5.5", Fail(out_of_range)),
    ("Score: 45", Fail(out_of_range)),
    ("Score: 6/5", Fail(out_of_range)),
    ("Score: -1", Fail(negative)),
    ("Score: −2", Fail(negative)),
    ("Score: 10/10", Fail(wrong_scale)),
    ("Score: 8/10", Fail(wrong_scale)),
    ("Score: 7 out of 10", Fail(wrong_scale)),
    // --- failures: ambiguous ---
    ("Score: 3 or 4", Fail(ambiguous)),
    ("Score: 3-4", Fail(ambiguous)),
    ("Score: 3 - 4", Fail(ambiguous)),
    ("Score: 3 to 4", Fail(ambiguous)),
    ("Score: 3,5", Fail(ambiguous)),
    ("**Score: 3–4**", Fail(ambiguous)),
    // --- the last statement decides even when an earlier one was valid ---
    ("Score: 4\nWait, with the bonus: Score: 7", Fail(out_of_range)),
    ("Score: 4\nHmm. Score: 3 or 4", Fail(ambiguous)),
];

#[test]
fn table() {
    assert!(
        CASES.len() >= 40,
        "the table must stay at least 40 rows, has {}",
        CASES.len()
    );
    let mut bad = Vec::new();
    for (text, want) in CASES {
        let got = parse_score(text);
        let ok = match (want, &got) {
            (Score(w), Ok(g)) => w == g,
            (Fail(pred), Err(f)) => pred(f),
            _ => false,
        };
        if !ok {
            bad.push(format!("{text:?} -> {got:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} cases wrong:\n{}",
        bad.len(),
        CASES.len(),
        bad.join("\n")
    );
}

#[test]
fn failures_are_never_zero_and_the_mean_is_exact() {
    // Three samples of one item: two parse (3 and 4), one is cut off before `Score:`.
    let samples = [
        "Relevant and substantial.\nScore: 3",
        "Relevant, substantial and useful.\nScore: 4",
        "Relevant, substantial and useful, but",
    ];
    let scores: Vec<Option<f64>> = samples.iter().map(|s| parse_score(s).ok()).collect();
    assert_eq!(scores, [Some(3.0), Some(4.0), None]);
    // Not floored to 3, not pulled down by a stand-in 0 (which would give 2.33).
    assert_eq!(mean_score(&scores), Some(3.5));
}
