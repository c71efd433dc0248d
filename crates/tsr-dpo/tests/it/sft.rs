//! The SFT trainer on a tiny random Llama: loss against a naive cross-entropy, packing,
//! accumulation, freezing, seeding and resume.

use tch::{Kind, Tensor};
use tsr_dpo::sft::{make_rows, SftRow, SftTrainer, TokenizedExample};
use tsr_dpo::{DpoError, SftConfig, VecSink};
use tsr_model::Model;

use crate::trainer::{rng_lock, tiny_model, weights};

/// Examples of 4..=9 tokens whose last 1..=3 tokens are learned.
fn examples(n: usize) -> Vec<TokenizedExample> {
    (0..n)
        .map(|i| {
            let len = 4 + i % 6;
            let learned = 1 + i % 3;
            TokenizedExample {
                index: i,
                ids: (0..len)
                    .map(|k| ((5 + 3 * i + 7 * k) % 40) as u32)
                    .collect(),
                labels: (0..len).map(|k| k >= len - learned).collect(),
            }
        })
        .collect()
}

fn config() -> SftConfig {
    SftConfig {
        learning_rate: 1e-2,
        warmup_steps: 1,
        weight_decay: 0.01,
        batch_size: 2,
        gradient_accumulation_steps: 2,
        max_steps: Some(4),
        dropout: 0.1,
        logprob_chunk_tokens: 3,
        bucket_window: 2,
        seed: 9,
        checkpoint_every: 0,
        ..SftConfig::default()
    }
}

fn train(model: &mut Model, cfg: &SftConfig, rows: Vec<SftRow>) -> VecSink<tsr_dpo::SftMetrics> {
    let mut sink = VecSink::default();
    SftTrainer::new(model, cfg.validate().unwrap(), rows, 0)
        .unwrap()
        .run(&mut sink, None, |_, _| {})
        .unwrap();
    sink
}

/// Mean cross-entropy over the learned tokens, with full logits (one example at a time).
fn naive_loss(model: &Model, exs: &[TokenizedExample]) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for e in exs {
        let ids =
            Tensor::from_slice(&e.ids.iter().map(|&x| x as i64).collect::<Vec<_>>()).unsqueeze(0);
        let logits = tch::no_grad(|| model.logits(&ids, &ids.ones_like(), false)).unwrap();
        let lp = logits.log_softmax(-1, Kind::Double);
        for t in 1..e.ids.len() {
            if e.labels[t] {
                sum -= lp.double_value(&[0, t as i64 - 1, e.ids[t] as i64]);
                n += 1;
            }
        }
    }
    sum / n as f64
}

#[test]
fn first_step_loss_is_the_mean_cross_entropy_packed_or_not_and_however_split() {
    let _rng = rng_lock();
    let exs = examples(4);
    let want = naive_loss(&tiny_model(1), &exs);
    let base = SftConfig {
        dropout: 0.0,
        max_steps: Some(1),
        max_length: 16,
        ..config()
    };
    let mut finals = Vec::new();
    for (packing, batch_size, accum) in [(false, 2, 2), (false, 4, 1), (false, 1, 4), (true, 2, 1)]
    {
        let cfg = SftConfig {
            packing,
            batch_size,
            gradient_accumulation_steps: accum,
            ..base.clone()
        };
        let rows = make_rows(&exs, packing.then_some(16));
        if packing {
            assert!(rows.len() < exs.len(), "nothing was packed");
        }
        let mut m = tiny_model(1);
        let s = train(&mut m, &cfg, rows);
        let got = &s.0[0];
        assert!(
            (got.loss - want).abs() < 1e-5 * want,
            "packing {packing}, {batch_size}x{accum}: {} vs {want}",
            got.loss
        );
        assert_eq!(got.learned_tokens, 1 + 2 + 3 + 1);
        finals.push(weights(&m));
    }
    // The update does not depend on how the step is split or packed (up to rounding).
    for other in &finals[1..] {
        for ((n, a), (_, b)) in finals[0].iter().zip(other) {
            assert!(a.allclose(b, 1e-4, 1e-6, false), "{n}");
        }
    }
}

#[test]
fn resumed_sft_equals_uninterrupted_and_seeds_matter() {
    let _rng = rng_lock();
    for packing in [false, true] {
        let cfg = SftConfig {
            packing,
            max_length: 12,
            ..config()
        };
        let rows = make_rows(&examples(9), packing.then_some(12));
        let mut m0 = tiny_model(3);
        let straight = train(&mut m0, &cfg, rows.clone());
        assert_eq!(straight.0.len(), 4);

        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("ck");
        let mut m1 = tiny_model(3);
        let mut first = Vec::new();
        {
            let mut t = SftTrainer::new(&mut m1, cfg.validate().unwrap(), rows.clone(), 0).unwrap();
            first.push(t.step().unwrap().unwrap());
            first.push(t.step().unwrap().unwrap());
            t.save_checkpoint(&ck).unwrap();
        }
        let mut m2 = tiny_model(77); // different init: everything must come from the checkpoint
        let mut second = VecSink::default();
        {
            let mut t = SftTrainer::new(&mut m2, cfg.validate().unwrap(), rows.clone(), 0).unwrap();
            t.load_checkpoint(&ck).unwrap();
            assert_eq!(t.steps_done(), 2);
            t.run(&mut second, None, |_, _| {}).unwrap();
        }
        for ((na, a), (_, b)) in weights(&m0).iter().zip(weights(&m2).iter()) {
            assert!(a.equal(b), "{na} differs after resume (packing {packing})");
        }
        let resumed: Vec<_> = first
            .iter()
            .chain(&second.0)
            .map(|m| (m.loss, m.num_tokens))
            .collect();
        let want: Vec<_> = straight.0.iter().map(|m| (m.loss, m.num_tokens)).collect();
        assert_eq!(want, resumed);

        // Same seed, same run; another seed, another data order and dropout.
        let mut again = tiny_model(3);
        train(&mut again, &cfg, rows.clone());
        let mut other = tiny_model(3);
        train(
            &mut other,
            &SftConfig {
                seed: 10,
                ..cfg.clone()
            },
            rows,
        );
        let same = |x: &Model| {
            weights(&m0)
                .iter()
                .zip(weights(x).iter())
                .all(|(a, b)| a.1.equal(&b.1))
        };
        assert!(same(&again));
        assert!(!same(&other));
    }
}

