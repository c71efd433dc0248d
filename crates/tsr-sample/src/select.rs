//! Token selection: greedy argmax, or inverse-CDF sampling driven by one seeded RNG per sequence.
//!
//! Sample `j` of a request with seed `s` draws from a ChaCha20 stream seeded with `s` on stream
//! `j` (`ChaCha20Rng::seed_from_u64(s)` then `set_stream(j)`). Each decoding step draws exactly one
//! uniform `u` in `[0, 1)` per sequence, and the token is the first vocabulary index whose
//! cumulative probability (in vocabulary order, accumulated in f64) exceeds `u` times the row's
//! total. A sequence's draws therefore depend only on its own `(seed, j)` and its own
//! distributions, not on which other sequences share the batch.
//!
//! The inverse CDF runs on tensors with the uniforms uploaded (one `[N]` upload per step); the
//! only host copy per step is the `[N]` chosen token ids (needed anyway for stop checks).

use crate::error::{SampleError, TchContext};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tch::{Kind, Tensor};

/// The RNG of one sequence.
#[derive(Clone, Debug)]
pub struct SequenceRng(ChaCha20Rng);

impl SequenceRng {
    /// The RNG of sample `sample` of a request seeded with `seed`.
    pub fn new(seed: u64, sample: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(sample);
        Self(rng)
    }

    /// The next uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.0.gen::<f64>()
    }
}

/// Greedy choice per row (first index of the maximum, like `torch.argmax`), i64 `[N]`.
pub fn argmax(processed: &Tensor) -> Result<Tensor, SampleError> {
    processed.f_argmax(-1, false).during("argmax")
}

/// Inverse-CDF sampling of one token per row from processed logits `[N, V]` given one uniform
/// per row. Returns i64 `[N]`. A token with probability 0 (filtered to `-inf`) is never chosen.
pub fn sample_inverse_cdf(processed: &Tensor, uniforms: &[f64]) -> Result<Tensor, SampleError> {
    let during = "inverse-CDF sampling";
    let device = processed.device();
    let probs = processed.f_softmax(-1, Kind::Float).during(during)?;
    let cum = probs.f_cumsum(-1, Kind::Double).during(during)?;
    let v = cum.size().last().copied().unwrap_or(0);
    let total = cum.f_narrow(-1, v - 1, 1).during(during)?;
    let u = Tensor::from_slice(uniforms)
        .f_to_device(device)
        .during(during)?
        .f_unsqueeze(-1)
        .during(during)?;
    // target = u * total, kept strictly below total so the result is a token of positive mass.
    let target = u.f_mul(&total).during(during)?;
    let cap = total.f_mul_scalar(1.0 - 1e-15).during(during)?;
    let target = target.f_minimum(&cap).during(during)?;
    let idx = target
        .f_searchsorted(&cum, false, true, "right", None::<Tensor>)
        .during(during)?;
    idx.f_clamp_max(v - 1)
        .during(during)?
        .f_squeeze_dim(-1)
        .during(during)
}

/// Log-probabilities `[N]` of the chosen tokens under the distribution given by `logits`.
pub fn token_logprobs(logits: &Tensor, tokens: &Tensor) -> Result<Tensor, SampleError> {
    let during = "token log-probabilities";
    let lp = logits.f_log_softmax(-1, Kind::Float).during(during)?;
    lp.f_gather(-1, &tokens.f_unsqueeze(-1).during(during)?, false)
        .during(during)?
        .f_squeeze_dim(-1)
        .during(during)
}

