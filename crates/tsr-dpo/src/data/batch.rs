//! Padded batches of tokenized pairs, and the seeded, length-bucketed order of an epoch.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use super::tokenize::{TokenizedPair, TokenizedSeq};
use crate::error::{DpoError, Result};
use crate::logprobs::ScoredPositions;

/// A padded batch of pairs: rows `0..B` are the chosen sequences, rows `B..2B` the rejected ones,
/// right-padded (TRL's collator layout).
#[derive(Debug)]
pub struct PairBatch {
    /// `[2B, T]` i64.
    pub input_ids: Tensor,
    /// `[2B, T]` i64, 1 = token.
    pub attention_mask: Tensor,
    /// `[2B, T]` i64, 1 = completion token.
    pub completion_mask: Tensor,
    /// Completion token counts `[2B]` i64.
    pub completion_tokens: Tensor,
    /// Positions of the pairs in the tokenized list the batch was built from.
    pub pairs: Vec<usize>,
    /// Number of non-padding tokens.
    pub real_tokens: usize,
}

/// Pads `pairs[sel]` into a [`PairBatch`] on `device`.
pub fn collate(
    pairs: &[TokenizedPair],
    sel: &[usize],
    pad_id: u32,
    device: Device,
) -> Result<PairBatch> {
    if sel.is_empty() {
        return Err(DpoError::Shape("empty batch".into()));
    }
    let seqs: Vec<&TokenizedSeq> = sel
        .iter()
        .map(|&i| &pairs[i].chosen)
        .chain(sel.iter().map(|&i| &pairs[i].rejected))
        .collect();
    let t = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(1).max(1);
    let rows = seqs.len();
    let mut ids = vec![pad_id as i64; rows * t];
    let mut attn = vec![0i64; rows * t];
    let mut comp = vec![0i64; rows * t];
    let mut counts = Vec::with_capacity(rows);
    let mut real = 0;
    for (r, s) in seqs.iter().enumerate() {
        for (j, &id) in s.ids.iter().enumerate() {
            ids[r * t + j] = id as i64;
            attn[r * t + j] = 1;
            comp[r * t + j] = (j >= s.prompt_len) as i64;
        }
        counts.push(s.completion_len() as i64);
        real += s.ids.len();
    }
    let shape = [rows as i64, t as i64];
    Ok(PairBatch {
        input_ids: Tensor::from_slice(&ids)
            .f_reshape(shape)?
            .f_to_device(device)?,
        attention_mask: Tensor::from_slice(&attn)
            .f_reshape(shape)?
            .f_to_device(device)?,
        completion_mask: Tensor::from_slice(&comp)
            .f_reshape(shape)?
            .f_to_device(device)?,
        completion_tokens: Tensor::from_slice(&counts)
            .f_to_device(device)?
            .f_to_kind(Kind::Int64)?,
        pairs: sel.to_vec(),
        real_tokens: real,
    })
}

/// A batch of pairs laid out with each pair's prompt computed once: one row per pair holding
/// the prompt (segment 1), the chosen completion (segment 2) and the rejected completion
/// (segment 3), right-padded; positions restart at the prompt's length in each completion, so
/// a forward with [`tsr_model::Model::hidden_states_branched`] gives each completion the hidden
/// states of prompt + completion run alone. Log-prob sums are per sequence: chosen `0..B`,
/// rejected `B..2B`, as in [`PairBatch`].
#[derive(Debug)]
pub struct BranchedBatch {
    /// `[B, T]` i64.
    pub input_ids: Tensor,
    /// `[B, T]` i64 position ids.
    pub positions: Tensor,
    /// `[B, T]` i64: 1 prompt, 2 chosen, 3 rejected, 0 padding.
    pub segment_ids: Tensor,
    /// The completion tokens and the hidden states that predict them.
    pub scored: ScoredPositions,
    /// Completion token counts `[2B]` i64 (chosen, then rejected).
    pub completion_tokens: Tensor,
    /// Positions of the pairs in the tokenized list the batch was built from.
    pub pairs: Vec<usize>,
    /// Tokens of the pairs' sequences as [`PairBatch`] counts them (each prompt twice), so that
    /// tokens per second compare across layouts; the forward runs each prompt once.
    pub real_tokens: usize,
}

