//! Logits processors on batched tensors `[N, V]`, with the semantics of transformers' processors.
//!
//! The order is the one of transformers' `GenerationMixin._get_logits_processor`: the repetition
//! penalty first (a "processor", applied in greedy mode too), then the sampling "warpers"
//! temperature, top-k, top-p and min-p (applied only when sampling). Every operation works on the
//! whole batch at once; nothing loops over rows on the host.
//!
//! Filtered tokens get `-inf`, like transformers' default `filter_value`.

use crate::error::{SampleError, TchContext};
use tch::{Kind, Tensor};
use tsr_judge::SamplingParams;

/// A validated chain of logits processors.
#[derive(Clone, Debug, PartialEq)]
pub struct Processors {
    /// CTRL repetition penalty (1 = off).
    pub repetition_penalty: f64,
    /// Temperature; 0 means greedy decoding (the warpers are then skipped).
    pub temperature: f64,
    /// Top-k (0 = off).
    pub top_k: usize,
    /// Top-p (1 = off).
    pub top_p: f64,
    /// Min-p (0 = off).
    pub min_p: f64,
}

impl Default for Processors {
    /// Plain sampling at temperature 1 with every filter off.
    fn default() -> Self {
        Self {
            repetition_penalty: 1.0,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

fn invalid(name: &'static str, value: f64, reason: &'static str) -> SampleError {
    SampleError::InvalidParam {
        name,
        value: value.to_string(),
        reason,
    }
}

impl Processors {
    /// Check the sampling parameters and keep the processor part of them.
    pub fn from_params(params: &SamplingParams) -> Result<Self, SampleError> {
        let p = Self {
            repetition_penalty: params.repetition_penalty,
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            min_p: params.min_p,
        };
        p.validate()?;
        Ok(p)
    }

    /// Range checks (the same ones transformers makes, plus finiteness).
    pub fn validate(&self) -> Result<(), SampleError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(invalid(
                "temperature",
                self.temperature,
                "must be finite and >= 0 (0 = greedy)",
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid("top_p", self.top_p, "must be in (0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(invalid("min_p", self.min_p, "must be in [0, 1]"));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(invalid(
                "repetition_penalty",
                self.repetition_penalty,
                "must be finite and > 0",
            ));
        }
        Ok(())
    }

    /// Greedy decoding (argmax of the processed logits) rather than sampling.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Whether the repetition penalty needs the per-row "seen tokens" mask.
    pub fn uses_seen_mask(&self) -> bool {
        self.repetition_penalty != 1.0
    }

    /// Apply the chain to float logits `[N, V]`. `seen` is a bool mask `[N, V]` of the tokens
    /// already in each sequence (prompt and generated); it is only read when the repetition
    /// penalty is on. In greedy mode only the repetition penalty applies, as in transformers.
    pub fn apply(&self, logits: &Tensor, seen: Option<&Tensor>) -> Result<Tensor, SampleError> {
        let mut x = logits
            .f_to_kind(Kind::Float)
            .during("casting logits to f32")?;
        if self.uses_seen_mask() {
            if let Some(seen) = seen {
                x = repetition_penalty(&x, seen, self.repetition_penalty)?;
            }
        }
        if self.is_greedy() {
            return Ok(x);
        }
        if self.temperature != 1.0 {
            x = temperature(&x, self.temperature)?;
        }
        if self.top_k != 0 {
            x = top_k(&x, self.top_k)?;
        }
        if self.top_p < 1.0 {
            x = top_p(&x, self.top_p)?;
        }
        if self.min_p > 0.0 {
            x = min_p(&x, self.min_p)?;
        }
        Ok(x)
    }
}

/// CTRL repetition penalty: for tokens marked in `seen`, divide positive logits by `penalty` and
/// multiply negative ones by it (transformers' `RepetitionPenaltyLogitsProcessor`).
pub fn repetition_penalty(
    logits: &Tensor,
    seen: &Tensor,
    penalty: f64,
) -> Result<Tensor, SampleError> {
    let during = "repetition penalty";
    let neg = logits.f_lt(0.0).during(during)?;
    let scaled_neg = logits.f_mul_scalar(penalty).during(during)?;
    let scaled_pos = logits.f_div_scalar(penalty).during(during)?;
    let penalised = scaled_neg.f_where_self(&neg, &scaled_pos).during(during)?;
    penalised.f_where_self(seen, logits).during(during)
}

/// Divide by the temperature (`TemperatureLogitsWarper`).
pub fn temperature(logits: &Tensor, t: f64) -> Result<Tensor, SampleError> {
    logits.f_div_scalar(t).during("temperature")
}

/// Keep the `k` largest logits per row, ties with the k-th included (`TopKLogitsWarper`).
pub fn top_k(logits: &Tensor, k: usize) -> Result<Tensor, SampleError> {
    let during = "top-k";
    let v = logits.size().last().copied().unwrap_or(0);
    let k = (k as i64).min(v).max(1);
    let (values, _) = logits.f_topk(k, -1, true, true).during(during)?;
    let kth = values.f_narrow(-1, k - 1, 1).during(during)?;
    let remove = logits.f_lt_tensor(&kth).during(during)?;
    logits
        .f_masked_fill(&remove, f64::NEG_INFINITY)
        .during(during)
}

/// Nucleus filter (`TopPLogitsWarper`): sort ascending, drop the tokens whose cumulative
/// probability is `<= 1 - top_p`, always keeping the most likely one.
pub fn top_p(logits: &Tensor, p: f64) -> Result<Tensor, SampleError> {
    let during = "top-p";
    let (sorted, indices) = logits.f_sort(-1, false).during(during)?;
    let cum = sorted
        .f_softmax(-1, Kind::Float)
        .during(during)?
        .f_cumsum(-1, Kind::Float)
        .during(during)?;
    let remove_sorted = cum.f_le(1.0 - p).during(during)?;
    let v = remove_sorted.size().last().copied().unwrap_or(0);
    if v > 0 {
        let _ = remove_sorted
            .f_narrow(-1, v - 1, 1)
            .during(during)?
            .f_fill_(0)
            .during(during)?;
    }
    let remove = remove_sorted
        .f_scatter(-1, &indices, &remove_sorted)
        .during(during)?;
    logits
        .f_masked_fill(&remove, f64::NEG_INFINITY)
        .during(during)
}

/// Min-p filter (`MinPLogitsWarper`): drop tokens whose probability is below `min_p` times the
/// most likely token's, always keeping the most likely one.
pub fn min_p(logits: &Tensor, min_p: f64) -> Result<Tensor, SampleError> {
    let during = "min-p";
    let probs = logits.f_softmax(-1, Kind::Float).during(during)?;
    let top = probs.f_amax([-1].as_slice(), true).during(during)?;
    let threshold = top.f_mul_scalar(min_p).during(during)?;
    let remove = probs.f_lt_tensor(&threshold).during(during)?;
    let (_, best) = probs.f_topk(1, -1, true, true).during(during)?;
    let remove = remove.f_scatter_value(-1, &best, 0).during(during)?;
    logits
        .f_masked_fill(&remove, f64::NEG_INFINITY)
        .during(during)
}

/// A bool mask `[N, V]` with `true` at every token id in each row's list.
pub fn seen_mask(rows: &[&[u32]], vocab: i64, device: tch::Device) -> Result<Tensor, SampleError> {
    let during = "building the seen-token mask";
    let n = rows.len() as i64;
    let mut flat = Vec::new();
    for (r, ids) in rows.iter().enumerate() {
        for &id in ids.iter() {
            if (id as i64) < vocab {
                flat.push(r as i64 * vocab + id as i64);
            }
        }
    }
    let mut mask = Tensor::f_zeros([n * vocab], (Kind::Bool, device)).during(during)?;
    if !flat.is_empty() {
        let idx = Tensor::from_slice(&flat)
            .f_to_device(device)
            .during(during)?;
        let _ = mask.f_index_fill_(0, &idx, 1).during(during)?;
    }
    mask.f_reshape([n, vocab]).during(during)
}

/// Mark one new token per row in a seen mask (`tokens` is i64 `[N]`).
pub fn mark_seen(seen: &mut Tensor, tokens: &Tensor) -> Result<(), SampleError> {
    let during = "updating the seen-token mask";
    let idx = tokens.f_unsqueeze(-1).during(during)?;
    let _ = seen.f_scatter_value_(-1, &idx, 1).during(during)?;
    Ok(())
}

/// The processed distribution of each row restricted to a candidate set: every token outside
/// `ids` is filtered out (`-inf`) in the full processed logits, and inside it `logits` holds the
/// same values as [`Processors::apply`] (up to float summation order in top-p's cumulative sum).
#[derive(Debug)]
pub struct Candidates {
    /// Token ids `[N, K]`, i64.
    pub ids: Tensor,
    /// Processed logits `[N, K]`, f32, `-inf` where filtered.
    pub logits: Tensor,
    /// `ids` is the whole vocabulary in order (no truncating filter was on).
    pub whole_vocab: bool,
}

impl Candidates {
    /// Scatter back to full processed logits `[N, V]` (for tests and inspection).
    pub fn to_dense(&self, vocab: i64) -> Result<Tensor, SampleError> {
        let during = "densifying candidates";
        let n = self.ids.size()[0];
        let full = Tensor::f_full(
            [n, vocab],
            f64::NEG_INFINITY,
            (Kind::Float, self.ids.device()),
        )
        .during(during)?;
        full.f_scatter(-1, &self.ids, &self.logits).during(during)
    }
}

/// First candidate-set size tried for top-p without top-k (doubled by 8 until it holds the mass).
const TOP_P_FIRST_K: i64 = 64;

impl Processors {
    /// The sampling chain without sorting the whole vocabulary: the same result as
    /// [`Processors::apply`] for sampling (not greedy), restricted to candidate sets.
    ///
    /// With top-k, the candidates are the `top_k + 8` best tokens, widened while the last of them
    /// is still tied with the k-th (transformers keeps every token tied with it). With top-p alone, the
    /// `K` best tokens for the smallest `K` in 64, 512, 4096, ... whose probability mass reaches
    /// `top_p` in every row: all other tokens are provably removed by top-p, since their
    /// cumulative mass from below is at most `1 - top_p`. Without top-k and top-p the candidates
    /// are the whole vocabulary.
    pub fn apply_candidates(
        &self,
        logits: &Tensor,
        seen: Option<&Tensor>,
    ) -> Result<Candidates, SampleError> {
        let during = "processing logits";
        let mut x = logits.f_to_kind(Kind::Float).during(during)?;
        if self.uses_seen_mask() {
            if let Some(seen) = seen {
                x = repetition_penalty(&x, seen, self.repetition_penalty)?;
            }
        }
        if self.temperature != 1.0 && !self.is_greedy() {
            x = temperature(&x, self.temperature)?;
        }
        let size = x.size();
        let (n, v) = (size[0], size[1]);
        if self.top_k == 0 && self.top_p >= 1.0 {
            let x = if self.min_p > 0.0 {
                min_p(&x, self.min_p)?
            } else {
                x
            };
            let ids = Tensor::f_arange(v, (Kind::Int64, x.device()))
                .during(during)?
                .f_expand([n, v], false)
                .during(during)?;
            return Ok(Candidates {
                ids,
                logits: x,
                whole_vocab: true,
            });
        }
        let top_k = (self.top_k as i64).min(v);
        let mut k = if top_k > 0 {
            (top_k + 8).min(v)
        } else {
            TOP_P_FIRST_K.min(v)
        };
        // Normaliser of the full distribution (top-p without top-k needs the mass outside).
        let logz_full = if top_k == 0 {
            Some(x.f_logsumexp([-1].as_slice(), true).during(during)?)
        } else {
            None
        };
        loop {
            let (vals, ids) = x.f_topk(k, -1, true, true).during(during)?;
            let mut c = vals;
            if top_k > 0 {
                let kth = c.f_narrow(-1, top_k - 1, 1).during(during)?;
                if k < v {
                    // Tokens tied with the k-th may continue past the candidates: widen.
                    let last = c.f_narrow(-1, k - 1, 1).during(during)?;
                    let tied = last
                        .f_ge_tensor(&kth)
                        .during(during)?
                        .f_any()
                        .during(during)?;
                    if tied.f_int64_value(&[]).during(during)? != 0 {
                        k = (k * 8).min(v);
                        continue;
                    }
                }
                let remove = c.f_lt_tensor(&kth).during(during)?;
                c = c.f_masked_fill(&remove, f64::NEG_INFINITY).during(during)?;
            }
            if self.top_p < 1.0 {
                let logz = match &logz_full {
                    Some(z) => z.shallow_clone(),
                    None => c.f_logsumexp([-1].as_slice(), true).during(during)?,
                };
                let probs = c.f_sub(&logz).during(during)?.f_exp().during(during)?;
                let head = probs
                    .f_sum_dim_intlist([-1].as_slice(), true, Kind::Float)
                    .during(during)?;
                if top_k == 0 && k < v {
                    let least = head
                        .f_min()
                        .during(during)?
                        .f_double_value(&[])
                        .during(during)?;
                    if least < self.top_p + 1e-5 {
                        k = (k * 8).min(v);
                        continue;
                    }
                }
                // Mass of the tokens outside the candidates (all removed), then the ascending
                // cumulative sum over the candidates, as TopPLogitsWarper computes it.
                let base = if top_k == 0 && k < v {
                    head.f_neg()
                        .during(during)?
                        .f_add_scalar(1.0)
                        .during(during)?
                        .f_clamp_min(0.0)
                        .during(during)?
                } else {
                    Tensor::f_zeros([n, 1], (Kind::Float, x.device())).during(during)?
                };
                let asc = probs
                    .f_flip([-1].as_slice())
                    .during(during)?
                    .f_cumsum(-1, Kind::Float)
                    .during(during)?
                    .f_add(&base)
                    .during(during)?;
                let remove_asc = asc.f_le(1.0 - self.top_p).during(during)?;
                let _ = remove_asc
                    .f_narrow(-1, k - 1, 1)
                    .during(during)?
                    .f_fill_(0)
                    .during(during)?;
                let remove = remove_asc.f_flip([-1].as_slice()).during(during)?;
                c = c.f_masked_fill(&remove, f64::NEG_INFINITY).during(during)?;
            }
            if self.min_p > 0.0 {
                c = min_p(&c, self.min_p)?;
            }
            return Ok(Candidates {
                ids,
                logits: c,
                whole_vocab: false,
            });
        }
    }
}
