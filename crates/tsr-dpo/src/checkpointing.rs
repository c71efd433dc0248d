//! The trainers' switch for activation (gradient) checkpointing
//! ([`tsr_model::Model::hidden_states_checkpointed`]): keep only each decoder layer's input during
//! the forward pass and recompute the layers one at a time in the backward pass, trading one extra
//! forward pass of compute for activation memory that no longer grows with the layer count; or,
//! selectively, keep the MLP's products too and recompute only the attention half of each layer
//! ([`Recompute::Attention`]).

use serde::{Deserialize, Serialize};
use tch::Tensor;
use tsr_model::model::Checkpoint;
use tsr_model::{Model, Recompute};

use crate::error::Result;

/// `gradient_checkpointing` of `[dpo]` and `[sft]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientCheckpointing {
    /// On for models of at least [`GradientCheckpointing::AUTO_MIN_PARAMETERS`] parameters,
    /// where activations, not the step's compute, limit the batch.
    #[default]
    Auto,
    /// Always (e.g. to halve a small model's peak memory at a large batch): each layer's input
    /// is kept and the whole layer recomputed.
    On,
    /// Selective: beside each layer's input, the MLP's gate and up products are kept (`2 I`
    /// more values per token and layer) from the top layer down as far as the memory the layers'
    /// gradients will take holds them, and only the attention half of those layers is
    /// recomputed (a quarter of a layer's products at SmolLM2's shapes): about the peak of `On`
    /// and part of the way to the speed of `Off` ([`Recompute::Attention`]).
    Selective,
    /// Never: every layer's activations stay alive until the backward pass.
    Off,
}

impl GradientCheckpointing {
    /// The model size from which `auto` checkpoints: 1B parameters.
    pub const AUTO_MIN_PARAMETERS: usize = 1_000_000_000;

    /// What a trainer of `model` recomputes in the backward pass, or `None` when it does not
    /// checkpoint.
    pub fn recompute_for(self, model: &Model) -> Option<Recompute> {
        match self {
            Self::On => Some(Recompute::Layers),
            Self::Selective => Some(Recompute::Attention),
            Self::Off => None,
            Self::Auto => (model.config().num_parameters() >= Self::AUTO_MIN_PARAMETERS)
                .then_some(Recompute::Layers),
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
    pub fn padded(
        model: &Model,
        ids: &Tensor,
        mask: &Tensor,
        checkpointing: Option<Recompute>,
    ) -> Result<Self> {
        Ok(if let Some(recompute) = checkpointing {
            let (hidden, c) = model.hidden_states_checkpointed(ids, mask, true, recompute)?;
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
        checkpointing: Option<Recompute>,
    ) -> Result<Self> {
        Ok(match (checkpointing, branched) {
            (Some(r), _) => {
                let (hidden, c) = if branched {
                    model.hidden_states_branched_checkpointed(ids, positions, segments, true, r)?
                } else {
                    model.hidden_states_packed_checkpointed(ids, positions, segments, true, r)?
                };
                Hidden {
                    hidden,
                    checkpoint: Some(c),
                }
            }
            (None, true) => Hidden {
                hidden: model.hidden_states_branched(ids, positions, segments, true)?,
                checkpoint: None,
            },
            (None, false) => Hidden {
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
