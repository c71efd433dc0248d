//! Cutting a generation call into chunks: prompts fitted to the context, pieces of at most
//! `max_batch_rows` samples, chunks bounded in rows and tokens, and the host-memory check.

use super::Sampler;
use crate::error::SampleError;

/// A prompt, tokenized, with the samples of it that one chunk decodes.
#[derive(Clone, Debug)]
pub(super) struct Piece {
    pub(super) request: usize,
    pub(super) ids: std::sync::Arc<Vec<u32>>,
    pub(super) seed: u64,
    pub(super) samples: std::ops::Range<usize>,
}

impl Sampler<'_> {
    pub(super) fn fit_prompt(
        &self,
        index: usize,
        ids: &[u32],
        context: usize,
    ) -> Result<Vec<u32>, SampleError> {
        if ids.is_empty() {
            return Err(SampleError::EmptyPrompt { prompt: index });
        }
        if ids.len() < context {
            return Ok(ids.to_vec());
        }
        if !self.options.truncate_prompt {
            return Err(SampleError::PromptTooLong {
                prompt: index,
                tokens: ids.len(),
                context,
            });
        }
        // Keep the end of the prompt and leave at least one position to generate into.
        let keep = context.saturating_sub(1).max(1);
        tracing::warn!(
            prompt = index,
            tokens = ids.len(),
            kept = keep,
            "prompt truncated on the left"
        );
        Ok(ids[ids.len() - keep..].to_vec())
    }

    /// Refuses shapes that cannot fit (see [`tsr_model::memory`]): the largest chunk's weights,
    /// KV cache and activations plus the results of all `total` sequences. Host memory, so the
    /// chunks are checked on the CPU only.
    pub(super) fn check_memory(
        &self,
        chunks: &[Vec<Piece>],
        total: usize,
        max_new: usize,
    ) -> Result<(), SampleError> {
        use tsr_model::memory;
        if self.model.device() != tch::Device::Cpu {
            return Ok(());
        }
        let elem = self.model.kind().elt_size_in_bytes();
        let worst = chunks
            .iter()
            .map(|c| {
                let rows: usize = c.iter().map(|p| p.samples.len()).sum();
                let longest = c.iter().map(|p| p.ids.len()).max().unwrap_or(0);
                memory::generation(self.model.config(), rows, longest, max_new, elem)
            })
            .max_by_key(memory::Estimate::bytes);
        if let Some(mut w) = worst {
            w.parts.extend(memory::results(total, max_new).parts);
            w.what = format!("{}, {total} sequences in all,", w.what);
            w.check(
                "lower the batch (--max-batch / max_batch_rows, max_batch_tokens), the number of \
                 samples or max_new_tokens",
            )?;
        }
        Ok(())
    }

    pub(super) fn chunk(&self, pieces: Vec<Piece>, max_new: usize) -> Vec<Vec<Piece>> {
        let mut chunks: Vec<Vec<Piece>> = Vec::new();
        let mut rows = 0usize;
        let mut longest = 0usize;
        for p in pieces {
            let n = p.samples.len();
            let len = p.ids.len().max(longest);
            let fits = rows + n <= self.options.max_batch_rows
                && (rows + n) * (len + max_new) <= self.options.max_batch_tokens;
            match chunks.last_mut() {
                Some(last) if fits => {
                    last.push(p);
                    rows += n;
                    longest = len;
                }
                _ => {
                    rows = n;
                    longest = p.ids.len();
                    chunks.push(vec![p]);
                }
            }
        }
        chunks
    }
}
