//! Reference log-probs (computed once, cached on disk) and the representation-gap diagnostic.
//!
//! DPO compares the policy with a frozen reference. tsr never keeps a second model in memory:
//! the reference log-probs of every pair are computed **once**, before the first step, with the
//! reference model — in an iteration that is the starting model itself, so the policy is used,
//! in eval mode (no dropout) and without gradients — and stored in a small JSON file keyed by a
//! SHA-256 of the model's parameters and of the tokenized data ([`cached_reference_logps`]).
//! This is TRL's `precompute_ref_log_probs=True`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};
use tsr_model::Model;

use crate::data::{collate, TokenizedPair};
use crate::error::{DpoError, Result};
use crate::logprobs::{ChunkedLogProbs, ScoredPositions};

/// Per-pair reference log-probs, aligned with the tokenized pairs they were computed for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceLogps {
    /// Summed log-prob of each chosen completion.
    pub chosen: Vec<f64>,
    /// Summed log-prob of each rejected completion.
    pub rejected: Vec<f64>,
}

impl ReferenceLogps {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.chosen.len()
    }
    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.chosen.is_empty()
    }
}

/// Order that groups pairs of similar length (longest first), for inference passes.
fn length_order(pairs: &[TokenizedPair]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(pairs[i].max_len()));
    order
}

/// Computes the summed completion log-probs of every pair with `model` in eval mode, without
/// gradients, `batch_size` pairs per forward.
pub fn compute_reference_logps(
    model: &Model,
    pairs: &[TokenizedPair],
    pad_id: u32,
    batch_size: usize,
    logprobs: &ChunkedLogProbs,
) -> Result<ReferenceLogps> {
    let _guard = tch::no_grad_guard();
    let mut chosen = vec![0.0; pairs.len()];
    let mut rejected = vec![0.0; pairs.len()];
    let order = length_order(pairs);
    for sel in order.chunks(batch_size.max(1)) {
        let batch = collate(pairs, sel, pad_id, model.device())?;
        let hidden = model.hidden_states(&batch.input_ids, &batch.attention_mask, false)?;
        let pos = ScoredPositions::new(&batch.input_ids, &batch.completion_mask)?;
        let lp = logprobs.forward(&hidden, &model.lm_head_weight(), &pos)?;
        let lp: Vec<f64> =
            Vec::try_from(lp.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?)?;
        let b = sel.len();
        for (k, &i) in sel.iter().enumerate() {
            chosen[i] = lp[k];
            rejected[i] = lp[b + k];
        }
    }
    Ok(ReferenceLogps { chosen, rejected })
}

