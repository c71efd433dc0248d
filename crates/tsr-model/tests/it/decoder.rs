//! Forward paths against transformers' logits.

use tsr_model::{hf, Device, Kind, LoadOptions, Model, ModelConfig, Tensor};

use crate::{expected, fixture_dir, load, max_diff_real, rng_lock, CASES};

const TOL: f64 = 1e-4;

#[test]
fn full_forward_matches_transformers() {
    for case in CASES {
        let model = load(case);
        let e = expected(case);
        let logits = tch::no_grad(|| model.logits(&e.input_ids, &e.attention_mask, false)).unwrap();
        assert_eq!(logits.size(), e.logits.size(), "{case}");
        let diff = max_diff_real(&logits, &e.logits, &e.attention_mask);
        assert!(diff <= TOL, "{case}: max abs diff {diff:e}");
    }
}

/// Decodes the fixture batch with the KV cache: a prefill of `prefill` columns, then one column
/// at a time. Returns logits `[B, T, V]`.
fn decode_cached(model: &Model, ids: &Tensor, mask: &Tensor, pos: &Tensor, prefill: i64) -> Tensor {
    let (b, t) = (ids.size()[0], ids.size()[1]);
    let mut cache = model.new_cache(b as usize);
    let mut outs = Vec::new();
    let mut start = 0;
    while start < t {
        let s = if start == 0 { prefill } else { 1 };
        let h = model
            .forward_cached(
                &ids.narrow(1, start, s),
                &pos.narrow(1, start, s),
                &mask.narrow(1, 0, start + s),
                &mut cache,
            )
            .unwrap();
        outs.push(model.lm_head(&h));
        start += s;
        assert_eq!(cache.len() as i64, start);
    }
    Tensor::cat(&outs, 1)
}

#[test]
fn cached_decoding_matches_transformers_and_full_forward() {
    for case in CASES {
        let model = load(case);
        let e = expected(case);
        let full = tch::no_grad(|| model.logits(&e.input_ids, &e.attention_mask, false)).unwrap();
        for prefill in [1, 5] {
            let cached = decode_cached(
                &model,
                &e.input_ids,
                &e.attention_mask,
                &e.position_ids,
                prefill,
            );
            let diff = max_diff_real(&cached, &e.logits, &e.attention_mask);
            assert!(
                diff <= TOL,
                "{case} prefill {prefill}: vs transformers {diff:e}"
            );
            let diff = max_diff_real(&cached, &full, &e.attention_mask);
            assert!(
                diff <= TOL,
                "{case} prefill {prefill}: vs full forward {diff:e}"
            );
        }
    }
}

/// Weight-only reduced precision (`Model::set_weight_dtype`: fused q/k/v and gate/up products,
/// grouped-query attention against the cache) decodes each architecture's fixture batch one row
/// at a time within a rounding tolerance of the f32 logits (logits up to about 5 in size; where a
/// mixed-up head or projection moves them by about 1). Measured 2026-12-04: bf16 0.040-0.079,
/// f16 (FBGEMM's packed kernels on x86) 0.0030-0.0045. Qwen2's case covers the q/k/v biases.
#[test]
fn reduced_weight_decoding_stays_close_to_f32() {
    for (kind, tol) in [(Kind::BFloat16, 0.12), (Kind::Half, 0.01)] {
        for case in CASES {
            let model = load(case);
            let mut reduced = load(case);
            reduced.set_weight_dtype(kind).unwrap();
            let e = expected(case);
            // One row at a time, so each decoding step is a product of one row (the fused path).
            for row in 0..e.input_ids.size()[0] {
                let one = |t: &Tensor| t.narrow(0, row, 1);
                let (ids, mask, pos) = (
                    one(&e.input_ids),
                    one(&e.attention_mask),
                    one(&e.position_ids),
                );
                let f32 = tch::no_grad(|| decode_cached(&model, &ids, &mask, &pos, 1));
                let low = tch::no_grad(|| decode_cached(&reduced, &ids, &mask, &pos, 1));
                let diff = max_diff_real(&low, &f32, &mask);
                assert!(
                    diff > 0.0,
                    "{kind:?} {case} row {row}: the copies were not used"
                );
                assert!(diff <= tol, "{kind:?} {case} row {row}: vs f32 {diff:e}");
            }
        }
    }
}

