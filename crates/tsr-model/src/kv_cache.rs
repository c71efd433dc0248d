//! Key/value cache for incremental decoding.
//!
//! Each layer keeps one key and one value buffer of shape `[batch, kv_heads, capacity, head_dim]`.
//! New positions are written in place into the spare capacity; when it runs out the buffers grow
//! geometrically, so appending one token costs O(1) amortised copies instead of the O(length)
//! re-concatenation a `cat`-based cache pays at every step.

use tch::Tensor;

use crate::error::ModelError;

/// Smallest capacity allocated on the first append.
const MIN_CAPACITY: i64 = 64;

/// Cached keys and values of all layers for a batch of rows.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    batch: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("layers", &self.layers.len())
            .field("len", &self.len)
            .field("batch", &self.batch)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl KvCache {
    /// An empty cache for `num_layers` layers and `batch` rows.
    pub fn new(num_layers: usize, batch: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
            batch,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of rows.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Positions the buffers can hold before they have to grow.
    pub fn capacity(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.size()[2] as usize)
            .unwrap_or(0)
    }

    /// Reorders, repeats or drops rows: row `i` of the new cache is row `rows[i]` of the old one.
    /// `rows` is a 1-D integer tensor (any device; it is moved to the cache's device).
    pub fn index_select(&mut self, rows: &Tensor) {
        let n = rows.size().first().copied().unwrap_or(0);
        let rows = rows.to_kind(tch::Kind::Int64);
        tch::no_grad(|| {
            for (k, v) in self.layers.iter_mut().flatten() {
                let r = rows.to_device(k.device());
                *k = k.index_select(0, &r);
                *v = v.index_select(0, &r);
            }
        });
        self.batch = n as usize;
    }

    /// Forgets all cached positions (keeps the buffers).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Writes the new keys/values `[B, kv_heads, S, head_dim]` of `layer` at positions
    /// `len..len+S` and returns views over all `len+S` cached positions. The cache length itself
    /// advances in [`KvCache::advance`], once every layer has appended.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let size = k.size();
        let (b, h, s, d) = (size[0], size[1], size[2], size[3]);
        let len = self.len as i64;
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| ModelError::input(format!("kv cache has no layer {layer}")))?;
        let need = len + s;
        let grow = match slot {
            None => true,
            Some((kb, _)) => kb.size()[2] < need,
        };
        if grow {
            let old_cap = slot.as_ref().map(|(kb, _)| kb.size()[2]).unwrap_or(0);
            let cap = need.max(2 * old_cap).max(MIN_CAPACITY);
            let opts = (k.kind(), k.device());
            let kb = Tensor::f_zeros([b, h, cap, d], opts)?;
            let vb = Tensor::f_zeros([b, h, cap, d], opts)?;
            if let Some((ok, ov)) = slot.as_ref() {
                if len > 0 {
                    kb.narrow(2, 0, len).copy_(&ok.narrow(2, 0, len));
                    vb.narrow(2, 0, len).copy_(&ov.narrow(2, 0, len));
                }
            }
            *slot = Some((kb, vb));
        }
        let (kb, vb) = slot.as_ref().expect("allocated above");
        kb.narrow(2, len, s).f_copy_(k)?;
        vb.narrow(2, len, s).f_copy_(v)?;
        Ok((kb.narrow(2, 0, need), vb.narrow(2, 0, need)))
    }

    /// Advances the length after all layers appended `s` positions.
    pub(crate) fn advance(&mut self, s: usize) {
        self.len += s;
    }
}