/// Inverse-CDF sampling over candidate sets, in vocabulary order (so the result is the one
/// [`sample_inverse_cdf`] gives on the dense processed logits). Returns the chosen token ids `[N]`
/// and their log-probabilities under the processed distribution `[N]`.
pub fn sample_candidates(
    c: &crate::processors::Candidates,
    uniforms: &[f64],
) -> Result<(Tensor, Tensor), SampleError> {
    let during = "sampling candidates";
    let (ids, logits) = if c.whole_vocab {
        (c.ids.shallow_clone(), c.logits.shallow_clone())
    } else {
        let (ids, perm) = c.ids.f_sort(-1, false).during(during)?;
        (ids, c.logits.f_gather(-1, &perm, false).during(during)?)
    };
    let pos = sample_inverse_cdf(&logits, uniforms)?;
    let pos = pos.f_unsqueeze(-1).during(during)?;
    let tokens = ids
        .f_gather(-1, &pos, false)
        .during(during)?
        .f_squeeze_dim(-1)
        .during(during)?;
    let lp = logits
        .f_log_softmax(-1, Kind::Float)
        .during(during)?
        .f_gather(-1, &pos, false)
        .during(during)?
        .f_squeeze_dim(-1)
        .during(during)?;
    Ok((tokens, lp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let mut a = SequenceRng::new(7, 0);
        let mut b = SequenceRng::new(7, 0);
        let mut c = SequenceRng::new(7, 1);
        let xa: Vec<f64> = (0..5).map(|_| a.uniform()).collect();
        let xb: Vec<f64> = (0..5).map(|_| b.uniform()).collect();
        let xc: Vec<f64> = (0..5).map(|_| c.uniform()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        assert!(xa.iter().all(|u| (0.0..1.0).contains(u)));
    }

    #[test]
    fn inverse_cdf_picks_the_interval_containing_u() {
        // probabilities 0.1, 0.0 (filtered), 0.6, 0.3
        let p = [0.1f32, 0.0, 0.6, 0.3];
        let logits: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        let t = Tensor::from_slice(&logits).reshape([1, 4]);
        let pick = |u: f64| sample_inverse_cdf(&t, &[u]).unwrap().int64_value(&[0]);
        assert_eq!(pick(0.0), 0);
        assert_eq!(pick(0.0999), 0);
        assert_eq!(pick(0.1001), 2);
        assert_eq!(pick(0.69), 2);
        assert_eq!(pick(0.71), 3);
        assert_eq!(pick(0.999_999_999), 3);
    }

    #[test]
    fn inverse_cdf_never_returns_a_filtered_token_at_the_end() {
        let logits = Tensor::from_slice(&[0.0f32, 1.0, f32::NEG_INFINITY, f32::NEG_INFINITY])
            .reshape([1, 4]);
        for u in [0.0, 0.5, 0.999_999_999_999_999_9] {
            let k = sample_inverse_cdf(&logits, &[u]).unwrap().int64_value(&[0]);
            assert!(k < 2, "u = {u} gave filtered token {k}");
        }
    }

    #[test]
    fn rows_are_sampled_independently() {
        let a = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0]);
        let b = Tensor::from_slice(&[3.0f32, 2.0, 1.0, 0.0]);
        let both = Tensor::stack(&[&a, &b], 0);
        let us = [0.3, 0.8];
        let together = Vec::<i64>::try_from(sample_inverse_cdf(&both, &us).unwrap()).unwrap();
        let alone_a = sample_inverse_cdf(&a.unsqueeze(0), &us[..1])
            .unwrap()
            .int64_value(&[0]);
        let alone_b = sample_inverse_cdf(&b.unsqueeze(0), &us[1..])
            .unwrap()
            .int64_value(&[0]);
        assert_eq!(together, vec![alone_a, alone_b]);
    }

    #[test]
    fn empirical_frequencies_follow_the_distribution() {
        let p = [0.5f32, 0.25, 0.125, 0.125];
        let logits: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        let t = Tensor::from_slice(&logits).reshape([1, 4]);
        let mut rng = SequenceRng::new(1, 0);
        let mut counts = [0usize; 4];
        let n = 4000;
        for _ in 0..n {
            let k = sample_inverse_cdf(&t, &[rng.uniform()])
                .unwrap()
                .int64_value(&[0]);
            counts[k as usize] += 1;
        }
        for (c, p) in counts.iter().zip(p) {
            let f = *c as f64 / n as f64;
            assert!((f - p as f64).abs() < 0.03, "{counts:?}");
        }
    }
}
