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