/// Lays `pairs[sel]` out as a [`BranchedBatch`] on `device`, or `None` when a pair's chosen
/// and rejected sequences do not start with the same prompt ids, or a prompt is empty (then
/// [`collate`] is the layout).
pub fn collate_branched(
    pairs: &[TokenizedPair],
    sel: &[usize],
    pad_id: u32,
    device: Device,
) -> Result<Option<BranchedBatch>> {
    if sel.is_empty() {
        return Err(DpoError::Shape("empty batch".into()));
    }
    let shares = |p: &TokenizedPair| {
        let (c, r) = (&p.chosen, &p.rejected);
        c.prompt_len > 0
            && c.prompt_len == r.prompt_len
            && c.ids[..c.prompt_len] == r.ids[..r.prompt_len]
    };
    if !sel.iter().all(|&i| shares(&pairs[i])) {
        return Ok(None);
    }
    let row_len = |p: &TokenizedPair| p.chosen.ids.len() + p.rejected.completion_len();
    let t = sel.iter().map(|&i| row_len(&pairs[i])).max().unwrap_or(1);
    let b = sel.len();
    let mut ids = vec![pad_id as i64; b * t];
    let mut pos = vec![0i64; b * t];
    let mut seg = vec![0i64; b * t];
    let mut counts = vec![0i64; 2 * b];
    // (flat index of the predicting hidden state, target token, sequence)
    let mut scored = Vec::new();
    let mut real = 0;
    for (r, &i) in sel.iter().enumerate() {
        let (c, rj) = (&pairs[i].chosen, &pairs[i].rejected);
        let p = c.prompt_len;
        let base = r * t;
        let mut put = |j: usize, id: u32, position: usize, segment: i64| {
            ids[base + j] = id as i64;
            pos[base + j] = position as i64;
            seg[base + j] = segment;
        };
        for (j, &id) in c.ids.iter().enumerate() {
            put(j, id, j, if j < p { 1 } else { 2 });
        }
        let off = c.ids.len();
        for (k, &id) in rj.ids[p..].iter().enumerate() {
            put(off + k, id, p + k, 3);
        }
        for j in p..c.ids.len() {
            scored.push(((base + j - 1) as i64, c.ids[j] as i64, r as i64));
        }
        for k in 0..rj.completion_len() {
            // The first rejected token is predicted by the prompt's last token.
            let from = if k == 0 { p - 1 } else { off + k - 1 };
            scored.push(((base + from) as i64, rj.ids[p + k] as i64, (b + r) as i64));
        }
        counts[r] = c.completion_len() as i64;
        counts[b + r] = rj.completion_len() as i64;
        real += c.ids.len() + rj.ids.len();
    }
    let shape = [b as i64, t as i64];
    let tensor = |v: &[i64]| -> Result<Tensor> {
        Ok(Tensor::from_slice(v)
            .f_reshape(shape)?
            .f_to_device(device)?)
    };
    Ok(Some(BranchedBatch {
        input_ids: tensor(&ids)?,
        positions: tensor(&pos)?,
        segment_ids: tensor(&seg)?,
        scored: ScoredPositions::from_parts(b as i64, t as i64, 2 * b as i64, &scored, device)?,
        completion_tokens: Tensor::from_slice(&counts).f_to_device(device)?,
        pairs: sel.to_vec(),
        real_tokens: real,
    }))
}

/// The batches of one epoch, as lists of positions into the tokenized pairs.
///
/// Deterministic in `(seed, epoch)`: the pairs are shuffled, cut into windows of
/// `bucket_window × batch_size` pairs, each window sorted by length (so a batch holds pairs of
/// similar length and little padding), cut into batches, and the batch order shuffled again. A
/// window of 1 batch disables bucketing. The last batch may be smaller.
pub fn epoch_batches(
    pairs: &[TokenizedPair],
    batch_size: usize,
    bucket_window: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let lengths: Vec<usize> = pairs.iter().map(TokenizedPair::max_len).collect();
    epoch_batches_by_length(&lengths, batch_size, bucket_window, seed, epoch)
}

/// [`epoch_batches`] over items of the given `lengths` (the padding cost of each item).
pub fn epoch_batches_by_length(
    lengths: &[usize],
    batch_size: usize,
    bucket_window: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let window = (bucket_window.max(1) * batch_size).max(1);
    let mut batches = Vec::new();
    for w in order.chunks(window) {
        let mut w = w.to_vec();
        if bucket_window > 1 {
            w.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        }
        batches.extend(w.chunks(batch_size).map(<[usize]>::to_vec));
    }
    if bucket_window > 1 {
        batches.shuffle(&mut rng);
    }
    debug_assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), lengths.len());
    debug_assert_eq!(
        batches.iter().flatten().collect::<HashSet<_>>().len(),
        lengths.len()
    );
    batches
}
