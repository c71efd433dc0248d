//! The trainer, reference log-probs and diagnostics on a tiny random Llama.

use tch::{Device, Kind, Tensor};
use tsr_dpo::data::{collate, collate_branched, TokenizedPair, TokenizedSeq};
use tsr_dpo::reference::{
    cached_reference_logps, compute_reference_logps, mean_completion_hidden, row_cosines,
};
use tsr_dpo::{
    completion_logps_naive, ChunkedLogProbs, DpoConfig, DpoError, ScoredPositions, Trainer, VecSink,
};
use tsr_model::{LoadOptions, Model, ModelConfig};

/// libtorch's global generator (dropout, random init) is shared by the test threads: tests that
/// need reproducible draws hold this lock.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn tiny_model(seed: u64) -> Model {
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": true, "max_position_embeddings": 64
    }))
    .unwrap();
    Model::random(cfg, seed, &LoadOptions::default()).unwrap()
}

pub(crate) fn pairs(n: usize) -> Vec<TokenizedPair> {
    (0..n)
        .map(|i| {
            let prompt: Vec<u32> = (0..(2 + i % 3)).map(|k| (3 + i + k) as u32 % 40).collect();
            let seq = |c: &[u32]| TokenizedSeq {
                ids: prompt.iter().chain(c).copied().collect(),
                prompt_len: prompt.len(),
            };
            let chosen: Vec<u32> = (0..(1 + i % 4))
                .map(|k| (10 + 2 * k) as u32)
                .chain([2])
                .collect();
            let rejected: Vec<u32> = (0..(2 + i % 2))
                .map(|k| (30 + k + i) as u32 % 40)
                .chain([2])
                .collect();
            TokenizedPair {
                index: i,
                chosen: seq(&chosen),
                rejected: seq(&rejected),
            }
        })
        .collect()
}

fn config() -> DpoConfig {
    DpoConfig {
        learning_rate: 1e-2,
        final_learning_rate: 1e-3,
        warmup_steps: 1,
        weight_decay: 0.01,
        batch_size: 2,
        gradient_accumulation_steps: 2,
        max_steps: Some(4),
        dropout: 0.1,
        logprob_chunk_tokens: 3,
        bucket_window: 2,
        seed: 9,
        ..DpoConfig::default()
    }
}

pub(crate) fn weights(m: &Model) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = m
        .var_store()
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn reference_logps_equal_naive_and_are_cached() {
    let _rng = rng_lock();
    let model = tiny_model(1);
    let data = pairs(5);
    let c = ChunkedLogProbs::new(4).unwrap();
    let r = compute_reference_logps(&model, &data, 0, 2, &c).unwrap();
    // Naive, one pair at a time, no padding.
    for (i, p) in data.iter().enumerate() {
        let b = collate(&data, &[i], 0, Device::Cpu).unwrap();
        let h = tch::no_grad(|| {
            model
                .hidden_states(&b.input_ids, &b.attention_mask, false)
                .unwrap()
        });
        let lp = completion_logps_naive(
            &h,
            &model.lm_head_weight(),
            &b.input_ids,
            &b.completion_mask,
        )
        .unwrap();
        assert!(
            (lp.double_value(&[0]) - r.chosen[i]).abs() < 1e-4,
            "pair {i} chosen"
        );
        assert!(
            (lp.double_value(&[1]) - r.rejected[i]).abs() < 1e-4,
            "pair {i} rejected"
        );
        assert_eq!(p.index, i);
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, path) = cached_reference_logps(&model, &data, 0, 2, &c, dir.path()).unwrap();
    assert!(path.exists());
    assert_eq!(a, r);
    // A second call reads the file: corrupt the values to prove it.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["logps"]["chosen"][0] = serde_json::json!(123.0);
    std::fs::write(&path, v.to_string()).unwrap();
    let (b, _) = cached_reference_logps(&model, &data, 0, 2, &c, dir.path()).unwrap();
    assert_eq!(b.chosen[0], 123.0);
    // Other data: another key, recomputed.
    let (d, p2) = cached_reference_logps(&model, &data[..4], 0, 2, &c, dir.path()).unwrap();
    assert_ne!(p2, path);
    assert_eq!(d.chosen[0], r.chosen[0]);
}

