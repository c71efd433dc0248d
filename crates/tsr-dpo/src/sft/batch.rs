//! Training rows (one example each, or several packed) and their padded batches.
//!
//! # Packing
//! With packing, examples are placed into rows of at most `max_length` tokens by first-fit
//! decreasing (longest first, each into the first row with room; ties by input order), which
//! wastes little space and is deterministic. Unlike a plain concatenation, a packed row keeps its
//! examples apart: position ids restart at 0 for each example and attention is confined to the
//! example ([`tsr_model::Model::hidden_states_packed`]), so a packed example is trained exactly
//! as it would be alone (TRL's `packing=True` with its default best-fit-decreasing strategy and
//! position ids, up to the order in which rows are filled). The first token of each example is
//! never learned: it would be predicted from the previous example.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use crate::error::{DpoError, Result};
use crate::sft::data::TokenizedExample;

/// One training row: one example, or several packed side by side.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SftRow {
    /// Token ids of the row.
    pub ids: Vec<u32>,
    /// Learned positions (see [`TokenizedExample::labels`]).
    pub labels: Vec<bool>,
    /// Length of each example in the row, in order.
    pub segments: Vec<usize>,
    /// Input indices of the examples in the row, in order.
    pub examples: Vec<usize>,
}

impl SftRow {
    /// A row holding one example.
    pub fn single(ex: &TokenizedExample) -> Self {
        SftRow {
            ids: ex.ids.clone(),
            labels: ex.labels.clone(),
            segments: vec![ex.ids.len()],
            examples: vec![ex.index],
        }
    }

    /// Number of learned tokens.
    pub fn learned(&self) -> usize {
        self.labels.iter().filter(|&&l| l).count()
    }
}

/// One row per example, or (with `pack_to = Some(max_length)`) examples packed into rows of at
/// most `max_length` tokens (see the [module docs](self)).
pub fn make_rows(examples: &[TokenizedExample], pack_to: Option<usize>) -> Vec<SftRow> {
    let Some(cap) = pack_to else {
        return examples.iter().map(SftRow::single).collect();
    };
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(examples[i].ids.len()));
    let mut rows: Vec<SftRow> = Vec::new();
    for i in order {
        let ex = &examples[i];
        let mut labels = ex.labels.clone();
        if let Some(first) = labels.first_mut() {
            *first = false;
        }
        match rows.iter_mut().find(|r| r.ids.len() + ex.ids.len() <= cap) {
            Some(r) => {
                r.ids.extend(&ex.ids);
                r.labels.extend(labels);
                r.segments.push(ex.ids.len());
                r.examples.push(ex.index);
            }
            None => rows.push(SftRow {
                ids: ex.ids.clone(),
                labels,
                segments: vec![ex.ids.len()],
                examples: vec![ex.index],
            }),
        }
    }
    rows
}