#[test]
fn training_lowers_the_loss_and_last_layers_training_freezes_the_rest() {
    let _rng = rng_lock();
    let exs = examples(6);
    let cfg = SftConfig {
        dropout: 0.0,
        max_steps: Some(15),
        warmup_steps: 0,
        learning_rate: 2e-2,
        ..config()
    };
    let mut m = tiny_model(5);
    let before = naive_loss(&m, &exs);
    let s = train(&mut m, &cfg, make_rows(&exs, None));
    let after = naive_loss(&m, &exs);
    assert!(after < before - 0.5, "loss {before} -> {after}");
    assert!(s.0.last().unwrap().mean_token_accuracy > s.0[0].mean_token_accuracy);

    let mut m = tiny_model(5);
    let w0 = weights(&m);
    let frozen_cfg = SftConfig {
        train_last_layers: Some(1),
        ..cfg
    };
    {
        let t = SftTrainer::new(
            &mut m,
            frozen_cfg.validate().unwrap(),
            make_rows(&exs, None),
            0,
        )
        .unwrap();
        // layer 1 (9 tensors) and the final norm; the tied embedding/LM head stays frozen.
        assert_eq!(t.trained_tensors(), 10);
    }
    train(&mut m, &frozen_cfg, make_rows(&exs, None));
    for ((name, a), (_, b)) in w0.iter().zip(weights(&m).iter()) {
        let trained = name.starts_with("model.layers.1.") || name == "model.norm.weight";
        assert_eq!(!a.equal(b), trained, "{name}");
    }
    // Dropping the trainer made every parameter trainable again.
    assert!(m
        .var_store()
        .variables()
        .values()
        .all(Tensor::requires_grad));
}

#[test]
fn bad_rows_and_checkpoints_are_refused() {
    let _rng = rng_lock();
    let cfg = config().validate().unwrap();
    let mut m = tiny_model(4);
    let mut rows = make_rows(&examples(3), None);
    assert!(matches!(
        SftTrainer::new(&mut m, cfg.clone(), Vec::new(), 0),
        Err(DpoError::Data { .. })
    ));
    let mut bad = rows.clone();
    bad[1].labels.iter_mut().for_each(|l| *l = false);
    assert!(matches!(
        SftTrainer::new(&mut m, cfg.clone(), bad, 0),
        Err(DpoError::Shape(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    SftTrainer::new(&mut m, cfg.clone(), rows.clone(), 0)
        .unwrap()
        .save_checkpoint(&ck)
        .unwrap();
    let other = SftConfig {
        learning_rate: 0.5,
        ..config()
    }
    .validate()
    .unwrap();
    let e = SftTrainer::new(&mut m, other, rows.clone(), 0)
        .unwrap()
        .load_checkpoint(&ck)
        .unwrap_err();
    assert!(e.to_string().contains("configuration"), "{e}");
    rows.pop();
    let e = SftTrainer::new(&mut m, cfg, rows, 0)
        .unwrap()
        .load_checkpoint(&ck)
        .unwrap_err();
    assert!(e.to_string().contains("other data"), "{e}");
}

#[test]
fn checkpointed_sft_equals_plain_sft_packed_or_frozen() {
    // Activation checkpointing: same losses and weights as the plain pass, for packed rows and
    // with the lower layers frozen (the backward walk stops at the lowest trained layer).
    let _rng = rng_lock();
    let exs = examples(6);
    for (packing, last) in [(false, None), (true, None), (false, Some(1))] {
        let run = |ck: tsr_dpo::GradientCheckpointing| {
            let cfg = SftConfig {
                dropout: 0.0,
                packing,
                max_length: 16,
                train_last_layers: last,
                gradient_checkpointing: ck,
                ..config()
            };
            let mut m = tiny_model(5);
            let rows = make_rows(&exs, packing.then_some(16));
            let s = train(&mut m, &cfg, rows);
            (s, weights(&m))
        };
        let (plain, wp) = run(tsr_dpo::GradientCheckpointing::Off);
        for mode in [
            tsr_dpo::GradientCheckpointing::On,
            tsr_dpo::GradientCheckpointing::Selective,
        ] {
            let (ck, wc) = run(mode);
            for (a, b) in plain.0.iter().zip(&ck.0) {
                assert!(
                    (a.loss - b.loss).abs() <= 1e-6,
                    "{mode:?} {packing} {last:?}: {} vs {}",
                    a.loss,
                    b.loss
                );
            }
            for ((name, a), (_, b)) in wp.iter().zip(&wc) {
                let d = (a - b).abs().max().double_value(&[]);
                assert!(
                    d <= 1e-5,
                    "{mode:?} {packing} {last:?}: {name} differs by {d:e}"
                );
            }
        }
    }
}
