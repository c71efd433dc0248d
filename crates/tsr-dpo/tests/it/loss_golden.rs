//! The loss kernels against TRL 1.16's own `DPOTrainer._compute_loss`
//! (fixture written by `tests/fixtures/make_loss_golden.py`).

use serde::Deserialize;
use tch::{Kind, Tensor};
use tsr_dpo::loss::{dpo_loss, LossParams, LossType, PairLogps};

#[derive(Deserialize)]
struct Fixture {
    trl_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    dtype: String,
    loss_types: Vec<String>,
    loss_weights: Vec<f64>,
    beta: f64,
    label_smoothing: f64,
    policy_chosen: Vec<f64>,
    policy_rejected: Vec<f64>,
    ref_chosen: Vec<f64>,
    ref_rejected: Vec<f64>,
    chosen_tokens: Vec<i64>,
    rejected_tokens: Vec<i64>,
    loss: f64,
    rewards_chosen_mean: f64,
    rewards_rejected_mean: f64,
    rewards_margins_mean: f64,
    rewards_accuracies: f64,
}

fn close(got: f64, want: f64, f64_case: bool) -> bool {
    if f64_case {
        (got - want).abs() <= 1e-9 * want.abs().max(1e-12)
    } else {
        (got - want).abs() <= 1e-5 * want.abs().max(1.0)
    }
}

#[test]
fn every_loss_type_matches_trl() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/loss_golden.json"
    ))
    .unwrap();
    let fx: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fx.trl_version, "1.16.0");
    let mut seen = std::collections::HashSet::new();
    for (i, c) in fx.cases.iter().enumerate() {
        let is64 = c.dtype == "f64";
        let kind = if is64 { Kind::Double } else { Kind::Float };
        let t = |v: &[f64]| Tensor::from_slice(v).to_kind(kind);
        let (pc, pr, rc, rr) = (
            t(&c.policy_chosen),
            t(&c.policy_rejected),
            t(&c.ref_chosen),
            t(&c.ref_rejected),
        );
        let (nc, nr) = (
            Tensor::from_slice(&c.chosen_tokens),
            Tensor::from_slice(&c.rejected_tokens),
        );
        let lt: LossType = c.loss_types[0].parse().unwrap();
        let sft_weight = match c.loss_types.get(1).map(String::as_str) {
            Some("sft") => c.loss_weights[1],
            None => 0.0,
            Some(other) => panic!("unexpected second loss {other}"),
        };
        assert_eq!(c.loss_weights[0], 1.0);
        seen.insert((lt, sft_weight > 0.0, is64));
        let params = LossParams::new(lt, c.beta, c.label_smoothing, sft_weight).unwrap();
        let x = PairLogps {
            policy_chosen: &pc,
            policy_rejected: &pr,
            ref_chosen: &rc,
            ref_rejected: &rr,
            chosen_tokens: &nc,
            rejected_tokens: &nr,
        };
        let out = dpo_loss(&x, &params).unwrap();
        assert_eq!(out.loss.kind(), kind);
        let s = out.stats().unwrap();
        let ctx = format!("case {i}: {:?} {}", c.loss_types, c.dtype);
        assert!(
            close(s.loss, c.loss, is64),
            "{ctx}: loss {} vs trl {}",
            s.loss,
            c.loss
        );
        assert!(
            close(s.rewards_chosen, c.rewards_chosen_mean, is64),
            "{ctx}: rewards/chosen {} vs {}",
            s.rewards_chosen,
            c.rewards_chosen_mean
        );
        assert!(
            close(s.rewards_rejected, c.rewards_rejected_mean, is64),
            "{ctx}: rewards/rejected"
        );
        assert!(
            close(s.rewards_margins, c.rewards_margins_mean, is64),
            "{ctx}: rewards/margins {} vs {}",
            s.rewards_margins,
            c.rewards_margins_mean
        );
        // TRL takes the mean of a float32 tensor, hence the 1e-6.
        assert!(
            (s.rewards_accuracies - c.rewards_accuracies).abs() < 1e-6,
            "{ctx}: accuracy"
        );
    }
    // Every loss type, with and without the SFT term, in both precisions.
    assert_eq!(seen.len(), LossType::ALL.len() * 2 * 2);
}
