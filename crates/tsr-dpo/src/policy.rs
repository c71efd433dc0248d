//! DPO for models that are not tsr's: any tch model behind the [`Policy`] trait, any loss
//! behind [`PreferenceLoss`].
//!
//! [`train_policy`] is a compact trainer for such models: pairs of token ids, the reference
//! log-probs either precomputed once from the starting weights (TRL's
//! `precompute_ref_log_probs=True`, no second model in memory) or taken from a separate
//! reference policy at every step, seeded batch order, gradient accumulation, global-norm
//! clipping, tsr-dpo's AdamW and learning-rate schedule, dropout on or off through
//! [`Policy::set_train`]. It reads the same [`TrainConfig`] as the main trainer (batch size,
//! accumulation, epochs, max steps, learning rate and schedule, Adam, weight decay, clipping,
//! seed, loss) and reports TRL's per-step metrics. The main [`crate::Trainer`] (tsr's own models:
//! chunked log-probs, length bucketing, checkpoints, resume) is unchanged; this path trades those
//! for generality. `tests/external-dpo/` is a crate outside the workspace that trains its own
//! tiny model with it.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::error::{DpoError, Result};
use crate::loss::{dpo_loss, DpoLoss, LossParams, LossStats, PairLogps};

/// A model tsr-dpo can train.
pub trait Policy {
    /// For each row of `input_ids` (`[B, T]`, i64, right-padded), the sum of the log-probabilities
    /// of the tokens where `completion_mask` (`[B, T]`) is 1, each token scored from the logits at
    /// the previous position; `attention_mask` (`[B, T]`) is 1 on real tokens. Returns `[B]`
    /// (f32 or f64), differentiable with respect to [`Policy::trainable`] unless gradients are off.
    fn completion_logps(
        &mut self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        completion_mask: &Tensor,
    ) -> Result<Tensor>;

    /// The named tensors to train (each `requires_grad`), shallow handles updated in place.
    fn trainable(&self) -> Vec<(String, Tensor)>;

    /// Training mode (dropout on) or evaluation mode; the default does nothing (no dropout).
    fn set_train(&mut self, train: bool) {
        let _ = train;
    }

    /// Where the inputs go.
    fn device(&self) -> Device {
        Device::Cpu
    }
}

/// The loss of a batch of pairs from the policy's and the reference's summed log-probs.
/// [`LossParams`] (the built-in losses, [`dpo_loss`]) implements it; implement it for a variant
/// tsr-dpo does not have.
pub trait PreferenceLoss {
    fn loss(&self, logps: &PairLogps<'_>) -> Result<DpoLoss>;
}

impl PreferenceLoss for LossParams {
    fn loss(&self, logps: &PairLogps<'_>) -> Result<DpoLoss> {
        dpo_loss(logps, self)
    }
}

/// One preference pair as token ids: the prompt, and the two completions that follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPair {
    pub prompt: Vec<i64>,
    pub chosen: Vec<i64>,
    pub rejected: Vec<i64>,
}

/// What one optimizer step of [`train_policy`] did (TRL's names in [`LossStats`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyStep {
    /// 1-based optimizer step.
    pub step: u64,
    /// Fractional epoch reached after the step.
    pub epoch: f64,
    pub learning_rate: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Means over the step's micro-batches.
    pub stats: LossStats,
}

fn data_error(reason: &str) -> DpoError {
    DpoError::Data {
        path: "<memory>".into(),
        line: 0,
        reason: reason.to_string(),
    }
}

/// Padded `[rows, T]` tensors of prompt + completion sequences.
struct Batch {
    ids: Tensor,
    attention: Tensor,
    completion: Tensor,
    tokens: Tensor,
}