/// SHA-256 (hex) over the model's parameter names, shapes, kinds and values.
pub fn model_fingerprint(model: &Model) -> Result<String> {
    let _guard = tch::no_grad_guard();
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (name, t) in vars {
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.size(), t.kind()).as_bytes());
        let flat = t
            .f_to_kind(Kind::Float)?
            .f_to_device(tch::Device::Cpu)?
            .f_flatten(0, -1)?;
        let v: Vec<f32> = Vec::try_from(&flat)?;
        let mut bytes = Vec::with_capacity(v.len() * 4);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        h.update(&bytes);
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 (hex) over the tokenized pairs (ids and prompt boundaries).
pub fn data_fingerprint(pairs: &[TokenizedPair]) -> String {
    let mut h = Sha256::new();
    for p in pairs {
        for s in [&p.chosen, &p.rejected] {
            h.update((s.prompt_len as u64).to_le_bytes());
            h.update((s.ids.len() as u64).to_le_bytes());
            for id in &s.ids {
                h.update(id.to_le_bytes());
            }
        }
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    model: String,
    data: String,
    logps: ReferenceLogps,
}

/// Reference log-probs from `cache_dir` when a file for this model and data exists, otherwise
/// computed with [`compute_reference_logps`] and written there. Returns the values and the
/// cache file path.
pub fn cached_reference_logps(
    model: &Model,
    pairs: &[TokenizedPair],
    pad_id: u32,
    batch_size: usize,
    logprobs: &ChunkedLogProbs,
    cache_dir: &Path,
) -> Result<(ReferenceLogps, PathBuf)> {
    let model_key = model_fingerprint(model)?;
    let data_key = data_fingerprint(pairs);
    let path = cache_dir.join(format!(
        "ref-logps-{}-{}.json",
        &model_key[..16],
        &data_key[..16]
    ));
    if let Ok(text) = std::fs::read_to_string(&path) {
        let cached: CacheFile =
            serde_json::from_str(&text).map_err(|e| DpoError::json(&path, e))?;
        if cached.model == model_key && cached.data == data_key && cached.logps.len() == pairs.len()
        {
            tracing::info!(path = %path.display(), "reference log-probs from cache");
            return Ok((cached.logps, path));
        }
    }
    tracing::info!(pairs = pairs.len(), "computing reference log-probs");
    let logps = compute_reference_logps(model, pairs, pad_id, batch_size, logprobs)?;
    std::fs::create_dir_all(cache_dir).map_err(|e| DpoError::io(cache_dir, e))?;
    let file = CacheFile {
        model: model_key,
        data: data_key,
        logps,
    };
    let text = serde_json::to_string(&file).map_err(|e| DpoError::json(&path, e))?;
    tsr_io::write(&path, text).map_err(|e| DpoError::io(&path, e))?;
    Ok((file.logps, path))
}

/// Representation-gap diagnostic: for each `(prompt_ids, completion_ids)`, the mean over the
/// completion tokens of the model's last-layer (final-norm) hidden states, as `[N, H]` f32 on
/// the CPU. Eval mode, no gradients; `batch_size` sequences per forward. A pair with an empty
/// completion gives a zero row.
///
/// Compare a pair's chosen and rejected rows with [`row_cosines`].
pub fn mean_completion_hidden(
    model: &Model,
    items: &[(Vec<u32>, Vec<u32>)],
    pad_id: u32,
    batch_size: usize,
) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let hidden_size = model.config().hidden_size as i64;
    let mut rows = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch_size.max(1)) {
        let t = chunk
            .iter()
            .map(|(p, c)| p.len() + c.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let n = chunk.len();
        let mut ids = vec![pad_id as i64; n * t];
        let mut attn = vec![0i64; n * t];
        let mut comp = vec![0f32; n * t];
        for (r, (p, c)) in chunk.iter().enumerate() {
            for (j, &id) in p.iter().chain(c).enumerate() {
                ids[r * t + j] = id as i64;
                attn[r * t + j] = 1;
                comp[r * t + j] = if j >= p.len() { 1.0 } else { 0.0 };
            }
        }
        let shape = [n as i64, t as i64];
        let dev = model.device();
        let ids = Tensor::from_slice(&ids)
            .f_reshape(shape)?
            .f_to_device(dev)?;
        let attn = Tensor::from_slice(&attn)
            .f_reshape(shape)?
            .f_to_device(dev)?;
        let comp = Tensor::from_slice(&comp)
            .f_reshape(shape)?
            .f_to_device(dev)?;
        let hidden = model
            .hidden_states(&ids, &attn, false)?
            .f_to_kind(Kind::Float)?;
        let summed = hidden.f_mul(&comp.f_unsqueeze(2)?)?.f_sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Float,
        )?;
        let count = comp
            .f_sum_dim_intlist([1i64].as_slice(), true, Kind::Float)?
            .f_clamp_min(1.0)?;
        rows.push(summed.f_div(&count)?.f_to_device(tch::Device::Cpu)?);
    }
    if rows.is_empty() {
        return Ok(Tensor::f_zeros(
            [0, hidden_size],
            (Kind::Float, tch::Device::Cpu),
        )?);
    }
    Ok(Tensor::f_cat(&rows, 0)?)
}

/// Cosine similarity of matching rows of two `[N, H]` tensors (0 where a row is all zeros).
pub fn row_cosines(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    if a.size() != b.size() || a.size().len() != 2 {
        return Err(DpoError::Shape(format!(
            "row_cosines needs two [N, H] tensors, got {:?} and {:?}",
            a.size(),
            b.size()
        )));
    }
    let a = a.f_to_kind(Kind::Double)?;
    let b = b.f_to_kind(Kind::Double)?;
    let dot = a
        .f_mul(&b)?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?;
    let na = a
        .f_square()?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?
        .f_sqrt()?;
    let nb = b
        .f_square()?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?
        .f_sqrt()?;
    let cos = dot.f_div(&na.f_mul(&nb)?.f_clamp_min(1e-300)?)?;
    Ok(Vec::try_from(cos)?)
}

#[cfg(test)]
mod tests {
    /// The cache is JSON; a resumed training reads its reference log-probs back from it and must
    /// see the very values a straight run computed, or its rewards differ in the last bits. Without
    /// serde_json's `float_roundtrip` feature (set in the workspace manifest) about 9% of such
    /// doubles come back one ulp off; this one among them.
    #[test]
    fn cached_values_read_back_bit_for_bit() {
        let values = [
            -39.430133835633676f64,
            -0.001841652393341062,
            -1e-300,
            -123.456789,
        ];
        for v in values {
            let text = serde_json::to_string(&vec![v]).unwrap();
            let back: Vec<f64> = serde_json::from_str(&text).unwrap();
            assert_eq!(back[0].to_bits(), v.to_bits(), "{text}");
        }
    }
}