/// A hex SHA-256 of the rows (ids, labels, segments): the identity of the training data.
pub fn rows_fingerprint(rows: &[SftRow]) -> String {
    let mut h = Sha256::new();
    for r in rows {
        h.update((r.ids.len() as u64).to_le_bytes());
        for (id, l) in r.ids.iter().zip(&r.labels) {
            h.update(id.to_le_bytes());
            h.update([*l as u8]);
        }
        for s in &r.segments {
            h.update((*s as u64).to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A right-padded batch of rows.
#[derive(Debug)]
pub struct SftBatch {
    /// `[B, T]` i64.
    pub input_ids: Tensor,
    /// `[B, T]` i64, 1 = token.
    pub attention_mask: Tensor,
    /// `[B, T]` i64, position of each token within its example.
    pub positions: Tensor,
    /// `[B, T]` i64, 1-based example number within the row, 0 = padding.
    pub segment_ids: Tensor,
    /// `[B, T]` i64, 1 = learned token.
    pub label_mask: Tensor,
    /// Learned tokens in the batch.
    pub learned: usize,
    /// Non-padding tokens in the batch.
    pub real_tokens: usize,
}

/// Pads `rows[sel]` into an [`SftBatch`] on `device`.
pub fn collate_rows(
    rows: &[SftRow],
    sel: &[usize],
    pad_id: u32,
    device: Device,
) -> Result<SftBatch> {
    if sel.is_empty() {
        return Err(DpoError::Shape("empty batch".into()));
    }
    let t = sel
        .iter()
        .map(|&i| rows[i].ids.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let n = sel.len() * t;
    let mut ids = vec![pad_id as i64; n];
    let mut attn = vec![0i64; n];
    let mut pos = vec![0i64; n];
    let mut seg = vec![0i64; n];
    let mut lab = vec![0i64; n];
    let (mut learned, mut real) = (0, 0);
    for (r, &i) in sel.iter().enumerate() {
        let row = &rows[i];
        let mut j = r * t;
        for (s, &len) in row.segments.iter().enumerate() {
            for p in 0..len {
                pos[j + p] = p as i64;
                seg[j + p] = s as i64 + 1;
            }
            j += len;
        }
        for (k, (&id, &l)) in row.ids.iter().zip(&row.labels).enumerate() {
            ids[r * t + k] = id as i64;
            attn[r * t + k] = 1;
            lab[r * t + k] = l as i64;
        }
        learned += row.learned();
        real += row.ids.len();
    }
    let shape = [sel.len() as i64, t as i64];
    let put = |v: &[i64]| -> Result<Tensor> {
        Ok(Tensor::from_slice(v)
            .f_reshape(shape)?
            .f_to_device(device)?)
    };
    Ok(SftBatch {
        input_ids: put(&ids)?,
        attention_mask: put(&attn)?,
        positions: put(&pos)?,
        segment_ids: put(&seg)?,
        label_mask: put(&lab)?,
        learned,
        real_tokens: real,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(index: usize, len: usize, learn_from: usize) -> TokenizedExample {
        TokenizedExample {
            index,
            ids: (0..len as u32).map(|k| 10 * index as u32 + k).collect(),
            labels: (0..len).map(|k| k >= learn_from).collect(),
        }
    }

    #[test]
    fn packing_is_first_fit_decreasing_and_keeps_every_token() {
        let exs = vec![
            ex(0, 3, 1),
            ex(1, 6, 4),
            ex(2, 4, 2),
            ex(3, 2, 0),
            ex(4, 5, 3),
        ];
        let rows = make_rows(&exs, Some(8));
        // Longest first: 6 -> row 0; 5 -> row 1; 4 -> row 2; 3 -> row 1 (5+3); 2 -> row 0 (6+2).
        let got: Vec<Vec<usize>> = rows.iter().map(|r| r.examples.clone()).collect();
        assert_eq!(got, vec![vec![1, 3], vec![4, 0], vec![2]]);
        assert!(rows.iter().all(|r| r.ids.len() <= 8));
        assert_eq!(rows.iter().map(|r| r.ids.len()).sum::<usize>(), 20);
        // Example 3 (labels all true) lost its first label: it would be predicted across the seam.
        assert_eq!(rows[0].labels[6..], [false, true]);
        assert_eq!(rows[0].segments, vec![6, 2]);
        assert_eq!(make_rows(&exs, None).len(), 5);
        assert_ne!(
            rows_fingerprint(&rows),
            rows_fingerprint(&make_rows(&exs, None))
        );
    }

    #[test]
    fn collate_restarts_positions_per_example() {
        let rows = make_rows(&[ex(0, 3, 1), ex(1, 2, 1), ex(2, 4, 1)], Some(5));
        // rows: [2] (4 tokens), [0, 1] (3 + 2 tokens)
        let b = collate_rows(&rows, &[1, 0], 0, Device::Cpu).unwrap();
        assert_eq!(b.input_ids.size(), [2, 5]);
        let pos: Vec<i64> = Vec::try_from(b.positions.get(0)).unwrap();
        let seg: Vec<i64> = Vec::try_from(b.segment_ids.get(0)).unwrap();
        assert_eq!(pos, vec![0, 1, 2, 0, 1]);
        assert_eq!(seg, vec![1, 1, 1, 2, 2]);
        let seg: Vec<i64> = Vec::try_from(b.segment_ids.get(1)).unwrap();
        assert_eq!(seg, vec![1, 1, 1, 1, 0]);
        let lab: Vec<i64> = Vec::try_from(b.label_mask.get(0)).unwrap();
        assert_eq!(lab, vec![0, 1, 1, 0, 1]);
        assert_eq!(b.learned, 3 + 3);
        assert_eq!(b.real_tokens, 9);
    }
}
