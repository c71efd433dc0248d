//! Properties of the score parser over generated text.

use proptest::prelude::*;
use tsr_judge::{parse_score, ParseFailure};

/// Justification-like text: words, digits, punctuation and newlines, but no `score` word.
fn prose() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            "[a-zA-Z]{1,8}".prop_filter("not score", |w| !w.eq_ignore_ascii_case("score")),
            "[0-9]{1,3}",
            Just(" ".to_string()),
            Just(", ".to_string()),
            Just(".\n".to_string()),
            Just("(+1)".to_string()),
            Just("**".to_string()),
            Just(": ".to_string()),
        ],
        0..40,
    )
    .prop_map(|v| v.join(" "))
}

/// A valid score in [0, 5] with 0, 1 or 2 decimals, as the judge would write it.
fn valid_score() -> impl Strategy<Value = (f64, String)> {
    prop_oneof![
        (0u32..=5).prop_map(|n| (f64::from(n), n.to_string())),
        (0u32..=50).prop_map(|n| (f64::from(n) / 10.0, format!("{:.1}", f64::from(n) / 10.0))),
        (0u32..=500).prop_map(|n| (f64::from(n) / 100.0, format!("{:.2}", f64::from(n) / 100.0))),
    ]
}

/// The accepted ways of writing the final line, `{}` standing for the value.
const FORMS: &[&str] = &[
    "Score: {}",
    "score:{}",
    "**Score:** {}",
    "**Score: {}**",
    "Score: **{}**",
    "Score: {}/5",
    "Score: {} out of 5",
    "Score: {}.",
    "Total score: {} points",
    "SCORE - {}",
    "**Score:**\n{}",
];

proptest! {
    #[test]
    fn never_panics(text in any::<String>()) {
        let _ = parse_score(&text);
    }

    #[test]
    fn never_panics_near_statements(prefix in prose(), tail in "[-−–0-9./ ,*_<>a-z\n]{0,12}") {
        let _ = parse_score(&format!("{prefix}\nScore:{tail}"));
        let _ = parse_score(&format!("{prefix}\n**Score**: {tail}"));
    }

    #[test]
    fn prose_without_the_word_has_no_score(text in prose()) {
        prop_assert_eq!(parse_score(&text), Err(ParseFailure::NoScore));
    }

    #[test]
    fn the_final_line_is_read((value, written) in valid_score(), form in 0..FORMS.len(), before in prose()) {
        let verdict = format!("{before}\n\n{}", FORMS[form].replace("{}", &written));
        prop_assert_eq!(parse_score(&verdict), Ok(value), "{:?}", verdict);
    }

    #[test]
    fn the_last_statement_wins(first in 0u32..=5, last in 0u32..=5, between in prose()) {
        let verdict = format!("Score: {first}\n{between}\nScore: {last}");
        prop_assert_eq!(parse_score(&verdict), Ok(f64::from(last)));
    }

    #[test]
    fn out_of_range_integers_fail(n in 6u32..10_000, form in 0..FORMS.len()) {
        let verdict = FORMS[form].replace("{}", &n.to_string());
        prop_assert!(parse_score(&verdict).is_err(), "{:?}", verdict);
    }
}
