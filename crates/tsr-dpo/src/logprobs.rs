//! Completion log-probabilities without materialising `B × T × V`.
//!
//! DPO needs, per sequence, `Σ_t log p(x_{t+1} | x_{≤t})` over the completion tokens only. The
//! naive way (`log_softmax(lm_head(hidden)).gather(targets)`) allocates the full logits and
//! log-softmax, `B·T·V` floats each (8 × 512 × 49152 × 4 bytes = 805 MB per copy for SmolLM2's
//! vocabulary), and autograd keeps them alive until the backward pass.
//!
//! [`ChunkedLogProbs`] instead
//! 1. gathers the hidden states of the positions that predict a completion token (prompt and
//!    padding positions never reach the LM head: they are skipped, not masked);
//! 2. walks those rows in chunks of `chunk_tokens`: hidden chunk → logits chunk `[n, V]` →
//!    `logit[target] - logsumexp(logits)` → added into the per-sequence sums, which are held in
//!    f64 (a sum over thousands of tokens loses digits in f32; the per-token values are f32);
//! 3. runs **without** an autograd graph ([`ChunkedLogProbs::forward`]). The backward pass
//!    ([`ChunkedLogProbs::backward`]) takes `∂L/∂logp` per sequence, recomputes each chunk's
//!    logits and forms its gradients by hand (from `g·(onehot - softmax)`: one matmul for the
//!    hidden states and one for the LM-head weight, the one-hot part added on the `[n, H]` side), adds the weight's straight into its gradient
//!    (a leaf weight, such as a tied embedding) and hands the hidden states' to autograd in one
//!    `backward` call, which carries them through the model.
//!
//! So the peak extra memory is one chunk's logits (`chunk_tokens × V`), whatever `B` and `T` are,
//! for one extra LM-head matmul over the completion tokens. [`completion_logps_naive`] is the
//! differentiable reference the tests compare against (values and gradients).
//!
//! Alignment: hidden state `t` predicts token `t+1`; `completion_mask[b, t+1] = 1` selects that
//! prediction. The first token of a row can never be scored (it has no context).

use tch::{Kind, Tensor};

use crate::error::{DpoError, Result};

/// Default number of scored tokens per chunk: 256 rows × 49152 × 4 bytes ≈ 50 MB of logits.
pub const DEFAULT_CHUNK_TOKENS: usize = 256;

/// Memory-lean completion log-probs. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkedLogProbs {
    chunk_tokens: usize,
}

impl Default for ChunkedLogProbs {
    fn default() -> Self {
        ChunkedLogProbs {
            chunk_tokens: DEFAULT_CHUNK_TOKENS,
        }
    }
}

/// The scored positions of a batch, flattened: computed once per batch and shared by the forward
/// and backward passes.
#[derive(Debug)]
pub struct ScoredPositions {
    /// Flat indices `b·T + t` of the hidden states that predict a completion token, `[N]` i64.
    positions: Tensor,
    /// The token each of them predicts, `[N]` i64.
    targets: Tensor,
    /// The sequence each belongs to, `[N]` i64 (the row of `input_ids`, unless built by
    /// [`ScoredPositions::from_parts`]).
    rows: Tensor,
    /// Rows `B` and length `T` of the hidden states.
    batch: i64,
    seq: i64,
    /// Number of sequences the log-probs are summed into.
    sequences: i64,
    count: i64,
}