/// Training never uses the reduced-precision copies: with them set, a one-row forward that
/// takes gradients gives the f32 model's loss and gradients exactly.
#[test]
fn reduced_weights_stay_out_of_training() {
    let case = "qwen2";
    let e = expected(case);
    let ids = e.input_ids.narrow(0, 0, 1).narrow(1, 0, 4);
    let mask = e.attention_mask.narrow(0, 0, 1).narrow(1, 0, 4);
    let grads = |kind: Option<Kind>| {
        let mut model = load(case);
        if let Some(kind) = kind {
            model.set_weight_dtype(kind).unwrap();
        }
        let loss = model.logits(&ids, &mask, false).unwrap().sum(Kind::Float);
        loss.backward();
        let (_, w) = model
            .var_store()
            .variables()
            .into_iter()
            .find(|(n, _)| n.ends_with("layers.0.self_attn.q_proj.weight"))
            .unwrap();
        (loss.double_value(&[]), w.grad())
    };
    let (loss, grad) = grads(None);
    for kind in [Kind::BFloat16, Kind::Half] {
        let (l, g) = grads(Some(kind));
        assert_eq!(l, loss, "{kind:?}");
        assert!(g.equal(&grad), "{kind:?}");
    }
}

#[test]
fn cache_index_select_reorders_and_repeats_rows() {
    for case in ["llama", "mistral_window"] {
        let model = load(case);
        let e = expected(case);
        let t = e.input_ids.size()[1];
        let split = 6;
        let mut cache = model.new_cache(3);
        let mut outs = Vec::new();
        let _ = model
            .forward_cached(
                &e.input_ids.narrow(1, 0, split),
                &e.position_ids.narrow(1, 0, split),
                &e.attention_mask.narrow(1, 0, split),
                &mut cache,
            )
            .unwrap();
        // New row i continues old row rows[i]: a reorder plus a repeated row.
        let rows = Tensor::from_slice(&[2i64, 0, 0, 1]);
        cache.index_select(&rows);
        assert_eq!(cache.batch_size(), 4);
        let ids = e.input_ids.index_select(0, &rows);
        let mask = e.attention_mask.index_select(0, &rows);
        let pos = e.position_ids.index_select(0, &rows);
        for start in split..t {
            let h = model
                .forward_cached(
                    &ids.narrow(1, start, 1),
                    &pos.narrow(1, start, 1),
                    &mask.narrow(1, 0, start + 1),
                    &mut cache,
                )
                .unwrap();
            outs.push(model.lm_head(&h));
        }
        let got = Tensor::cat(&outs, 1);
        let want = e.logits.index_select(0, &rows).narrow(1, split, t - split);
        let diff = max_diff_real(&got, &want, &mask.narrow(1, split, t - split));
        assert!(diff <= TOL, "{case}: {diff:e}");
    }
}

#[test]
fn right_padding_gives_the_same_logits_as_left_padding() {
    for case in CASES {
        let model = load(case);
        let e = expected(case);
        let (b, t) = (e.input_ids.size()[0], e.input_ids.size()[1]);
        let ids = e.input_ids.zeros_like();
        let mask = e.attention_mask.zeros_like();
        let want = e.logits.zeros_like();
        for r in 0..b {
            let pad = t - e.attention_mask.get(r).sum(Kind::Int64).int64_value(&[]);
            let n = t - pad;
            ids.get(r)
                .narrow(0, 0, n)
                .copy_(&e.input_ids.get(r).narrow(0, pad, n));
            let _ = mask.get(r).narrow(0, 0, n).fill_(1);
            want.get(r)
                .narrow(0, 0, n)
                .copy_(&e.logits.get(r).narrow(0, pad, n));
        }
        let got = tch::no_grad(|| model.logits(&ids, &mask, false)).unwrap();
        let diff = max_diff_real(&got, &want, &mask);
        assert!(diff <= TOL, "{case}: {diff:e}");
    }
}

