//! Criterion benchmark of the loss kernels (16 pairs, f32).

use criterion::{criterion_group, criterion_main, Criterion};
use tch::{Device, Kind, Tensor};
use tsr_dpo::{dpo_loss, LossParams, LossType, PairLogps};

fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    let opts = (Kind::Float, Device::Cpu);
    let pc = (Tensor::rand([16], opts) * -100.0).set_requires_grad(true);
    let pr = (Tensor::rand([16], opts) * -100.0).set_requires_grad(true);
    let rc = pc.detach() + Tensor::randn([16], opts);
    let rr = pr.detach() + Tensor::randn([16], opts);
    let n = Tensor::randint_low(10, 200, [16], (Kind::Int64, Device::Cpu));
    let x = PairLogps {
        policy_chosen: &pc,
        policy_rejected: &pr,
        ref_chosen: &rc,
        ref_rejected: &rr,
        chosen_tokens: &n,
        rejected_tokens: &n,
    };
    let mut g = c.benchmark_group("dpo_loss_b16_f32");
    for lt in LossType::ALL {
        let p =
            LossParams::new(lt, 0.1, if lt == LossType::Robust { 0.1 } else { 0.0 }, 0.0).unwrap();
        g.bench_function(lt.as_str(), |b| b.iter(|| dpo_loss(&x, &p).unwrap()));
    }
    let p = LossParams::new(LossType::Sigmoid, 0.1, 0.0, 0.5).unwrap();
    g.bench_function("sigmoid+sft", |b| b.iter(|| dpo_loss(&x, &p).unwrap()));
    g.bench_function("sigmoid_forward_backward", |b| {
        let p = LossParams::sigmoid(0.1).unwrap();
        b.iter(|| dpo_loss(&x, &p).unwrap().loss.backward())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