impl ScoredPositions {
    /// Finds the scored positions from `input_ids [B,T]` and `completion_mask [B,T]` (non-zero =
    /// completion token).
    pub fn new(input_ids: &Tensor, completion_mask: &Tensor) -> Result<Self> {
        let size = input_ids.size();
        if size.len() != 2 || completion_mask.size() != size {
            return Err(DpoError::Shape(format!(
                "input_ids {:?} and completion_mask {:?} must both be [B,T]",
                size,
                completion_mask.size()
            )));
        }
        let (batch, seq) = (size[0], size[1]);
        let device = input_ids.device();
        // mask2[b, t] = completion_mask[b, t+1]: position t predicts a completion token.
        let next = completion_mask.f_narrow(1, 1, (seq - 1).max(0))?.f_ne(0)?;
        let mask2 = Tensor::f_cat(
            &[next, Tensor::f_zeros([batch, 1], (Kind::Bool, device))?],
            1,
        )?;
        let positions = mask2.f_flatten(0, -1)?.f_nonzero()?.f_squeeze_dim(1)?;
        let targets = input_ids
            .f_flatten(0, -1)?
            .f_to_kind(Kind::Int64)?
            .f_index_select(0, &positions.f_add_scalar(1)?)?;
        let rows = positions.f_floor_divide_scalar(seq.max(1))?;
        let count = positions.size()[0];
        Ok(ScoredPositions {
            positions,
            targets,
            rows,
            batch,
            seq,
            sequences: batch,
            count,
        })
    }

    /// Scored positions given one by one, for layouts where a sequence is not one row (several
    /// sequences per row, a shared prompt): hidden states `[batch, seq, H]`; for each scored
    /// token, the flat index `b·seq + t` of the hidden state that predicts it, the token, and
    /// the sequence (in `0..sequences`) whose sum it joins.
    pub fn from_parts(
        batch: i64,
        seq: i64,
        sequences: i64,
        scored: &[(i64, i64, i64)],
        device: tch::Device,
    ) -> Result<Self> {
        for &(p, _, s) in scored {
            if !(0..batch * seq).contains(&p) || !(0..sequences).contains(&s) {
                return Err(DpoError::Shape(format!(
                    "scored position {p} (of {batch}x{seq}) or sequence {s} (of {sequences}) \
                     out of range"
                )));
            }
        }
        let column = |f: fn(&(i64, i64, i64)) -> i64| -> Result<Tensor> {
            let v: Vec<i64> = scored.iter().map(f).collect();
            Ok(Tensor::from_slice(&v).f_to_device(device)?)
        };
        Ok(ScoredPositions {
            positions: column(|x| x.0)?,
            targets: column(|x| x.1)?,
            rows: column(|x| x.2)?,
            batch,
            seq,
            sequences,
            count: scored.len() as i64,
        })
    }

    /// Number of scored tokens in each sequence, `[B]` i64.
    pub fn tokens_per_row(&self) -> Result<Tensor> {
        let ones = Tensor::f_ones([self.count], (Kind::Int64, self.rows.device()))?;
        Ok(
            Tensor::f_zeros([self.sequences], (Kind::Int64, self.rows.device()))?
                .f_index_add(0, &self.rows, &ones)?,
        )
    }

    /// Total scored tokens.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when no completion token is scored.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

fn check_hidden(hidden: &Tensor, weight: &Tensor, pos: &ScoredPositions) -> Result<i64> {
    let hs = hidden.size();
    let ws = weight.size();
    if hs.len() != 3 || hs[0] != pos.batch || hs[1] != pos.seq {
        return Err(DpoError::Shape(format!(
            "hidden {:?} does not match input_ids [{}, {}]",
            hs, pos.batch, pos.seq
        )));
    }
    if ws.len() != 2 || ws[1] != hs[2] {
        return Err(DpoError::Shape(format!(
            "lm_head weight {:?} does not fit hidden {:?} (expected [V, {}])",
            ws, hs, hs[2]
        )));
    }
    Ok(hs[2])
}

/// The kind sums are accumulated in: f64 stays f64, everything else is summed in f32.
fn acc_kind(k: Kind) -> Kind {
    if k == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// Per-token log-probs of one chunk: `logit[target] - logsumexp(logits)`, in the accumulation
/// kind; with `count_hits`, also how many targets are the arg-max of their logits.
fn chunk_token_logps(
    h: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    count_hits: bool,
) -> Result<(Tensor, i64)> {
    let logits = h.f_matmul(&weight.f_tr()?)?;
    let logits = logits.f_to_kind(acc_kind(logits.kind()))?;
    let lse = logits.f_logsumexp([1], false)?;
    let tgt = logits
        .f_gather(1, &targets.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?;
    let hits = if count_hits {
        logits
            .f_argmax(1, false)?
            .f_eq_tensor(targets)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])?
    } else {
        0
    };
    Ok((tgt.f_sub(&lse)?, hits))
}

impl ChunkedLogProbs {
    /// A computer that scores `chunk_tokens` completion tokens at a time (must be > 0).
    pub fn new(chunk_tokens: usize) -> Result<Self> {
        if chunk_tokens == 0 {
            return Err(DpoError::config("logprob_chunk_tokens", "must be > 0"));
        }
        Ok(ChunkedLogProbs { chunk_tokens })
    }