#[test]
fn half_precision_kinds_stay_close_to_f32() {
    for (kind, tol) in [(Kind::BFloat16, 0.25), (Kind::Half, 0.05)] {
        for case in ["llama", "qwen2"] {
            let opts = LoadOptions {
                device: Device::Cpu,
                kind,
            };
            let model = hf::load_model_dir(&fixture_dir(case), &opts).unwrap();
            assert_eq!(model.kind(), kind);
            let e = expected(case);
            let logits =
                tch::no_grad(|| model.logits(&e.input_ids, &e.attention_mask, false)).unwrap();
            assert_eq!(logits.kind(), kind);
            let diff = max_diff_real(&logits, &e.logits, &e.attention_mask);
            assert!(diff <= tol, "{case} {kind:?}: {diff}");
        }
    }
}

#[test]
fn gradients_flow_to_all_parameters_through_hidden_states() {
    let model = load("qwen2");
    let e = expected("qwen2");
    let h = model
        .hidden_states(&e.input_ids, &e.attention_mask, true)
        .unwrap();
    (h * e.attention_mask.unsqueeze(-1))
        .pow_tensor_scalar(2)
        .sum(Kind::Float)
        .backward();
    let vars = model.var_store().variables();
    assert!(!vars.is_empty());
    for (name, var) in vars {
        if name == "lm_head.weight" {
            continue; // not part of the hidden states
        }
        let g = var.grad();
        assert!(g.defined(), "{name} has no gradient");
        assert!(
            g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{name} has a zero gradient"
        );
    }
}

#[test]
fn dropout_applies_only_in_training() {
    let _rng = rng_lock();
    let mut model = load("llama");
    let e = expected("llama");
    model.set_dropout(0.5);
    let eval = tch::no_grad(|| model.logits(&e.input_ids, &e.attention_mask, false)).unwrap();
    assert!(max_diff_real(&eval, &e.logits, &e.attention_mask) <= TOL);
    let train = tch::no_grad(|| model.logits(&e.input_ids, &e.attention_mask, true)).unwrap();
    assert!(max_diff_real(&train, &e.logits, &e.attention_mask) > 1e-2);
}

#[test]
fn random_models_are_reproducible_per_seed() {
    let _rng = rng_lock();
    let config = load("llama").config().clone();
    let opts = LoadOptions::default();
    let a = Model::random(config.clone(), 7, &opts).unwrap();
    let b = Model::random(config.clone(), 7, &opts).unwrap();
    let c = Model::random(config, 8, &opts).unwrap();
    let w = |m: &Model| m.var_store().variables()["model.layers.1.mlp.up_proj.weight"].copy();
    assert!(w(&a).equal(&w(&b)));
    assert!(!w(&a).equal(&w(&c)));
}

#[test]
fn tied_models_share_the_embedding() {
    let model = load("llama3_rope");
    assert!(model.config().tie_word_embeddings);
    assert!(model.lm_head_weight().equal(&model.embed_weight()));
    assert!(!model.var_store().variables().contains_key("lm_head.weight"));
    let untied = load("llama");
    assert!(!untied.lm_head_weight().equal(&untied.embed_weight()));
}

#[test]
fn parameter_count_matches_the_config() {
    for case in CASES {
        let model = load(case);
        let n: i64 = model
            .var_store()
            .variables()
            .values()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(n as usize, model.config().num_parameters(), "{case}");
    }
}

#[test]
fn config_round_trips_through_json() {
    for case in CASES {
        let c = ModelConfig::from_file(&fixture_dir(case).join("config.json")).unwrap();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(ModelConfig::from_json_str(&text).unwrap(), c);
    }
}

