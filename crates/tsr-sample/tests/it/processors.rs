//! The processors against golden values from transformers (tests/fixtures/make_processors.py).

use serde::Deserialize;
use tch::{Device, Kind, Tensor};
use tsr_sample::processors::{mark_seen, seen_mask};
use tsr_sample::Processors;

#[derive(Deserialize)]
struct Fixture {
    logits: Vec<Vec<f32>>,
    seen: Vec<Vec<u32>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    params: Params,
    processors: Vec<String>,
    processed: Vec<Vec<Option<f32>>>,
    greedy: Vec<i64>,
}

#[derive(Deserialize)]
struct Params {
    temperature: f64,
    top_k: usize,
    top_p: f64,
    min_p: f64,
    repetition_penalty: f64,
}

fn fixture() -> Fixture {
    let text = include_str!("../fixtures/processors.json");
    serde_json::from_str(text).expect("processors.json parses")
}

fn to_tensor(rows: &[Vec<f32>]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).reshape([rows.len() as i64, rows[0].len() as i64])
}

#[test]
fn processors_match_transformers() {
    let fx = fixture();
    let logits = to_tensor(&fx.logits);
    let v = fx.logits[0].len() as i64;
    let seen_rows: Vec<&[u32]> = fx.seen.iter().map(|r| r.as_slice()).collect();
    let seen = seen_mask(&seen_rows, v, Device::Cpu).unwrap();
    assert_eq!(fx.cases.len(), 10);
    for case in &fx.cases {
        let p = &case.params;
        let procs = Processors {
            repetition_penalty: p.repetition_penalty,
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
        };
        procs.validate().unwrap();
        let out = procs.apply(&logits, Some(&seen)).unwrap();
        let got: Vec<Vec<f32>> = (0..out.size()[0])
            .map(|r| Vec::<f32>::try_from(out.get(r)).unwrap())
            .collect();
        for (r, (g_row, e_row)) in got.iter().zip(&case.processed).enumerate() {
            for (t, (g, e)) in g_row.iter().zip(e_row).enumerate() {
                match e {
                    None => assert!(
                        *g == f32::NEG_INFINITY,
                        "{:?} row {r} token {t}: expected filtered, got {g}",
                        case.processors
                    ),
                    Some(e) => assert!(
                        (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                        "{:?} row {r} token {t}: expected {e}, got {g}",
                        case.processors
                    ),
                }
            }
        }
        let greedy = Vec::<i64>::try_from(tsr_sample::select::argmax(&out).unwrap()).unwrap();
        assert_eq!(greedy, case.greedy, "{:?}", case.processors);
    }
}

#[test]
fn seen_mask_updates_like_building_it_from_scratch() {
    let rows: Vec<Vec<u32>> = vec![vec![1, 2, 2], vec![], vec![5]];
    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let mut seen = seen_mask(&refs, 8, Device::Cpu).unwrap();
    mark_seen(&mut seen, &Tensor::from_slice(&[7i64, 0, 5])).unwrap();
    let rows2: Vec<Vec<u32>> = vec![vec![1, 2, 7], vec![0], vec![5]];
    let refs2: Vec<&[u32]> = rows2.iter().map(|r| r.as_slice()).collect();
    let expected = seen_mask(&refs2, 8, Device::Cpu).unwrap();
    assert!(seen.equal(&expected));
    assert_eq!(seen.kind(), Kind::Bool);
}

#[test]
fn invalid_params_are_rejected() {
    let bad = [
        Processors {
            temperature: -1.0,
            ..Default::default()
        },
        Processors {
            top_p: 0.0,
            ..Default::default()
        },
        Processors {
            top_p: 1.5,
            ..Default::default()
        },
        Processors {
            min_p: -0.1,
            ..Default::default()
        },
        Processors {
            repetition_penalty: 0.0,
            ..Default::default()
        },
        Processors {
            temperature: f64::NAN,
            ..Default::default()
        },
    ];
    for p in bad {
        assert!(p.validate().is_err(), "{p:?}");
    }
}

/// The candidate fast path keeps exactly the tokens the dense chain keeps, with the same values,
/// and samples the same tokens for the same uniforms.
#[test]
fn candidate_path_equals_the_dense_chain() {
    let fx = fixture();
    tch::manual_seed(3);
    let big = Tensor::randn([6, 5000], (Kind::Float, Device::Cpu)) * 2.5;
    // A nearly flat row forces the top-p candidate set to grow (64 -> 512 -> 4096 -> all).
    // (Exact ties are left out: which of several equal tokens top-p drops depends on the sort.)
    big.get(5)
        .copy_(&(Tensor::arange(5000, (Kind::Float, Device::Cpu)) * 1e-4));
    let small = to_tensor(&fx.logits);
    let mut configs: Vec<Processors> = fx
        .cases
        .iter()
        .filter(|c| c.params.temperature > 0.0)
        .map(|c| Processors {
            repetition_penalty: c.params.repetition_penalty,
            temperature: c.params.temperature,
            top_k: c.params.top_k,
            top_p: c.params.top_p,
            min_p: c.params.min_p,
        })
        .collect();
    configs.push(Processors {
        temperature: 0.7,
        top_p: 0.9,
        ..Default::default()
    });
    configs.push(Processors {
        temperature: 1.0,
        top_k: 100,
        ..Default::default()
    });
    configs.push(Processors {
        temperature: 0.8,
        top_p: 0.99,
        min_p: 0.02,
        ..Default::default()
    });
    for logits in [&small, &big] {
        let (n, v) = (logits.size()[0], logits.size()[1]);
        let rows: Vec<Vec<u32>> = (0..n).map(|r| vec![r as u32, 7, 11]).collect();
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let seen = seen_mask(&refs, v, Device::Cpu).unwrap();
        let us: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37 + 0.1) % 1.0).collect();
        for p in &configs {
            let dense = p.apply(logits, Some(&seen)).unwrap();
            let cand = p.apply_candidates(logits, Some(&seen)).unwrap();
            let back = cand.to_dense(v).unwrap();
            let kept_d = dense.isfinite();
            let kept_c = back.isfinite();
            if !kept_d.equal(&kept_c) {
                let d = kept_d.logical_xor(&kept_c).nonzero();
                d.print();
                panic!("{p:?}: kept sets differ");
            }
            let diff = (dense.where_self(&kept_d, &dense.zeros_like())
                - back.where_self(&kept_c, &back.zeros_like()))
            .abs()
            .max()
            .double_value(&[]);
            assert!(diff < 1e-5, "{p:?}: values differ by {diff}");
            let want = tsr_sample::select::sample_inverse_cdf(&dense, &us).unwrap();
            let (got, lp) = tsr_sample::select::sample_candidates(&cand, &us).unwrap();
            assert!(want.equal(&got), "{p:?}: sampled tokens differ");
            let want_lp = tsr_sample::select::token_logprobs(&dense, &want).unwrap();
            assert!((want_lp - lp).abs().max().double_value(&[]) < 1e-4);
        }
    }
}