fn batch(rows: &[(&[i64], &[i64])], pad: i64, device: Device) -> Result<Batch> {
    let t = rows
        .iter()
        .map(|(p, c)| p.len() + c.len())
        .max()
        .unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * t);
    let mut att = Vec::with_capacity(rows.len() * t);
    let mut comp = Vec::with_capacity(rows.len() * t);
    let mut tokens = Vec::with_capacity(rows.len());
    for (p, c) in rows {
        if c.is_empty() || p.is_empty() {
            return Err(data_error(
                "a pair has an empty prompt or completion (a completion token is scored from the \
                 position before it)",
            ));
        }
        let n = p.len() + c.len();
        ids.extend(p.iter().chain(c.iter()).copied());
        ids.extend(std::iter::repeat_n(pad, t - n));
        att.extend(std::iter::repeat_n(1i64, n).chain(std::iter::repeat_n(0, t - n)));
        comp.extend(
            std::iter::repeat_n(0i64, p.len())
                .chain(std::iter::repeat_n(1, c.len()))
                .chain(std::iter::repeat_n(0, t - n)),
        );
        tokens.push(c.len() as i64);
    }
    let shape = [rows.len() as i64, t as i64];
    let to = |v: Vec<i64>| -> Result<Tensor> {
        Ok(Tensor::from_slice(&v)
            .f_reshape(shape)?
            .f_to_device(device)?)
    };
    Ok(Batch {
        ids: to(ids)?,
        attention: to(att)?,
        completion: to(comp)?,
        tokens: Tensor::from_slice(&tokens).f_to_device(device)?,
    })
}

/// Summed log-probs `[2B]` of the chosen rows then the rejected rows of `pairs`.
fn pair_logps(policy: &mut dyn Policy, pairs: &[&IdPair], pad: i64) -> Result<(Tensor, Batch)> {
    let rows: Vec<(&[i64], &[i64])> = pairs
        .iter()
        .map(|p| (p.prompt.as_slice(), p.chosen.as_slice()))
        .chain(
            pairs
                .iter()
                .map(|p| (p.prompt.as_slice(), p.rejected.as_slice())),
        )
        .collect();
    let b = batch(&rows, pad, policy.device())?;
    let logps = policy.completion_logps(&b.ids, &b.attention, &b.completion)?;
    if logps.size() != [rows.len() as i64] {
        return Err(DpoError::Shape(format!(
            "Policy::completion_logps returned shape {:?} for {} rows",
            logps.size(),
            rows.len()
        )));
    }
    Ok((logps, b))
}

/// Reference log-probs of every pair (chosen, rejected), without gradients, in eval mode.
fn reference_logps(
    reference: &mut dyn Policy,
    pairs: &[IdPair],
    batch_size: usize,
    pad: i64,
) -> Result<Vec<(f64, f64)>> {
    let _guard = tch::no_grad_guard();
    reference.set_train(false);
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1)) {
        let refs: Vec<&IdPair> = chunk.iter().collect();
        let (l, _) = pair_logps(reference, &refs, pad)?;
        let v = Vec::<f64>::try_from(&l.f_to_kind(Kind::Double)?)?;
        let n = chunk.len();
        out.extend((0..n).map(|i| (v[i], v[n + i])));
    }
    Ok(out)
}

