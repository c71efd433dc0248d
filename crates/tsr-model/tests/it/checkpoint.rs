//! Activation checkpointing: the checkpointed forward and backward give the plain pass's hidden
//! states and parameter gradients (every parity case: tied and untied heads, GQA, sliding window,
//! padded and packed rows).

use tsr_model::{Kind, Model, Tensor};

use crate::{expected, load, rng_lock, CASES};

/// A loss that reads every real position: `Σ mask · (h · r)²` with a fixed random `r`.
fn loss(h: &Tensor, mask: &Tensor, r: &Tensor) -> Tensor {
    ((h * r).pow_tensor_scalar(2) * mask.unsqueeze(-1).to_kind(h.kind())).sum(Kind::Float)
}

/// Fixed, varied loss weights of `h`'s shape (no draw from the shared generator).
fn weights_like(h: &Tensor) -> Tensor {
    Tensor::arange(h.numel() as i64, (Kind::Float, h.device()))
        .sin()
        .reshape(h.size())
}

fn grads(model: &Model) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, v)| {
            let g = v.grad();
            let g = if g.defined() {
                g.copy()
            } else {
                v.zeros_like()
            };
            (n, g)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn zero_grads(model: &Model) {
    for (_, mut v) in model.var_store().variables() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
        let _ = &mut v;
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Plain and checkpointed passes on the same inputs: hidden states, loss and every gradient.
fn compare(
    model: &Model,
    run: impl Fn(bool) -> (Tensor, Option<tsr_model::model::Checkpoint>),
    mask: &Tensor,
    case: &str,
) {
    let (h_plain, none) = run(false);
    assert!(none.is_none());
    let r = weights_like(&h_plain);
    zero_grads(model);
    let l_plain = loss(&h_plain, mask, &r);
    l_plain.backward();
    let g_plain = grads(model);

    zero_grads(model);
    let (h_ck, ck) = run(true);
    let l_ck = loss(&h_ck, mask, &r);
    l_ck.backward();
    model.backward_checkpointed(ck.unwrap()).unwrap();
    let g_ck = grads(model);

    assert!(
        max_diff(&h_plain, &h_ck) <= 1e-6,
        "{case}: hidden states differ"
    );
    let (lp, lc) = (l_plain.double_value(&[]), l_ck.double_value(&[]));
    assert!(
        (lp - lc).abs() <= 1e-5 * lp.abs().max(1.0),
        "{case}: loss {lp} vs {lc}"
    );
    assert_eq!(g_plain.len(), g_ck.len());
    let mut nonzero = 0;
    for ((name, a), (_, b)) in g_plain.iter().zip(&g_ck) {
        let scale = a.abs().max().double_value(&[]).max(1.0);
        let d = max_diff(a, b);
        assert!(
            d <= 1e-5 * scale,
            "{case}: gradient of {name} differs by {d:e}"
        );
        if a.abs().sum(Kind::Float).double_value(&[]) > 0.0 {
            nonzero += 1;
        }
    }
    // Every parameter but an untied LM head (not part of the hidden states) gets a gradient.
    assert!(
        nonzero >= g_plain.len() - 1,
        "{case}: {nonzero} of {} gradients non-zero",
        g_plain.len()
    );
}

#[test]
fn checkpointed_gradients_equal_the_plain_pass() {
    for case in CASES {
        let model = load(case);
        let e = expected(case);
        compare(
            &model,
            |ck| {
                if ck {
                    let (h, c) = model
                        .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true)
                        .unwrap();
                    (h, Some(c))
                } else {
                    (
                        model
                            .hidden_states(&e.input_ids, &e.attention_mask, true)
                            .unwrap(),
                        None,
                    )
                }
            },
            &e.attention_mask,
            case,
        );
    }
}

#[test]
fn checkpointed_packed_rows_equal_the_plain_pass() {
    let model = load("qwen2");
    let v = model.config().vocab_size as i64;
    let ids: Vec<i64> = (0..11).map(|k| (5 + 13 * k) % v).collect();
    let seg: Vec<i64> = [1; 5].into_iter().chain([2; 4]).chain([0; 2]).collect();
    let pos: Vec<i64> = (0..5).chain(0..4).chain([0, 0]).collect();
    let (ids, pos, seg) = (
        Tensor::from_slice(&ids).unsqueeze(0),
        Tensor::from_slice(&pos).unsqueeze(0),
        Tensor::from_slice(&seg).unsqueeze(0),
    );
    let mask = seg.ne(0).to_kind(Kind::Int64);
    compare(
        &model,
        |ck| {
            if ck {
                let (h, c) = model
                    .hidden_states_packed_checkpointed(&ids, &pos, &seg, true)
                    .unwrap();
                (h, Some(c))
            } else {
                (
                    model.hidden_states_packed(&ids, &pos, &seg, true).unwrap(),
                    None,
                )
            }
        },
        &mask,
        "packed",
    );
}

#[test]
fn checkpointed_dropout_recomputes_the_same_draws() {
    // With dropout on, the recomputed layers must drop what the forward dropped; a second
    // checkpointed pass with the same seed reproduces the gradients exactly, and they differ from
    // the dropout-free ones (so dropout did act).
    let _rng = rng_lock();
    let mut model = load("llama");
    model.set_dropout(0.3);
    let e = expected("llama");
    let run = |model: &Model| {
        zero_grads(model);
        tch::manual_seed(11);
        let (h, c) = model
            .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true)
            .unwrap();
        // The recomputation replays the forward's dropout exactly.
        assert_eq!(c.recompute_error(model).unwrap(), 0.0);
        let r = h.ones_like();
        loss(&h, &e.attention_mask, &r).backward();
        model.backward_checkpointed(c).unwrap();
        grads(model)
    };
    let a = run(&model);
    let b = run(&model);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(max_diff(x, y), 0.0, "{name}: a second seeded pass differs");
    }
    // The diagnostic does see a recomputation that differs: change a weight after the forward.
    tch::manual_seed(11);
    let (_, c) = model
        .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true)
        .unwrap();
    let mut w = model.var_store().variables()["model.layers.1.mlp.up_proj.weight"].shallow_clone();
    tch::no_grad(|| {
        let _ = w.f_add_scalar_(0.01).unwrap();
    });
    assert!(c.recompute_error(&model).unwrap() > 1e-4);
    tch::no_grad(|| {
        let _ = w.f_sub_scalar_(0.01).unwrap();
    });
    // Different draws than without dropout.
    model.set_dropout(0.0);
    let c = run(&model);
    assert!(a
        .iter()
        .zip(&c)
        .any(|((_, x), (_, y))| max_diff(x, y) > 1e-6));
}

