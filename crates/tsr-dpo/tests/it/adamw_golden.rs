//! `tsr_dpo::AdamW` + clipping against torch.optim.AdamW and clip_grad_norm_
//! (fixture written by `tests/fixtures/make_adamw_golden.py`).

use std::collections::BTreeMap;

use serde::Deserialize;
use tch::{Kind, Tensor};
use tsr_dpo::AdamW;

#[derive(Deserialize)]
struct Golden {
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    max_grad_norm: f64,
    lrs: Vec<f64>,
    init: BTreeMap<String, Vec<f64>>,
    shapes: BTreeMap<String, Vec<i64>>,
    grads: Vec<BTreeMap<String, Vec<f64>>>,
    grad_norms: Vec<f64>,
    #[serde(rename = "final")]
    final_: BTreeMap<String, Vec<f64>>,
}

#[test]
fn adamw_with_clipping_matches_torch() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/adamw_golden.json"
    ))
    .unwrap();
    let g: Golden = serde_json::from_str(&text).unwrap();
    let params: Vec<(String, Tensor)> = g
        .init
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Tensor::from_slice(v)
                    .reshape(g.shapes[k].as_slice())
                    .set_requires_grad(true),
            )
        })
        .collect();
    let handles: BTreeMap<String, Tensor> = params
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    let mut opt = AdamW::new(params, g.betas[0], g.betas[1], g.eps, g.weight_decay).unwrap();
    for (step, lr) in g.lrs.iter().enumerate() {
        // Put the fixture's gradient into .grad through autograd: d/dθ Σ θ·G = G.
        let mut surrogate = Tensor::zeros([], (Kind::Double, tch::Device::Cpu));
        for (k, t) in &handles {
            let gr = Tensor::from_slice(&g.grads[step][k]).reshape(g.shapes[k].as_slice());
            surrogate += (t * gr).sum(Kind::Double);
        }
        surrogate.backward();
        let norm = opt.grad_norm().unwrap();
        assert!(
            (norm - g.grad_norms[step]).abs() < 1e-12 * norm,
            "step {step}: grad norm {norm} vs {}",
            g.grad_norms[step]
        );
        let clip = (g.max_grad_norm / (norm + 1e-6)).min(1.0);
        opt.step(*lr, clip).unwrap();
    }
    assert_eq!(opt.steps(), 4);
    for (k, t) in &handles {
        let got: Vec<f64> = Vec::try_from(t.detach().flatten(0, -1)).unwrap();
        for (a, b) in got.iter().zip(&g.final_[k]) {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "{k}: {a} vs torch {b}"
            );
        }
        // The parameters did move (the test can fail).
        assert_ne!(got, g.init[k]);
    }
}
