//! Activation checkpointing: the checkpointed forward and backward give the plain pass's hidden
//! states and parameter gradients (every parity case: tied and untied heads, GQA, sliding window,
//! padded and packed rows), recomputing whole layers or only their attention half (selective).

use tsr_model::{Kind, Model, Recompute, Tensor};

const MODES: [Recompute; 2] = [Recompute::Layers, Recompute::Attention];

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

/// Releases every gradient (as the trainers' optimizer does after a step), so a selective
/// checkpoint finds the room of the gradients free.
fn zero_grads(model: &Model) {
    for (_, v) in model.var_store().variables() {
        tsr_model::autograd::clear_grad(&v);
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
    for (case, mode) in CASES.iter().flat_map(|c| MODES.map(|m| (*c, m))) {
        let model = load(case);
        let e = expected(case);
        compare(
            &model,
            |ck| {
                if ck {
                    let (h, c) = model
                        .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true, mode)
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
            &format!("{case}, {mode:?}"),
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
    for mode in MODES {
        compare(
            &model,
            |ck| {
                if ck {
                    let (h, c) = model
                        .hidden_states_packed_checkpointed(&ids, &pos, &seg, true, mode)
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
            &format!("packed, {mode:?}"),
        );
    }
}

#[test]
fn selective_checkpointing_keeps_the_mlp_products_and_recomputes_lora_layers_whole() {
    let mut model = load("llama");
    let e = expected("llama");
    let layers = model.config().num_hidden_layers;
    let kept = |model: &Model, mode| {
        let (_h, c) = model
            .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true, mode)
            .unwrap();
        c.layers_with_mlp_kept()
    };
    assert_eq!(kept(&model, Recompute::Layers), 0);
    assert_eq!(kept(&model, Recompute::Attention), layers);
    // Where the gradients already exist (a later micro-batch of an accumulated step), keeping the
    // products would add to the peak: none are kept.
    let (h, c) = model
        .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true, Recompute::Layers)
        .unwrap();
    loss(&h, &e.attention_mask, &weights_like(&h)).backward();
    model.backward_checkpointed(c).unwrap();
    assert_eq!(kept(&model, Recompute::Attention), 0);
    zero_grads(&model);
    // LoRA on the MLP: those layers are recomputed whole (their gradients are autograd's), and
    // the adapters' gradients still equal the plain pass's.
    model
        .add_lora(
            &tsr_model::LoraConfig {
                r: 4,
                alpha: 8.0,
                targets: vec!["up_proj".into(), "q_proj".into()],
            },
            5,
        )
        .unwrap();
    assert_eq!(kept(&model, Recompute::Attention), 0);
    compare_lora(&model, &e);
}

#[test]
fn selective_checkpointing_keeps_what_the_pending_gradients_hold_from_the_top_layer_down() {
    // The llama fixture: 2 layers of 36,992 parameters, so the pending gradients hold 73,984
    // floats, less the LM head's 256 x 64 reserve: 57,600; a layer's gate and up products are
    // 2 x 128 floats a token. 4 x 48 tokens need 49,152 floats a layer: one layer fits, the top
    // one, and the gradients still equal the plain pass's (one layer by hand, one recomputed
    // whole).
    let model = load("llama");
    let v = model.config().vocab_size as i64;
    let per_layer_params: i64 = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(n, _)| n.starts_with("model.layers.0."))
        .map(|(_, t)| t.numel() as i64)
        .sum();
    assert_eq!(per_layer_params, 36_992);
    for (rows, kept) in [(1i64, 2usize), (4, 1), (9, 0)] {
        let ids = (Tensor::arange(rows * 48, (Kind::Int64, tch::Device::Cpu)) * 7)
            .remainder(v)
            .reshape([rows, 48]);
        let mask = ids.ones_like();
        zero_grads(&model);
        let (_h, c) = model
            .hidden_states_checkpointed(&ids, &mask, true, Recompute::Attention)
            .unwrap();
        assert_eq!(c.layers_with_mlp_kept(), kept, "{rows} rows");
        drop(c);
        compare(
            &model,
            |ck| {
                if ck {
                    let (h, c) = model
                        .hidden_states_checkpointed(&ids, &mask, true, Recompute::Attention)
                        .unwrap();
                    (h, Some(c))
                } else {
                    (model.hidden_states(&ids, &mask, true).unwrap(), None)
                }
            },
            &mask,
            &format!("{rows} rows of 48"),
        );
    }
}

/// [`compare`] for a model whose only trainable tensors are LoRA adapters.
fn compare_lora(model: &Model, e: &crate::Expected) {
    let trainable = |model: &Model| -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, t)| {
                let g = t.grad();
                (
                    n,
                    if g.defined() {
                        g.copy()
                    } else {
                        t.zeros_like()
                    },
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let h = model
        .hidden_states(&e.input_ids, &e.attention_mask, true)
        .unwrap();
    let r = weights_like(&h);
    zero_grads(model);
    loss(&h, &e.attention_mask, &r).backward();
    let plain = trainable(model);
    zero_grads(model);
    let (h, c) = model
        .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true, Recompute::Attention)
        .unwrap();
    loss(&h, &e.attention_mask, &r).backward();
    model.backward_checkpointed(c).unwrap();
    let ck = trainable(model);
    assert!(!plain.is_empty());
    for ((name, a), (_, b)) in plain.iter().zip(&ck) {
        let scale = a.abs().max().double_value(&[]).max(1.0);
        assert!(max_diff(a, b) <= 1e-5 * scale, "{name}");
    }
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
    let run_mode = |model: &Model, mode| {
        zero_grads(model);
        tch::manual_seed(11);
        let (h, c) = model
            .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true, mode)
            .unwrap();
        // The recomputation replays the forward's dropout exactly.
        assert_eq!(c.recompute_error(model).unwrap(), 0.0);
        let r = h.ones_like();
        loss(&h, &e.attention_mask, &r).backward();
        model.backward_checkpointed(c).unwrap();
        grads(model)
    };
    let run = |model: &Model| run_mode(model, Recompute::Layers);
    let a = run(&model);
    let b = run(&model);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(max_diff(x, y), 0.0, "{name}: a second seeded pass differs");
    }
    // Recomputing only the attention replays the same draws: the same gradients as recomputing
    // whole layers (the MLP has no dropout), up to the order of the MLP's products.
    let s = run_mode(&model, Recompute::Attention);
    for ((name, x), (_, y)) in a.iter().zip(&s) {
        let scale = x.abs().max().double_value(&[]).max(1.0);
        assert!(max_diff(x, y) <= 1e-5 * scale, "{name}: selective differs");
    }
    // The diagnostic does see a recomputation that differs: change a weight after the forward.
    tch::manual_seed(11);
    let (_, c) = model
        .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true, Recompute::Layers)
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
    for mode in MODES {
        let (_h, c) = model
            .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true, mode)
            .unwrap();
        let err = model.backward_checkpointed(c).unwrap_err();
        assert!(err.to_string().contains("received no gradient"), "{err}");
    }
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
    for mode in MODES {
        compare_frozen(&model, &e, mode);
    }
    for t in &frozen {
        let _ = t.set_requires_grad(true);
    }
}

fn compare_frozen(model: &Model, e: &crate::Expected, mode: Recompute) {
    let h = model
        .hidden_states(&e.input_ids, &e.attention_mask, true)
        .unwrap();
    let r = weights_like(&h);
    zero_grads(model);
    loss(&h, &e.attention_mask, &r).backward();
    let plain = grads(model);
    zero_grads(model);
    let (h, c) = model
        .hidden_states_checkpointed(&e.input_ids, &e.attention_mask, true, mode)
        .unwrap();
    loss(&h, &e.attention_mask, &r).backward();
    model.backward_checkpointed(c).unwrap();
    let ck = grads(model);
    for ((name, a), (_, b)) in plain.iter().zip(&ck) {
        let scale = a.abs().max().double_value(&[]).max(1.0);
        assert!(max_diff(a, b) <= 1e-5 * scale, "{name}, {mode:?}");
        let frozen = name == "model.embed_tokens.weight" || name.starts_with("model.layers.0.");
        let zero = b.abs().sum(Kind::Float).double_value(&[]) == 0.0;
        assert_eq!(zero, frozen || name == "lm_head.weight", "{name}");
    }
}
