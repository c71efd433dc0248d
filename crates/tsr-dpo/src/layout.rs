//! How a DPO micro-batch is laid out for the forward pass: chosen and rejected sequences as
//! padded rows ([`collate`]), or one row per pair with the prompt computed once
//! ([`collate_branched`], `share_prompt`). Both give the same log-prob sums up to float rounding.

use tch::{Device, Tensor};
use tsr_model::{Model, Recompute};

use crate::checkpointing::Hidden;
use crate::config::PromptSharing;
use crate::data::{collate, collate_branched, TokenizedPair};
use crate::error::Result;
use crate::logprobs::ScoredPositions;

enum Input {
    Padded {
        ids: Tensor,
        mask: Tensor,
    },
    Branched {
        ids: Tensor,
        positions: Tensor,
        segments: Tensor,
    },
}

/// A micro-batch ready for the forward pass and the log-probs.
pub(crate) struct Collated {
    input: Input,
    /// The completion tokens and the hidden states that predict them; sums per sequence:
    /// chosen `0..B`, rejected `B..2B`.
    pub scored: ScoredPositions,
    /// Completion token counts `[2B]` (chosen, then rejected).
    pub completion_tokens: Tensor,
    /// Tokens of the pairs' sequences (each prompt counted twice, whatever the layout).
    pub real_tokens: usize,
}

impl Collated {
    /// `pairs[sel]` on `device`, branched when `share` and every pair's sequences start with
    /// the same prompt.
    pub fn new(
        pairs: &[TokenizedPair],
        sel: &[usize],
        pad_id: u32,
        device: Device,
        share: bool,
    ) -> Result<Self> {
        if share {
            if let Some(b) = collate_branched(pairs, sel, pad_id, device)? {
                return Ok(Collated {
                    input: Input::Branched {
                        ids: b.input_ids,
                        positions: b.positions,
                        segments: b.segment_ids,
                    },
                    scored: b.scored,
                    completion_tokens: b.completion_tokens,
                    real_tokens: b.real_tokens,
                });
            }
        }
        let b = collate(pairs, sel, pad_id, device)?;
        Ok(Collated {
            scored: ScoredPositions::new(&b.input_ids, &b.completion_mask)?,
            input: Input::Padded {
                ids: b.input_ids,
                mask: b.attention_mask,
            },
            completion_tokens: b.completion_tokens,
            real_tokens: b.real_tokens,
        })
    }

    /// `[rows, T]` of the forward's input.
    pub fn shape(&self) -> Vec<i64> {
        match &self.input {
            Input::Padded { ids, .. } | Input::Branched { ids, .. } => ids.size(),
        }
    }

    /// The training forward (dropout on), checkpointed or not.
    pub fn forward(&self, model: &Model, checkpointing: Option<Recompute>) -> Result<Hidden> {
        match &self.input {
            Input::Padded { ids, mask } => Hidden::padded(model, ids, mask, checkpointing),
            Input::Branched {
                ids,
                positions,
                segments,
            } => Hidden::segmented(model, ids, positions, segments, true, checkpointing),
        }
    }
}

impl PromptSharing {
    /// Whether a trainer of `model` training with attention dropout `dropout` shares prompts.
    pub(crate) fn enabled_for(self, model: &Model, dropout: f64, max_length: usize) -> bool {
        // Sliding windows are cut by index, which a shared prompt shifts.
        let windows_fit = model
            .min_sliding_window()
            .is_none_or(|w| w >= 2 * max_length);
        match self {
            PromptSharing::Off => false,
            PromptSharing::On => windows_fit,
            PromptSharing::Auto => windows_fit && dropout == 0.0,
        }
    }
}
