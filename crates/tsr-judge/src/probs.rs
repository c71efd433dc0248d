//! Scores from the judge's next-token distribution at the score position.
//!
//! Instead of sampling a verdict and parsing `Score: k`, the judge is brought to the point where
//! the score digit comes next (its answer prefilled with `Score: `) and the probabilities of the
//! digit tokens `0`..`5` are read off one forward pass. The score is their expected value,
//! normalised over the digits: `E = Σ d·p(d) / Σ p(d)`. `digit_mass = Σ p(d)` says how much of
//! the distribution fell on a valid score at all; a low mass means the judge wanted to write
//! something else, and such a verdict counts as unparsed.
//!
//! A digit can have several token ids: a plain `4`, a leading-space ` 4`, SentencePiece's `▁4`,
//! a byte-fallback piece `<0x34>`. [`digit_of`] maps each token text to its digit, and
//! [`DigitDistribution::from_top`] sums the probability of every token of the same digit.

use serde::{Deserialize, Serialize};

use crate::generate::TokenLogprob;
use crate::parse::MAX_SCORE;

/// The number of valid score digits (`0..=5`).
pub const DIGITS: usize = MAX_SCORE as usize + 1;

/// The score digit a token stands for, if any: the token text without surrounding whitespace
/// and word-start markers (`▁` of SentencePiece, `Ġ` of byte-level BPE pieces) must be a single
/// digit `0`..`5`, or a byte-fallback piece `<0x30>`..`<0x35>`.
pub fn digit_of(token: &str) -> Option<usize> {
    let t = token.trim_matches(|c: char| c.is_whitespace() || c == '\u{2581}' || c == '\u{120}');
    let byte = match t.strip_prefix("<0x").and_then(|r| r.strip_suffix('>')) {
        Some(hex) => u8::from_str_radix(hex, 16).ok()?,
        None => {
            let mut chars = t.chars();
            let c = chars.next()?;
            if chars.next().is_some() || !c.is_ascii() {
                return None;
            }
            c as u8
        }
    };
    let d = byte.checked_sub(b'0')? as usize;
    (d < DIGITS).then_some(d)
}

/// The probabilities of the score digits at one position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DigitDistribution {
    /// `probs[d]`: the probability of digit `d`, summed over its token ids (not normalised).
    pub probs: [f64; DIGITS],
    /// `Σ probs`: the share of the next-token distribution on a valid score.
    pub mass: f64,
}

impl DigitDistribution {
    /// Sums the probabilities of the digit tokens among `top` (other tokens are ignored).
    /// Digits missing from a top-k list count as 0; their true probability is at most the k-th
    /// entry's.
    pub fn from_top(top: &[TokenLogprob]) -> Self {
        let mut probs = [0.0; DIGITS];
        for t in top {
            if let Some(d) = digit_of(&t.token) {
                if t.logprob.is_finite() {
                    probs[d] += t.logprob.exp();
                }
            }
        }
        let mass = probs.iter().sum();
        Self { probs, mass }
    }

    /// The expected digit, normalised over the digits; `None` when no digit has any mass.
    pub fn expected(&self) -> Option<f64> {
        (self.mass > 0.0).then(|| {
            self.probs
                .iter()
                .enumerate()
                .map(|(d, p)| d as f64 * p)
                .sum::<f64>()
                / self.mass
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(token: &str, p: f64) -> TokenLogprob {
        TokenLogprob {
            token: token.into(),
            logprob: p.ln(),
            id: None,
        }
    }

    #[test]
    fn digit_tokens_in_every_spelling() {
        for (t, d) in [
            ("4", Some(4)),
            (" 4", Some(4)),
            ("\u{2581}4", Some(4)),
            ("\u{120}3", Some(3)),
            ("<0x35>", Some(5)),
            ("<0x30>", Some(0)),
            ("0", Some(0)),
            ("6", None),
            ("<0x36>", None),
            ("45", None),
            ("four", None),
            ("", None),
            (" ", None),
            ("４", None),
            ("<0xZZ>", None),
        ] {
            assert_eq!(digit_of(t), d, "{t:?}");
        }
    }

    #[test]
    fn ids_of_one_digit_are_summed() {
        // Byte-level BPE style and SentencePiece style spellings of the same digits.
        let top = [
            tok("4", 0.30),
            tok(" 4", 0.10),
            tok("<0x34>", 0.05),
            tok("\u{2581}2", 0.15),
            tok("2", 0.05),
            tok("Great", 0.20),
            tok("7", 0.10),
        ];
        let d = DigitDistribution::from_top(&top);
        assert!((d.probs[4] - 0.45).abs() < 1e-12);
        assert!((d.probs[2] - 0.20).abs() < 1e-12);
        assert!((d.mass - 0.65).abs() < 1e-12);
        // (4 * 0.45 + 2 * 0.20) / 0.65
        assert!((d.expected().unwrap() - 2.2 / 0.65).abs() < 1e-12);
    }

    #[test]
    fn no_digit_no_expectation() {
        let d = DigitDistribution::from_top(&[tok("The", 0.9), tok("9", 0.1)]);
        assert_eq!(d.mass, 0.0);
        assert_eq!(d.expected(), None);
        let d = DigitDistribution::from_top(&[TokenLogprob {
            token: "3".into(),
            logprob: f64::NEG_INFINITY,
            id: Some(3),
        }]);
        assert_eq!(d.expected(), None);
    }
}