#[test]
fn packed_rows_equal_their_sequences_run_alone() {
    for case in CASES {
        let model = load(case);
        let v = model.config().vocab_size as i64;
        // Two sequences of 5 and 4 tokens packed in one row of 11 (2 padding slots).
        let a: Vec<i64> = (0..5).map(|k| (3 + 7 * k) % v).collect();
        let b: Vec<i64> = (0..4).map(|k| (11 + 5 * k) % v).collect();
        let alone = |s: &[i64]| {
            let ids = Tensor::from_slice(s).unsqueeze(0);
            let mask = ids.ones_like();
            tch::no_grad(|| model.hidden_states(&ids, &mask, false)).unwrap()
        };
        let ids: Vec<i64> = a.iter().chain(&b).copied().chain([0, 0]).collect();
        let seg: Vec<i64> = [1; 5].into_iter().chain([2; 4]).chain([0; 2]).collect();
        let pos: Vec<i64> = (0..5).chain(0..4).chain([0, 0]).collect();
        let packed = tch::no_grad(|| {
            model.hidden_states_packed(
                &Tensor::from_slice(&ids).unsqueeze(0),
                &Tensor::from_slice(&pos).unsqueeze(0),
                &Tensor::from_slice(&seg).unsqueeze(0),
                false,
            )
        })
        .unwrap();
        let da = (packed.narrow(1, 0, 5) - alone(&a))
            .abs()
            .max()
            .double_value(&[]);
        let db = (packed.narrow(1, 5, 4) - alone(&b))
            .abs()
            .max()
            .double_value(&[]);
        assert!(da < 1e-5 && db < 1e-5, "{case}: {da:e} {db:e}");
        // Attention crossing the boundary would change the second sequence.
        let plain = tch::no_grad(|| {
            let ids = Tensor::from_slice(&ids[..9]).unsqueeze(0);
            model.hidden_states(&ids, &ids.ones_like(), false)
        })
        .unwrap();
        let cross = (plain.narrow(1, 5, 4) - alone(&b))
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            cross > 1e-3,
            "{case}: packing without masks is indistinguishable"
        );
    }
}

#[test]
fn branched_rows_equal_prefix_and_continuation_run_alone() {
    for case in CASES {
        let model = load(case);
        let v = model.config().vocab_size as i64;
        // A prefix of 4 tokens continued by 3 and by 2 tokens, in one row of 10 (1 padding).
        let p: Vec<i64> = (0..4).map(|k| (5 + 3 * k) % v).collect();
        let c: Vec<i64> = (0..3).map(|k| (17 + 7 * k) % v).collect();
        let r: Vec<i64> = (0..2).map(|k| (29 + 11 * k) % v).collect();
        let alone = |s: Vec<i64>| {
            let ids = Tensor::from_slice(&s).unsqueeze(0);
            tch::no_grad(|| model.hidden_states(&ids, &ids.ones_like(), false)).unwrap()
        };
        let ids: Vec<i64> = p.iter().chain(&c).chain(&r).copied().chain([0]).collect();
        let seg: Vec<i64> = [1; 4]
            .into_iter()
            .chain([2; 3])
            .chain([3; 2])
            .chain([0])
            .collect();
        let pos: Vec<i64> = (0..7).chain(4..6).chain([0]).collect();
        let row = |v: &[i64]| Tensor::from_slice(v).unsqueeze(0);
        let out = tch::no_grad(|| {
            model.hidden_states_branched(&row(&ids), &row(&pos), &row(&seg), false)
        });
        if case == "mistral_window" {
            // Its 4-token window is shorter than the row: refused, not silently wrong.
            let e = out.unwrap_err().to_string();
            assert!(e.contains("sliding"), "{e}");
            continue;
        }
        let out = out.unwrap();
        let with_c = alone(p.iter().chain(&c).copied().collect());
        let with_r = alone(p.iter().chain(&r).copied().collect());
        let diff = |a: Tensor, b: Tensor| (a - b).abs().max().double_value(&[]);
        let dp = diff(out.narrow(1, 0, 4), with_c.narrow(1, 0, 4));
        let dc = diff(out.narrow(1, 4, 3), with_c.narrow(1, 4, 3));
        let dr = diff(out.narrow(1, 7, 2), with_r.narrow(1, 4, 2));
        assert!(
            dp < 1e-5 && dc < 1e-5 && dr < 1e-5,
            "{case}: {dp:e} {dc:e} {dr:e}"
        );
        // Without the branch structure, the second continuation would see the first.
        let packed = tch::no_grad(|| {
            let seg: Vec<i64> = [1; 9].into_iter().chain([0]).collect();
            model.hidden_states_branched(&row(&ids), &row(&pos), &row(&seg), false)
        })
        .unwrap();
        assert!(
            diff(packed.narrow(1, 7, 2), with_r.narrow(1, 4, 2)) > 1e-3,
            "{case}"
        );
    }
}
