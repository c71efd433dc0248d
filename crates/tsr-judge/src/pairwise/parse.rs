//! Reading a pairwise verdict: the verdict tokens' probabilities (`direct` mode) and the last
//! `Winner: A|B|tie` line of a sampled answer.

use super::{PairwiseVerdict, Preference, PreferenceProbs};
use crate::generate::TokenLogprob;

/// The verdict a token spells: `A`, `B` or `tie` (case-insensitive for `tie`), ignoring
/// surrounding whitespace and word-start markers (`▁`, `Ġ`).
pub fn preference_of(token: &str) -> Option<Preference> {
    let t = token.trim_matches(|c: char| c.is_whitespace() || c == '\u{2581}' || c == '\u{120}');
    match t {
        "A" => Some(Preference::A),
        "B" => Some(Preference::B),
        _ if t.eq_ignore_ascii_case("tie") => Some(Preference::Tie),
        _ => None,
    }
}

/// Sums the probabilities of the verdict tokens among `top`.
pub fn preference_probs(top: &[TokenLogprob]) -> PreferenceProbs {
    let (mut a, mut b, mut tie) = (0.0, 0.0, 0.0);
    for t in top.iter().filter(|t| t.logprob.is_finite()) {
        match preference_of(&t.token) {
            Some(Preference::A) => a += t.logprob.exp(),
            Some(Preference::B) => b += t.logprob.exp(),
            Some(Preference::Tie) => tie += t.logprob.exp(),
            None => {}
        }
    }
    PreferenceProbs {
        a,
        b,
        tie,
        mass: a + b + tie,
    }
}

/// The most probable verdict, or none when the mass on verdicts is below `min_mass`.
pub(super) fn read_probs(id: &str, probs: PreferenceProbs, min_mass: f64) -> PairwiseVerdict {
    let preference = if probs.mass < min_mass || probs.mass <= 0.0 {
        None
    } else if probs.tie >= probs.a && probs.tie >= probs.b || probs.a == probs.b {
        Some(Preference::Tie)
    } else if probs.a > probs.b {
        Some(Preference::A)
    } else {
        Some(Preference::B)
    };
    PairwiseVerdict {
        id: id.to_string(),
        preference,
        text: None,
        failure: preference
            .is_none()
            .then(|| format!("verdict mass {:.3} below min_mass {min_mass}", probs.mass)),
        probs: Some(probs),
        prompt_tokens: 0,
        completion_tokens: 0,
    }
}

/// The last `Winner: A|B|tie` statement of a sampled verdict (markdown emphasis and brackets
/// around the value tolerated).
pub fn parse_winner(text: &str) -> Option<Preference> {
    let lower = text.to_ascii_lowercase();
    let mut found = None;
    let mut from = 0;
    while let Some(i) = lower[from..].find("winner") {
        let start = from + i + "winner".len();
        from = start;
        let rest = text[start..].trim_start_matches(['*', '_', ' ']);
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let value: String = rest
            .trim_start_matches(|c: char| c.is_whitespace() || "*_[(\"'".contains(c))
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let p = match value.as_str() {
            "A" => Some(Preference::A),
            "B" => Some(Preference::B),
            v if v.eq_ignore_ascii_case("tie") => Some(Preference::Tie),
            _ => None,
        };
        if p.is_some() {
            found = p;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_winner_line() {
        assert_eq!(parse_winner("Winner: A"), Some(Preference::A));
        assert_eq!(parse_winner("**Winner:** [[B]]"), Some(Preference::B));
        assert_eq!(parse_winner("winner: Tie."), Some(Preference::Tie));
        assert_eq!(
            parse_winner("Winner: A\nOn reflection... Winner: B"),
            Some(Preference::B)
        );
        assert_eq!(parse_winner("Winner: Answer"), None);
        assert_eq!(parse_winner("The winner is clear"), None);
        assert_eq!(parse_winner(""), None);
    }

    #[test]
    fn verdict_tokens_are_summed_over_spellings() {
        let lp = |token: &str, p: f64| TokenLogprob {
            token: token.into(),
            logprob: p.ln(),
            id: None,
        };
        let probs = preference_probs(&[
            lp(" A", 0.3),
            lp("A", 0.1),
            lp("\u{2581}B", 0.35),
            lp(" tie", 0.05),
            lp(" The", 0.2),
        ]);
        assert!((probs.a - 0.4).abs() < 1e-12);
        assert!((probs.b - 0.35).abs() < 1e-12);
        assert!((probs.mass - 0.8).abs() < 1e-12);
        assert_eq!(read_probs("x", probs, 0.1).preference, Some(Preference::A));
        let low = preference_probs(&[lp(" A", 0.05), lp(" The", 0.9)]);
        let v = read_probs("x", low, 0.1);
        assert_eq!(v.preference, None);
        assert!(v.failure.unwrap().contains("below min_mass"));
    }
}