/// Trains `policy` with DPO on `pairs` under `cfg`, with `loss` (use `cfg.loss()` for the
/// configured built-in one). `reference`: `None` precomputes the reference log-probs once from
/// the starting weights; `Some` scores every batch with that model instead (no gradients). `pad`
/// is the id used to pad rows (masked out). `on_step` sees every optimizer step.
pub fn train_policy(
    policy: &mut dyn Policy,
    mut reference: Option<&mut dyn Policy>,
    pairs: &[IdPair],
    cfg: &TrainConfig,
    loss: &dyn PreferenceLoss,
    pad: i64,
    mut on_step: impl FnMut(&PolicyStep),
) -> Result<Vec<PolicyStep>> {
    if pairs.is_empty() {
        return Err(data_error("no pairs to train on"));
    }
    let c = cfg.get();
    let precomputed = match reference.as_deref_mut() {
        None => Some(reference_logps(policy, pairs, c.batch_size, pad)?),
        Some(_) => None,
    };
    let mut opt = crate::optim::AdamW::new(
        policy.trainable(),
        c.adam_beta1,
        c.adam_beta2,
        c.adam_epsilon,
        c.weight_decay,
    )?;
    if opt.is_empty() {
        return Err(data_error("Policy::trainable returned no tensors"));
    }
    let per_epoch = pairs.len().div_ceil(c.batch_size) as u64;
    let accum = c.gradient_accumulation_steps as u64;
    let total_micro = match c.max_steps {
        Some(s) => s * accum,
        None => per_epoch * c.epochs,
    };
    let total_steps = total_micro.div_ceil(accum);
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut steps = Vec::new();
    let mut acc: Vec<LossStats> = Vec::new();
    policy.set_train(c.dropout > 0.0);
    for micro in 0..total_micro {
        let in_epoch = (micro % per_epoch) as usize;
        if in_epoch == 0 {
            order = (0..pairs.len()).collect();
            order.shuffle(&mut rng);
        }
        let idx: Vec<usize> = order
            .iter()
            .skip(in_epoch * c.batch_size)
            .take(c.batch_size)
            .copied()
            .collect();
        let chunk: Vec<&IdPair> = idx.iter().map(|&i| &pairs[i]).collect();
        let (logps, b) = pair_logps(policy, &chunk, pad)?;
        let n = chunk.len() as i64;
        let kind = logps.f_kind()?;
        let (ref_c, ref_r) = match (&precomputed, reference.as_deref_mut()) {
            (Some(pre), _) => {
                let rc: Vec<f64> = idx.iter().map(|&i| pre[i].0).collect();
                let rr: Vec<f64> = idx.iter().map(|&i| pre[i].1).collect();
                let t = |v: Vec<f64>| -> Result<Tensor> {
                    Ok(Tensor::from_slice(&v)
                        .f_to_kind(kind)?
                        .f_to_device(logps.device())?)
                };
                (t(rc)?, t(rr)?)
            }
            (None, Some(r)) => {
                let _guard = tch::no_grad_guard();
                r.set_train(false);
                let (l, _) = pair_logps(r, &chunk, pad)?;
                let l = l.f_to_kind(kind)?;
                (l.f_narrow(0, 0, n)?, l.f_narrow(0, n, n)?)
            }
            (None, None) => unreachable!("precomputed when there is no reference"),
        };
        let out = loss.loss(&PairLogps {
            policy_chosen: &logps.f_narrow(0, 0, n)?,
            policy_rejected: &logps.f_narrow(0, n, n)?,
            ref_chosen: &ref_c,
            ref_rejected: &ref_r,
            chosen_tokens: &b.tokens.f_narrow(0, 0, n)?,
            rejected_tokens: &b.tokens.f_narrow(0, n, n)?,
        })?;
        let stats = out.stats()?;
        let step_now = steps.len() as u64 + 1;
        if !stats.loss.is_finite() {
            return Err(DpoError::NonFinite {
                what: "loss",
                step: step_now,
                batch: in_epoch,
                pairs: idx.clone(),
            });
        }
        out.loss.f_div_scalar(accum as f64)?.f_backward()?;
        acc.push(stats);
        let last = micro + 1 == total_micro;
        if acc.len() as u64 == accum || last {
            let step = steps.len() as u64;
            let grad_norm = opt.grad_norm()?;
            if !grad_norm.is_finite() {
                return Err(DpoError::NonFinite {
                    what: "gradient",
                    step: step + 1,
                    batch: in_epoch,
                    pairs: idx.clone(),
                });
            }
            let scale = if c.max_grad_norm > 0.0 && grad_norm > c.max_grad_norm {
                c.max_grad_norm / (grad_norm + 1e-6)
            } else {
                1.0
            };
            let lr = cfg.learning_rate_at(step, total_steps);
            opt.step(lr, scale)?;
            let k = acc.len() as f64;
            let mean = |f: fn(&LossStats) -> f64| acc.iter().map(f).sum::<f64>() / k;
            let s = PolicyStep {
                step: step + 1,
                epoch: (micro + 1) as f64 / per_epoch as f64,
                learning_rate: lr,
                grad_norm,
                stats: LossStats {
                    loss: mean(|s| s.loss),
                    rewards_chosen: mean(|s| s.rewards_chosen),
                    rewards_rejected: mean(|s| s.rewards_rejected),
                    rewards_margins: mean(|s| s.rewards_margins),
                    rewards_accuracies: mean(|s| s.rewards_accuracies),
                },
            };
            on_step(&s);
            steps.push(s);
            acc.clear();
        }
    }
    policy.set_train(false);
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DpoConfig;

    /// A bigram model: logits of the next token from an embedding of the current one.
    struct Bigram {
        table: Tensor,
    }

    impl Policy for Bigram {
        fn completion_logps(
            &mut self,
            ids: &Tensor,
            _att: &Tensor,
            mask: &Tensor,
        ) -> Result<Tensor> {
            let t = ids.size()[1];
            let logits = self
                .table
                .f_index_select(0, &ids.f_narrow(1, 0, t - 1)?.f_flatten(0, -1)?)?;
            let logits = logits.f_view([ids.size()[0], t - 1, -1])?;
            let logp = logits.f_log_softmax(-1, Kind::Float)?;
            let next = ids.f_narrow(1, 1, t - 1)?.f_unsqueeze(2)?;
            let tok = logp.f_gather(2, &next, false)?.f_squeeze_dim(2)?;
            Ok(tok
                .f_mul(&mask.f_narrow(1, 1, t - 1)?.f_to_kind(Kind::Float)?)?
                .f_sum_dim_intlist(1, false, Kind::Float)?)
        }
        fn trainable(&self) -> Vec<(String, Tensor)> {
            vec![("table".into(), self.table.shallow_clone())]
        }
    }

    fn bigram(seed: i64) -> Bigram {
        tch::manual_seed(seed);
        Bigram {
            table: (Tensor::randn([8, 8], (Kind::Float, Device::Cpu)) * 0.1)
                .set_requires_grad(true),
        }
    }

    fn pairs() -> Vec<IdPair> {
        (1..5)
            .map(|p| IdPair {
                prompt: vec![p],
                chosen: vec![6, 7],
                rejected: vec![5, 5, 4],
            })
            .collect()
    }

    fn cfg() -> TrainConfig {
        DpoConfig {
            learning_rate: 0.1,
            lr_schedule: crate::LrSchedule::Constant,
            batch_size: 2,
            gradient_accumulation_steps: 1,
            epochs: 5,
            dropout: 0.0,
            ..DpoConfig::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn a_foreign_policy_learns_the_preference_with_either_reference() {
        let c = cfg();
        let mut a = bigram(1);
        let steps = train_policy(&mut a, None, &pairs(), &c, c.loss(), 0, |_| {}).unwrap();
        assert_eq!(steps.len(), 10);
        assert!(
            steps[0].stats.rewards_margins.abs() < 1e-6,
            "policy = reference at step 1"
        );
        let last = &steps[steps.len() - 1].stats;
        assert!(
            last.rewards_margins > 0.1 && last.rewards_accuracies == 1.0,
            "{last:?}"
        );
        assert!(last.loss < steps[0].stats.loss);
        // A separate, frozen reference with the same starting weights gives the same training.
        let mut b = bigram(1);
        let mut r = bigram(1);
        let _ = r.table.set_requires_grad(false);
        let steps_b =
            train_policy(&mut b, Some(&mut r), &pairs(), &c, c.loss(), 0, |_| {}).unwrap();
        for (x, y) in steps.iter().zip(&steps_b) {
            assert!((x.stats.loss - y.stats.loss).abs() < 1e-5, "{x:?} vs {y:?}");
        }
        assert!(a.table.allclose(&b.table, 1e-5, 1e-6, false));
    }

    /// A user loss through the trait: a loss that ignores the data trains nothing.
    #[test]
    fn a_custom_loss_replaces_the_built_in_one() {
        struct Zero;
        impl PreferenceLoss for Zero {
            fn loss(&self, x: &PairLogps<'_>) -> Result<DpoLoss> {
                let mut out = dpo_loss(
                    x,
                    &LossParams::new(crate::LossType::Sigmoid, 0.1, 0.0, 0.0).unwrap(),
                )?;
                out.loss = x.policy_chosen.f_sum(Kind::Float)?.f_mul_scalar(0.0)?;
                Ok(out)
            }
        }
        let c = cfg();
        let mut a = bigram(2);
        let before = a.table.detach().copy();
        train_policy(&mut a, None, &pairs(), &c, &Zero, 0, |_| {}).unwrap();
        assert!(a.table.allclose(&before, 0.0, 0.0, false));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let c = cfg();
        let mut a = bigram(3);
        assert!(train_policy(&mut a, None, &[], &c, c.loss(), 0, |_| {}).is_err());
        let bad = vec![IdPair {
            prompt: vec![],
            chosen: vec![1],
            rejected: vec![2],
        }];
        let e = train_policy(&mut a, None, &bad, &c, c.loss(), 0, |_| {}).unwrap_err();
        assert!(e.to_string().contains("empty prompt"), "{e}");
    }
}