#[test]
fn chunked_backward_through_the_model_matches_naive_autograd() {
    let _rng = rng_lock();
    let model = tiny_model(2);
    let data = pairs(3);
    let b = collate(&data, &[0, 1, 2], 0, Device::Cpu).unwrap();
    let g = Tensor::from_slice(&[0.3f32, -0.7, 1.1, 0.5, -0.2, 0.9]);
    let vars = weights(&model);
    let live: Vec<(String, Tensor)> = {
        let mut v: Vec<_> = model.var_store().variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let h = model
        .hidden_states(&b.input_ids, &b.attention_mask, false)
        .unwrap();
    let naive = completion_logps_naive(
        &h,
        &model.lm_head_weight(),
        &b.input_ids,
        &b.completion_mask,
    )
    .unwrap();
    naive.f_mul(&g).unwrap().sum(Kind::Float).backward();
    let naive_grads: Vec<Tensor> = live.iter().map(|(_, t)| t.grad().copy()).collect();
    for (_, t) in &live {
        let mut t = t.shallow_clone();
        t.zero_grad();
    }
    let h = model
        .hidden_states(&b.input_ids, &b.attention_mask, false)
        .unwrap();
    let c = ChunkedLogProbs::new(5).unwrap();
    let pos = ScoredPositions::new(&b.input_ids, &b.completion_mask).unwrap();
    let v = c.forward(&h, &model.lm_head_weight(), &pos).unwrap();
    assert!(v.allclose(&naive.detach(), 1e-5, 1e-5, false));
    c.backward(&h, &model.lm_head_weight(), &pos, &g).unwrap();
    for ((name, t), ng) in live.iter().zip(&naive_grads) {
        assert!(
            t.grad().allclose(ng, 1e-4, 1e-5, false),
            "gradient of {name}"
        );
    }
    assert_eq!(vars.len(), live.len());
}

#[test]
fn resumed_training_equals_uninterrupted() {
    let _rng = rng_lock();
    let cfg = config().validate().unwrap();
    let data = pairs(6);
    let mut m0 = tiny_model(3);
    let reference = compute_reference_logps(&m0, &data, 0, 4, cfg.logprobs()).unwrap();

    let mut straight = VecSink::default();
    {
        let mut t = Trainer::new(&mut m0, cfg.clone(), data.clone(), reference.clone(), 0).unwrap();
        assert_eq!(t.total_steps(), 4);
        t.run(&mut straight, None, |_, _| {}).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut first = VecSink::default();
    {
        let mut m1 = tiny_model(3);
        let mut t = Trainer::new(&mut m1, cfg.clone(), data.clone(), reference.clone(), 0).unwrap();
        for _ in 0..2 {
            let m = t.step().unwrap().unwrap();
            tsr_dpo::MetricsSink::record(&mut first, &m).unwrap();
        }
        t.save_checkpoint(&ck).unwrap();
    }
    let mut m2 = tiny_model(77); // different init: everything must come from the checkpoint
    let mut second = VecSink::default();
    {
        let mut t = Trainer::new(&mut m2, cfg.clone(), data.clone(), reference.clone(), 0).unwrap();
        t.load_checkpoint(&ck).unwrap();
        assert_eq!(t.steps_done(), 2);
        t.run(&mut second, None, |_, _| {}).unwrap();
    }
    let (a, b) = (weights(&m0), weights(&m2));
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }
    let losses = |s: &VecSink| s.0.iter().map(|m| m.loss).collect::<Vec<_>>();
    let resumed: Vec<f64> = losses(&first).into_iter().chain(losses(&second)).collect();
    assert_eq!(losses(&straight), resumed);
    assert_eq!(
        straight.0.iter().map(|m| m.step).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // The weights did move, and the lr followed warm-up then decay.
    assert!(!a
        .iter()
        .zip(weights(&tiny_model(3)))
        .all(|((_, x), (_, y))| x.equal(&y)));
    assert_eq!(straight.0[0].learning_rate, 0.0);
    assert!((straight.0[1].learning_rate - 1e-2).abs() < 1e-15);
    assert!((straight.0[3].learning_rate - 1e-3).abs() < 1e-12);
    for m in &straight.0 {
        assert!(m.grad_norm.is_finite() && m.grad_norm > 0.0);
        assert_eq!(m.pairs, 4);
    }
}

#[test]
fn checkpoint_from_other_data_or_config_is_refused() {
    let _rng = rng_lock();
    let cfg = config().validate().unwrap();
    let data = pairs(6);
    let mut m = tiny_model(4);
    let reference = compute_reference_logps(&m, &data, 0, 4, cfg.logprobs()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    Trainer::new(&mut m, cfg.clone(), data.clone(), reference.clone(), 0)
        .unwrap()
        .save_checkpoint(&ck)
        .unwrap();
    let other = DpoConfig {
        beta: 0.3,
        ..config()
    }
    .validate()
    .unwrap();
    let e = Trainer::new(&mut m, other, data.clone(), reference.clone(), 0)
        .unwrap()
        .load_checkpoint(&ck)
        .unwrap_err();
    assert!(e.to_string().contains("configuration"), "{e}");
    let r5 = tsr_dpo::ReferenceLogps {
        chosen: reference.chosen[..5].to_vec(),
        rejected: reference.rejected[..5].to_vec(),
    };
    let e = Trainer::new(&mut m, cfg, data[..5].to_vec(), r5, 0)
        .unwrap()
        .load_checkpoint(&ck)
        .unwrap_err();
    assert!(e.to_string().contains("other data"), "{e}");
}

#[test]
fn dpo_training_separates_chosen_from_rejected() {
    let _rng = rng_lock();
    let (sink, _) = train_without_dropout(
        DpoConfig {
            max_steps: Some(12),
            learning_rate: 3e-2,
            final_learning_rate: 3e-2,
            warmup_steps: 0,
            ..config()
        },
        5,
    );
    let first = &sink.0[0];
    let last = sink.0.last().unwrap();
    assert!(
        (first.rewards_margins).abs() < 1e-3,
        "no dropout: the policy starts at the reference"
    );
    assert!(
        last.loss < first.loss - 0.1,
        "loss {} -> {}",
        first.loss,
        last.loss
    );
    assert!(
        last.rewards_margins > 0.5,
        "margin {}",
        last.rewards_margins
    );
    assert_eq!(last.rewards_accuracies, 1.0);
}

#[test]
fn non_finite_state_stops_training_and_is_never_checkpointed() {
    let _rng = rng_lock();
    let cfg = config().validate().unwrap();
    let data = pairs(6);
    let mut m = tiny_model(6);
    let reference = compute_reference_logps(&m, &data, 0, 4, cfg.logprobs()).unwrap();
    {
        let _g = tch::no_grad_guard();
        let mut vars: Vec<_> = m.var_store().variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (name, t) = vars
            .iter_mut()
            .find(|(n, _)| n.contains("layers.1.mlp.down_proj"))
            .unwrap();
        let _ = t.fill_(f64::NAN);
        assert!(!name.is_empty());
    }
    let mut t = Trainer::new(&mut m, cfg, data, reference, 0).unwrap();
    match t.step() {
        Err(DpoError::NonFinite {
            what: "loss",
            step: 1,
            pairs,
            ..
        }) => assert_eq!(pairs.len(), 2),
        other => panic!("expected a non-finite loss error, got {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        t.save_checkpoint(&dir.path().join("ck")),
        Err(DpoError::Checkpoint { .. })
    ));
    assert!(!dir.path().join("ck").exists());
}

#[test]
fn representation_diagnostic() {
    let _rng = rng_lock();
    let model = tiny_model(7);
    let items = vec![
        (vec![3u32, 4, 5], vec![6u32, 7]),
        (vec![3u32, 4, 5], vec![6u32, 7]),
        (vec![9u32], vec![30u32, 31, 32, 33]),
    ];
    let h = mean_completion_hidden(&model, &items, 0, 2).unwrap();
    assert_eq!(h.size(), [3, 16]);
    // Same item, different batch position / padding: same row.
    assert!(h.get(0).allclose(&h.get(1), 1e-5, 1e-5, false));
    let cos = row_cosines(&h.narrow(0, 0, 2), &h.narrow(0, 1, 2)).unwrap();
    assert!((cos[0] - 1.0).abs() < 1e-6);
    assert!(cos[1] < 0.999 && cos[1] > -1.0);
    // Equals the mean of the completion rows of an unpadded forward.
    let ids = Tensor::from_slice(&[9i64, 30, 31, 32, 33]).reshape([1, 5]);
    let hs = tch::no_grad(|| {
        model
            .hidden_states(
                &ids,
                &Tensor::ones([1, 5], (Kind::Int64, Device::Cpu)),
                false,
            )
            .unwrap()
    });
    let want = hs
        .get(0)
        .narrow(0, 1, 4)
        .mean_dim([0i64].as_slice(), false, Kind::Float);
    assert!(h.get(2).allclose(&want, 1e-5, 1e-5, false));
}

/// Trains the tiny model from `seed` on 6 pairs with `cfg`, dropout off; returns the step
/// metrics and the trained weights.
fn train_without_dropout(cfg: DpoConfig, seed: u64) -> (VecSink, Vec<(String, Tensor)>) {
    let cfg = DpoConfig {
        dropout: 0.0,
        ..cfg
    }
    .validate()
    .unwrap();
    let data = pairs(6);
    let mut m = tiny_model(seed);
    let reference = compute_reference_logps(&m, &data, 0, 4, cfg.logprobs()).unwrap();
    let mut sink = VecSink::default();
    Trainer::new(&mut m, cfg, data, reference, 0)
        .unwrap()
        .run(&mut sink, None, |_, _| {})
        .unwrap();
    (sink, weights(&m))
}

#[test]
fn checkpointed_training_equals_plain_training() {
    // Activation checkpointing changes memory, not the arithmetic: same losses, gradient norms
    // and weights as the plain pass (dropout off; with dropout the draws differ by design).
    let _rng = rng_lock();
    let run = |ck: tsr_dpo::GradientCheckpointing| {
        train_without_dropout(
            DpoConfig {
                gradient_checkpointing: ck,
                ..config()
            },
            3,
        )
    };
    let (plain, wp) = run(tsr_dpo::GradientCheckpointing::Off);
    // Whole layers recomputed, and selectively (the MLP's products kept, attention recomputed).
    for mode in [
        tsr_dpo::GradientCheckpointing::On,
        tsr_dpo::GradientCheckpointing::Selective,
    ] {
        let (ck, wc) = run(mode);
        assert_eq!(plain.0.len(), 4);
        for (a, b) in plain.0.iter().zip(&ck.0) {
            assert!(
                (a.loss - b.loss).abs() <= 1e-6,
                "{mode:?}: {} vs {}",
                a.loss,
                b.loss
            );
            assert!((a.grad_norm - b.grad_norm).abs() <= 1e-5 * a.grad_norm.max(1.0));
        }
        for ((name, a), (_, b)) in wp.iter().zip(&wc) {
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d <= 1e-5, "{mode:?}: {name} differs by {d:e}");
        }
    }
    // `auto` is off for a model this small.
    let (auto, wa) = run(tsr_dpo::GradientCheckpointing::Auto);
    assert_eq!(
        plain.0.iter().map(|m| m.loss).collect::<Vec<_>>(),
        auto.0.iter().map(|m| m.loss).collect::<Vec<_>>()
    );
    assert!(wp.iter().zip(&wa).all(|((_, a), (_, b))| a.equal(b)));
}

#[test]
fn a_shared_prompt_gives_the_padded_log_probs() {
    // One row per pair (prompt once, then both completions) against chosen and rejected as
    // separate padded rows: the same completion log-probs and hidden-state gradients.
    let model = tiny_model(4);
    let data = pairs(5);
    let sel = [4, 1, 2];
    let c = ChunkedLogProbs::new(3).unwrap();
    let w = model.lm_head_weight();
    let padded = collate(&data, &sel, 0, Device::Cpu).unwrap();
    let hp = model
        .hidden_states(&padded.input_ids, &padded.attention_mask, false)
        .unwrap();
    let pos = ScoredPositions::new(&padded.input_ids, &padded.completion_mask).unwrap();
    let lp = c.forward(&hp, &w, &pos).unwrap();
    let branched = collate_branched(&data, &sel, 0, Device::Cpu)
        .unwrap()
        .expect("the pairs share their prompts");
    assert_eq!(branched.input_ids.size()[0], 3);
    assert_eq!(branched.real_tokens, padded.real_tokens);
    assert!(branched.completion_tokens.equal(&padded.completion_tokens));
    let hb = model
        .hidden_states_branched(
            &branched.input_ids,
            &branched.positions,
            &branched.segment_ids,
            false,
        )
        .unwrap();
    let lb = c.forward(&hb, &w, &branched.scored).unwrap();
    let d = (&lp - &lb).abs().max().double_value(&[]);
    assert!(d < 1e-5, "log-probs differ by {d:e}: {lp:?} vs {lb:?}");
    // Pairs whose prompts differ keep the padded layout.
    let mut odd = data.clone();
    odd[1].rejected.ids[0] += 1;
    assert!(collate_branched(&odd, &sel, 0, Device::Cpu)
        .unwrap()
        .is_none());
}

#[test]
fn shared_prompt_training_equals_padded_training() {
    // `share_prompt` changes the layout, not the arithmetic: same losses and weights (dropout
    // off), checkpointed or not.
    let _rng = rng_lock();
    let run = |share: tsr_dpo::PromptSharing, ck: tsr_dpo::GradientCheckpointing| {
        train_without_dropout(
            DpoConfig {
                share_prompt: share,
                gradient_checkpointing: ck,
                ..config()
            },
            3,
        )
    };
    use tsr_dpo::GradientCheckpointing as Ck;
    use tsr_dpo::PromptSharing as Share;
    let (padded, wp) = run(Share::Off, Ck::Off);
    for ck in [Ck::Off, Ck::On, Ck::Selective] {
        let (shared, ws) = run(Share::On, ck);
        assert_eq!(padded.0.len(), shared.0.len());
        for (a, b) in padded.0.iter().zip(&shared.0) {
            assert!(
                (a.loss - b.loss).abs() <= 1e-5,
                "{ck:?}: {} vs {}",
                a.loss,
                b.loss
            );
            assert!(
                (a.grad_norm - b.grad_norm).abs() <= 1e-4 * a.grad_norm.max(1.0),
                "{ck:?}: grad norm {} vs {}",
                a.grad_norm,
                b.grad_norm
            );
        }
        for ((name, a), (_, b)) in wp.iter().zip(&ws) {
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d <= 1e-5, "{ck:?}: {name} differs by {d:e}");
        }
    }
}
