//! The trainers' switch for activation (gradient) checkpointing
//! ([`tsr_model::Model::hidden_states_checkpointed`]): keep only each decoder layer's input during
//! the forward pass and recompute the layers one at a time in the backward pass, trading one extra
//! forward pass of compute for activation memory that no longer grows with the layer count.

use serde::{Deserialize, Serialize};
use tch::Tensor;
use tsr_model::model::Checkpoint;
use tsr_model::Model;

use crate::error::Result;

/// `gradient_checkpointing` of `[dpo]` and `[sft]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientCheckpointing {
    /// On for models of at least [`GradientCheckpointing::AUTO_MIN_PARAMETERS`] parameters,
    /// where activations, not the step's compute, limit the batch.
    #[default]
    Auto,
    /// Always (e.g. to halve a small model's peak memory at a large batch).
    On,
    /// Never: every layer's activations stay alive until the backward pass.
    Off,
}

impl GradientCheckpointing {
    /// The model size from which `auto` checkpoints: 1B parameters.
    pub const AUTO_MIN_PARAMETERS: usize = 1_000_000_000;

    /// Whether a trainer of `model` checkpoints.
    pub fn enabled_for(self, model: &Model) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => model.config().num_parameters() >= Self::AUTO_MIN_PARAMETERS,
        }
    }
}

/// The hidden states of a training forward, and what the backward pass needs to finish when they
/// came from a checkpointed forward.
pub(crate) struct Hidden {
    pub hidden: Tensor,
    checkpoint: Option<Checkpoint>,
}

impl Hidden {
    /// A training forward over padded rows, checkpointed or not.
    pub fn padded(model: &Model, ids: &Tensor, mask: &Tensor, checkpointed: bool) -> Result<Self> {
        Ok(if checkpointed {
            let (hidden, c) = model.hidden_states_checkpointed(ids, mask, true)?;
            Hidden {
                hidden,
                checkpoint: Some(c),
            }
        } else {
            Hidden {
                hidden: model.hidden_states(ids, mask, true)?,
                checkpoint: None,
            }
        })
    }

    /// A training forward over packed rows (several sequences per row), or over branched rows
    /// (a prompt and its continuations, [`Model::hidden_states_branched`]), checkpointed or not.
    pub fn segmented(
        model: &Model,
        ids: &Tensor,
        positions: &Tensor,
        segments: &Tensor,
        branched: bool,
        checkpointed: bool,
    ) -> Result<Self> {
        Ok(match (checkpointed, branched) {
            (true, _) => {
                let (hidden, c) = if branched {
                    model.hidden_states_branched_checkpointed(ids, positions, segments, true)?
                } else {
                    model.hidden_states_packed_checkpointed(ids, positions, segments, true)?
                };
                Hidden {
                    hidden,
                    checkpoint: Some(c),
                }
            }
            (false, true) => Hidden {
                hidden: model.hidden_states_branched(ids, positions, segments, true)?,
                checkpoint: None,
            },
            (false, false) => Hidden {
                hidden: model.hidden_states_packed(ids, positions, segments, true)?,
                checkpoint: None,
            },
        })
    }

    /// After the loss was back-propagated into [`Hidden::hidden`]: carry it through the
    /// checkpointed layers (nothing to do for a plain forward, whose `backward` already did).
    pub fn finish_backward(self, model: &Model) -> Result<()> {
        if let Some(c) = self.checkpoint {
            model.backward_checkpointed(c)?;
        }
        Ok(())
    }
}