    /// Tokens per chunk.
    pub fn chunk_tokens(&self) -> usize {
        self.chunk_tokens
    }

    fn chunks(&self, pos: &ScoredPositions) -> impl Iterator<Item = (i64, i64)> {
        let step = self.chunk_tokens as i64;
        let n = pos.count;
        (0..n)
            .step_by(step as usize)
            .map(move |s| (s, step.min(n - s)))
    }

    /// Summed completion log-probs per sequence, `[B]` f64 (per-token values in f32, or f64 for
    /// f64 hidden states, accumulated in f64), computed without an autograd graph. `hidden [B,T,H]` are the final-norm hidden states,
    /// `weight [V,H]` the LM-head weight.
    pub fn forward(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        pos: &ScoredPositions,
    ) -> Result<Tensor> {
        Ok(self.forward_impl(hidden, weight, pos, false)?.0)
    }

    /// [`forward`](Self::forward), plus the number of scored tokens whose target is the
    /// arg-max of the logits (for a token accuracy).
    pub fn forward_with_hits(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        pos: &ScoredPositions,
    ) -> Result<(Tensor, i64)> {
        self.forward_impl(hidden, weight, pos, true)
    }

    fn forward_impl(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        pos: &ScoredPositions,
        count_hits: bool,
    ) -> Result<(Tensor, i64)> {
        let h_dim = check_hidden(hidden, weight, pos)?;
        let _guard = tch::no_grad_guard();
        let flat = hidden.f_reshape([pos.batch * pos.seq, h_dim])?;
        let mut sums = Tensor::f_zeros([pos.sequences], (Kind::Double, hidden.device()))?;
        let mut hits = 0;
        for (start, len) in self.chunks(pos) {
            let idx = pos.positions.f_narrow(0, start, len)?;
            let h = flat.f_index_select(0, &idx)?;
            let (lp, chunk_hits) = chunk_token_logps(
                &h,
                weight,
                &pos.targets.f_narrow(0, start, len)?,
                count_hits,
            )?;
            hits += chunk_hits;
            sums = sums.f_index_add(
                0,
                &pos.rows.f_narrow(0, start, len)?,
                &lp.f_to_kind(Kind::Double)?,
            )?;
        }
        Ok((sums, hits))
    }