#[test]
fn backward_without_a_gradient_is_an_error() {
    let model = load("llama");
    let e = expected("llama");
    let (_h, c) = model
        .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true)
        .unwrap();
    let err = model.backward_checkpointed(c).unwrap_err();
    assert!(err.to_string().contains("received no gradient"), "{err}");
}

#[test]
fn frozen_lower_layers_are_skipped_and_the_rest_matches() {
    // SFT's `train_last_layers`: the embedding and layer 0 frozen.
    let model = load("qwen2");
    let e = expected("qwen2");
    let frozen: Vec<Tensor> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(n, _)| n == "model.embed_tokens.weight" || n.starts_with("model.layers.0."))
        .map(|(_, v)| v.set_requires_grad(false))
        .collect();
    assert!(frozen.len() > 5);
    compare_frozen(&model, &e);
    for t in &frozen {
        let _ = t.set_requires_grad(true);
    }
}

fn compare_frozen(model: &Model, e: &crate::Expected) {
    let h = model
        .hidden_states(&e.input_ids, &e.attention_mask, true)
        .unwrap();
    let r = weights_like(&h);
    zero_grads(model);
    loss(&h, &e.attention_mask, &r).backward();
    let plain = grads(model);
    zero_grads(model);
    let (h, c) = model
        .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true)
        .unwrap();
    loss(&h, &e.attention_mask, &r).backward();
    model.backward_checkpointed(c).unwrap();
    let ck = grads(model);
    for ((name, a), (_, b)) in plain.iter().zip(&ck) {
        let scale = a.abs().max().double_value(&[]).max(1.0);
        assert!(max_diff(a, b) <= 1e-5 * scale, "{name}");
        let frozen = name == "model.embed_tokens.weight" || name.starts_with("model.layers.0.");
        let zero = b.abs().sum(Kind::Float).double_value(&[]) == 0.0;
        assert_eq!(zero, frozen || name == "lm_head.weight", "{name}");
    }
}
