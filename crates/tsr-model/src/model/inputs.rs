//! Checked inputs of a forward pass: token ids, masks and position ids against the model's
//! vocabulary and context, and the attention masks all layers of one call share.

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::Model;
use crate::error::ModelError;

/// Attention masks shared by all layers of one forward call: `None` means "plain causal"
/// (no padding, no window), which lets SDPA take its `is_causal` fast path.
pub(super) struct Masks {
    full: Option<Tensor>,
    windowed: HashMap<usize, Tensor>,
}

impl Masks {
    pub(super) fn for_layer(&self, window: Option<usize>) -> Option<&Tensor> {
        match window {
            Some(w) if self.windowed.contains_key(&w) => self.windowed.get(&w),
            _ => self.full.as_ref(),
        }
    }
}

impl Model {
    /// Position ids and masks of a full-sequence forward over padded rows.
    pub(super) fn prepare_padded(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<(Tensor, Masks), ModelError> {
        let (b, t) = self.check_ids(input_ids)?;
        let mask = self.check_mask(attention_mask, b, t, "attention_mask")?;
        let positions = (mask.f_cumsum(-1, Kind::Int64)? - 1).clamp_min(0);
        self.check_context(&positions)?;
        let padded = t > 0 && mask.min().int64_value(&[]) == 0;
        let valid = mask.ne(0);
        let q_idx = Tensor::arange(t as i64, (Kind::Int64, self.device()));
        let masks = self.build_masks(&valid, &q_idx, t as i64, padded, None)?;
        Ok((positions, masks))
    }

    /// Position ids and masks of a full-sequence forward over packed rows. With `branched`,
    /// segment 1 of each row is a prefix the row's other segments continue: their tokens also
    /// attend to it.
    pub(super) fn prepare_packed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        segment_ids: &Tensor,
        branched: bool,
    ) -> Result<(Tensor, Masks), ModelError> {
        let (b, t) = self.check_ids(input_ids)?;
        let seg = self.check_mask(segment_ids, b, t, "segment_ids")?;
        let positions = self.check_mask(positions, b, t, "positions")?;
        self.check_context(&positions)?;
        if branched {
            if let Some(w) = self.min_sliding_window().filter(|&w| w < t) {
                // The windows are cut by index, and a branch's index distance to the prefix is
                // not its position distance.
                return Err(ModelError::input(format!(
                    "branched rows of {t} tokens with a {w}-token sliding attention window"
                )));
            }
        }
        let valid = seg.ne(0);
        let mut same = seg.unsqueeze(2).eq_tensor(&seg.unsqueeze(1)); // [B,Q,K]
        if branched {
            let prefix_key = seg.eq(1).unsqueeze(1); // [B,1,K]
            same = same.logical_or(&prefix_key.logical_and(&valid.unsqueeze(2)));
        }
        let same = same.unsqueeze(1); // [B,1,Q,K]
        let q_idx = Tensor::arange(t as i64, (Kind::Int64, self.device()));
        let masks = self.build_masks(&valid, &q_idx, t as i64, true, Some(&same))?;
        Ok((positions, masks))
    }

    pub(super) fn check_ids(&self, input_ids: &Tensor) -> Result<(usize, usize), ModelError> {
        let size = input_ids.size();
        if size.len() != 2 {
            return Err(ModelError::input(format!(
                "input_ids must be [batch, seq], got shape {size:?}"
            )));
        }
        if !matches!(
            input_ids.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        ) {
            return Err(ModelError::input(format!(
                "input_ids must be integers, got {:?}",
                input_ids.kind()
            )));
        }
        if input_ids.numel() > 0 {
            let (lo, hi) = (
                input_ids.min().int64_value(&[]),
                input_ids.max().int64_value(&[]),
            );
            if lo < 0 || hi >= self.config.vocab_size as i64 {
                return Err(ModelError::input(format!(
                    "token ids must lie in [0, {}), got range [{lo}, {hi}]",
                    self.config.vocab_size
                )));
            }
        }
        Ok((size[0] as usize, size[1] as usize))
    }

    /// Refuses position ids past the model's context (`max_position_embeddings`): the rotary
    /// tables would extrapolate and the result would be silently wrong.
    pub(super) fn check_context(&self, positions: &Tensor) -> Result<(), ModelError> {
        if positions.numel() == 0 {
            return Ok(());
        }
        let context = self.config.max_position_embeddings;
        let last = positions.f_max()?.f_int64_value(&[])?;
        if last >= context as i64 {
            return Err(ModelError::input(format!(
                "a sequence of {} tokens is longer than the model's context of {context} tokens \
                 (max_position_embeddings)",
                last + 1
            )));
        }
        Ok(())
    }

    pub(super) fn check_mask(
        &self,
        mask: &Tensor,
        b: usize,
        t: usize,
        what: &str,
    ) -> Result<Tensor, ModelError> {
        if mask.size() != [b as i64, t as i64] {
            return Err(ModelError::input(format!(
                "{what} has shape {:?}, expected [{b}, {t}]",
                mask.size()
            )));
        }
        Ok(mask.f_to_device_(self.device(), Kind::Int64, false, false)?)
    }

    /// Boolean masks `[B, 1, Q, K]` (true = attend) for queries at key slots `q_idx` over `k_len`
    /// keys, restricted to `same` (`[B, 1, Q, K]`, packed rows) when given. Every query may
    /// attend to itself, so padding rows stay finite.
    pub(super) fn build_masks(
        &self,
        valid: &Tensor,
        q_idx: &Tensor,
        k_len: i64,
        need_full: bool,
        same: Option<&Tensor>,
    ) -> Result<Masks, ModelError> {
        let dev = self.device();
        let k_idx = Tensor::arange(k_len, (Kind::Int64, dev)).unsqueeze(0);
        let q = q_idx.unsqueeze(1);
        let causal = k_idx.le_tensor(&q);
        let diag = k_idx.eq_tensor(&q);
        let valid = valid.unsqueeze(1).unsqueeze(1); // [B,1,1,K]
        let combine = |allowed: &Tensor| -> Tensor {
            let m = allowed.unsqueeze(0).unsqueeze(0).logical_and(&valid);
            let m = match same {
                Some(same) => m.logical_and(same),
                None => m,
            };
            m.logical_or(&diag.unsqueeze(0).unsqueeze(0))
        };
        let full = need_full.then(|| combine(&causal));
        let mut windowed = HashMap::new();
        for w in self.layers.iter().filter_map(|l| l.window) {
            // The window only matters when some query can see more than `w` keys.
            if windowed.contains_key(&w) || (k_len as usize) <= w {
                continue;
            }
            let in_window = k_idx.gt_tensor(&(&q - w as i64));
            windowed.insert(w, combine(&causal.logical_and(&in_window)));
        }
        Ok(Masks { full, windowed })
    }
}