    /// Back-propagates `grad_logps = ∂L/∂logp` (`[B]`) through the log-probs of
    /// [`forward`](Self::forward): accumulates into `weight.grad()` when the weight requires a
    /// gradient, and, when `hidden` is part of a graph, runs `backward` through it (so the model's
    /// parameters receive their gradients). Gradients accumulate, as with `Tensor::backward`.
    pub fn backward(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        pos: &ScoredPositions,
        grad_logps: &Tensor,
    ) -> Result<()> {
        let h_dim = check_hidden(hidden, weight, pos)?;
        if grad_logps.size() != [pos.sequences] {
            return Err(DpoError::Shape(format!(
                "grad_logps {:?}, expected [{}]",
                grad_logps.size(),
                pos.sequences
            )));
        }
        let need_w = weight.requires_grad();
        let need_h = hidden.requires_grad();
        if !need_w && !need_h {
            return Ok(());
        }
        // Gradients are formed by hand per chunk (no autograd graph at all):
        //   lp_t = z_t[y_t] - logsumexp(z_t),  z_t = W h_t
        //   G_t  = g_b(t) · (onehot(y_t) - softmax(z_t))          [n, V], never formed:
        //   ∂L/∂h_t = G_t W = g_b(t)·(W[y_t] - P_t W),   ∂L/∂W = Σ_t G_tᵀ h_t
        // ∂L/∂W is added into W's gradient (a leaf) or handed to autograd with ∂L/∂hidden in one
        // backward pass.
        let (grad_h, grad_w, in_place) = {
            let _guard = tch::no_grad_guard();
            let flat = hidden.f_reshape([pos.batch * pos.seq, h_dim])?;
            let w = weight.f_detach()?;
            let acc = acc_kind(hidden.kind());
            let w_acc = w.f_to_kind(acc)?;
            let grad_logps = grad_logps.f_to_kind(acc)?;
            let mut grad_flat =
                Tensor::f_zeros([pos.batch * pos.seq, h_dim], (acc, hidden.device()))?;
            // A leaf weight that has a gradient already (a later micro-batch of an accumulated
            // step) takes the chunks' gradients in place: no second [V, H] buffer.
            let existing = weight.grad();
            let in_place =
                need_w && weight.is_leaf() && existing.defined() && existing.kind() == acc;
            let mut grad_w = if in_place {
                Some(existing)
            } else if need_w {
                Some(Tensor::f_zeros(w.size(), (acc, w.device()))?)
            } else {
                None
            };
            for (start, len) in self.chunks(pos) {
                let idx = pos.positions.f_narrow(0, start, len)?;
                let targets = pos.targets.f_narrow(0, start, len)?.f_unsqueeze(1)?;
                let h = flat.f_index_select(0, &idx)?;
                let mut probs = h.f_matmul(&w.f_tr()?)?.f_to_kind(acc)?;
                let lse = probs.f_logsumexp([1], true)?;
                let g = grad_logps
                    .f_index_select(0, &pos.rows.f_narrow(0, start, len)?)?
                    .f_unsqueeze(1)?;
                // The logits become the softmax P in place (two passes over [n, V]); the one-hot
                // part of G = g·(onehot - P) is applied to the [n, H] side, never to [n, V]:
                //   ∂L/∂h = g·(W[y] - P W),   ∂L/∂W = scatter_y(g·h) - Pᵀ (g·h).
                let _ = probs.f_sub_(&lse)?.f_exp_()?;
                let targets = targets.f_squeeze_dim(1)?;
                if need_h {
                    let dh = w_acc
                        .f_index_select(0, &targets)?
                        .f_sub_(&probs.f_matmul(&w_acc)?)?
                        .f_mul_(&g)?;
                    let _ = grad_flat.f_index_add_(0, &idx, &dh)?;
                }
                if let Some(gw) = grad_w.as_mut() {
                    let mut gh = h.f_to_kind(acc)?.f_mul(&g)?;
                    let _ = gw.f_index_add_(0, &targets, &gh)?;
                    let _ = gw.f_addmm_(&probs.f_tr()?, &gh.f_neg_()?)?;
                }
            }
            (grad_flat, grad_w, in_place)
        };
        let mut roots = Vec::with_capacity(2);
        if need_h {
            let gh = grad_h.f_to_kind(hidden.kind())?.f_reshape(hidden.size())?;
            roots.push((hidden.shallow_clone(), gh));
        }
        if let Some(gw) = grad_w.filter(|_| !in_place) {
            let gw = gw.f_to_kind(weight.kind())?;
            if weight.is_leaf() {
                // No product and no second [V, H] buffer: the gradient itself (or an in-place add).
                tsr_model::autograd::accumulate_grad(weight, gw)?;
            } else {
                roots.push((weight.shallow_clone(), gw));
            }
        }
        if !roots.is_empty() {
            let (r, g): (Vec<&Tensor>, Vec<&Tensor>) = roots.iter().map(|(r, g)| (r, g)).unzip();
            tsr_model::autograd::backward(&r, &g)?;
        }
        Ok(())
    }
}

/// The differentiable reference: full `log_softmax` over `B × T × V`, gather, mask, sum (in
/// f64, as [`ChunkedLogProbs::forward`]). Same inputs and result as
/// [`ChunkedLogProbs::forward`]; use it for small inputs and tests.
pub fn completion_logps_naive(
    hidden: &Tensor,
    weight: &Tensor,
    input_ids: &Tensor,
    completion_mask: &Tensor,
) -> Result<Tensor> {
    let size = input_ids.size();
    if size.len() != 2 {
        return Err(DpoError::Shape(format!(
            "input_ids {size:?}, expected [B,T]"
        )));
    }
    let seq = size[1];
    let logits = hidden.f_narrow(1, 0, seq - 1)?.f_matmul(&weight.f_tr()?)?;
    let logits = logits.f_to_kind(acc_kind(logits.kind()))?;
    let logp = logits.f_log_softmax(-1, logits.kind())?;
    let targets = input_ids
        .f_narrow(1, 1, seq - 1)?
        .f_to_kind(Kind::Int64)?
        .f_unsqueeze(2)?;
    let tok = logp.f_gather(2, &targets, false)?.f_squeeze_dim(2)?;
    let mask = completion_mask
        .f_narrow(1, 1, seq - 1)?
        .f_ne(0)?
        .f_to_kind(tok.kind())?;
    Ok(tok
        .f_mul(&mask)?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(kind: Kind) -> (Tensor, Tensor, Tensor, Tensor) {
        tch::manual_seed(7);
        let (b, t, h, v) = (3, 9, 5, 11);
        let hidden = Tensor::randn([b, t, h], (kind, tch::Device::Cpu)).set_requires_grad(true);
        let weight = Tensor::randn([v, h], (kind, tch::Device::Cpu)).set_requires_grad(true);
        let ids = Tensor::randint(v, [b, t], (Kind::Int64, tch::Device::Cpu));
        // row 0: prompt 3, completion 6; row 1: prompt 2, completion 3, pad 4; row 2: no completion.
        let mask = Tensor::from_slice2(&[
            [0i64, 0, 0, 1, 1, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
        ]);
        (hidden, weight, ids, mask)
    }

    #[test]
    fn values_and_gradients_match_naive() {
        for chunk in [1usize, 2, 4, 100] {
            let (hidden, weight, ids, mask) = setup(Kind::Double);
            let naive = completion_logps_naive(&hidden, &weight, &ids, &mask).unwrap();
            let g = Tensor::from_slice(&[0.7f64, -1.3, 2.0]);
            naive.f_mul(&g).unwrap().sum(Kind::Double).backward();
            let (gh_naive, gw_naive) = (hidden.grad().copy(), weight.grad().copy());
            let mut hidden = hidden;
            let mut weight = weight;
            hidden.zero_grad();
            weight.zero_grad();

            let c = ChunkedLogProbs::new(chunk).unwrap();
            let pos = ScoredPositions::new(&ids, &mask).unwrap();
            assert_eq!(pos.len(), 6 + 3);
            assert_eq!(
                Vec::<i64>::try_from(pos.tokens_per_row().unwrap()).unwrap(),
                vec![6, 3, 0]
            );
            let v = c.forward(&hidden, &weight, &pos).unwrap();
            assert!(!v.requires_grad());
            assert!(
                v.allclose(&naive.detach(), 1e-12, 1e-12, false),
                "values, chunk {chunk}"
            );
            assert_eq!(v.double_value(&[2]), 0.0);
            c.backward(&hidden, &weight, &pos, &g).unwrap();
            assert!(
                hidden.grad().allclose(&gh_naive, 1e-10, 1e-12, false),
                "hidden grad, chunk {chunk}"
            );
            assert!(
                weight.grad().allclose(&gw_naive, 1e-10, 1e-12, false),
                "weight grad, chunk {chunk}"
            );
            // A second pass accumulates (into the weight's gradient in place) ...
            c.backward(&hidden, &weight, &pos, &g).unwrap();
            assert!(
                weight
                    .grad()
                    .allclose(&(&gw_naive * 2.0), 1e-10, 1e-12, false),
                "accumulated weight grad, chunk {chunk}"
            );
            // ... and one after the gradient was released starts a new one.
            tsr_model::autograd::clear_grad(&weight);
            c.backward(&hidden, &weight, &pos, &g).unwrap();
            assert!(
                weight.grad().allclose(&gw_naive, 1e-10, 1e-12, false),
                "fresh weight grad, chunk {chunk}"
            );
        }
    }

    #[test]
    fn backward_flows_through_a_graph_in_f32() {
        let (leaf, weight, ids, mask) = setup(Kind::Float);
        // hidden is a non-leaf: the gradient must reach `leaf` through it.
        let hidden = leaf.f_mul_scalar(2.0).unwrap().tanh();
        let naive = completion_logps_naive(&hidden, &weight, &ids, &mask).unwrap();
        naive.sum(Kind::Float).backward();
        let gl = leaf.grad().copy();
        let gw = weight.grad().copy();
        let (mut leaf, mut weight) = (leaf, weight);
        leaf.zero_grad();
        weight.zero_grad();
        let hidden = leaf.f_mul_scalar(2.0).unwrap().tanh();
        let c = ChunkedLogProbs::new(4).unwrap();
        let pos = ScoredPositions::new(&ids, &mask).unwrap();
        let v = c.forward(&hidden, &weight, &pos).unwrap();
        assert!(v.allclose(&naive.detach(), 1e-5, 1e-5, false));
        c.backward(
            &hidden,
            &weight,
            &pos,
            &Tensor::ones([3], (Kind::Float, tch::Device::Cpu)),
        )
        .unwrap();
        assert!(leaf.grad().allclose(&gl, 1e-4, 1e-5, false));
        assert!(weight.grad().allclose(&gw, 1e-4, 1e-5, false));
    }

    /// Issue 14: a long completion's sum is accumulated in f64. With a zero LM head every token
    /// has the same f32 log-prob `x = -ln V`, so the exact sum is `n·x`; an f32 accumulator
    /// drifts from it by whole units over 100k tokens.
    #[test]
    fn long_completion_sums_are_accumulated_in_f64() {
        let (n, h, v) = (100_000i64, 4, 1000);
        let dev = tch::Device::Cpu;
        let hidden = Tensor::ones([1, n + 1, h], (Kind::Float, dev));
        let weight = Tensor::zeros([v, h], (Kind::Float, dev));
        let ids = Tensor::zeros([1, n + 1], (Kind::Int64, dev));
        let mask = Tensor::ones([1, n + 1], (Kind::Int64, dev));
        let x = f64::from(-(v as f32).ln());
        let exact = n as f64 * x;
        let pos = ScoredPositions::new(&ids, &mask).unwrap();
        let got = ChunkedLogProbs::new(256)
            .unwrap()
            .forward(&hidden, &weight, &pos)
            .unwrap();
        assert_eq!(got.kind(), Kind::Double);
        let got = got.double_value(&[0]);
        assert!((got - exact).abs() < 1e-6, "sum {got}, exact {exact}");
        // What an f32 accumulator gives, for scale: off by far more than the f64 tolerance.
        let f32_sum = (0..n).fold(0f32, |a, _| a + x as f32);
        assert!((f64::from(f32_sum) - exact).abs() > 1e-2);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let (hidden, weight, ids, mask) = setup(Kind::Float);
        assert!(ScoredPositions::new(&ids, &mask.narrow(1, 0, 4)).is_err());
        let pos = ScoredPositions::new(&ids, &mask).unwrap();
        assert!(ChunkedLogProbs::default()
            .forward(&hidden, &weight.narrow(1, 0, 3), &pos)
            .is_err());
        assert!(ChunkedLogProbs::default()
            .forward(&hidden.narrow(1, 0, 4), &weight, &pos)
            .is_err());
        assert!(ChunkedLogProbs::new(0).is_err());
    }
}
