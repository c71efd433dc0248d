//! `tsr_model::gguf_export`: exported files read back through tsr's GGUF reader (whose parity with
//! the `gguf` package and transformers is checked in `gguf.rs`), and Q8_0 blocks equal to the
//! `gguf` package's own quantisation. That llama.cpp itself serves an export with the same
//! next-token distribution as tsr is checked in the e2e tests (`tests/e2e/engine.rs`).

use std::path::{Path, PathBuf};

use tsr_model::gguf::GgufFile;
use tsr_model::gguf_export::{export_gguf, quantize_q8_0, ExportType};
use tsr_model::{load, Kind, LoadOptions, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn logits(m: &tsr_model::Model, ids: &[i64]) -> Vec<f32> {
    let ids_t = Tensor::from_slice(ids).view([1, ids.len() as i64]);
    let mask = Tensor::ones([1, ids.len() as i64], (Kind::Int64, tch::Device::Cpu));
    let l = m.logits(&ids_t, &mask, false).unwrap();
    Vec::<f32>::try_from(&l.flatten(0, -1)).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Exports both tiny fixtures (llama: permuted Q/K, untied head; qwen2: biases, tied) in every
/// type and loads them back: f32 gives the same config, tokenizer and logits bit for bit; f16
/// and Q8_0 stay close.
#[test]
fn exports_read_back_through_the_gguf_loader() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny_llama.gguf", "tiny_qwen2.gguf"] {
        let src = load(fixture(name).to_str().unwrap(), &LoadOptions::default()).unwrap();
        let ids: Vec<i64> = vec![1, 5, 9, 2, 7, 3];
        let want = logits(&src.model, &ids);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (ty, tol) in [
            (ExportType::F32, 0.0),
            (ExportType::F16, 2e-3 * scale),
            (ExportType::Q8_0, 5e-2 * scale),
        ] {
            let out = dir.path().join(format!("{name}.{}.gguf", ty.as_str()));
            let report = export_gguf(&src, &out, ty, None).unwrap();
            assert_eq!(report.pre_tokenizer, "gpt2", "{name}");
            assert_eq!(report.bytes, std::fs::metadata(&out).unwrap().len());
            let back = load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
            let mut c1 = src.model.config().clone();
            let mut c2 = back.model.config().clone();
            // The source's own file name is not part of the model.
            c1.extra.clear();
            c2.extra.clear();
            assert_eq!(c1, c2, "{name} {ty:?}");
            let got = logits(&back.model, &ids);
            let diff = max_abs_diff(&want, &got);
            assert!(
                diff <= tol,
                "{name} {ty:?}: logits differ by {diff} (tolerance {tol})"
            );
            if ty != ExportType::F32 {
                assert!(diff > 0.0, "{name} {ty:?}: rounding changed nothing?");
            }
            for text in ["Hello world 123", "<|im_start|>user\nhi"] {
                assert_eq!(
                    src.tokenizer.encode(text, true).unwrap(),
                    back.tokenizer.encode(text, true).unwrap(),
                    "{name}: {text:?}"
                );
            }
            assert_eq!(
                src.tokenizer.chat_template(),
                back.tokenizer.chat_template()
            );
            assert_eq!(src.tokenizer.eos_ids(), back.tokenizer.eos_ids());
            let file = GgufFile::open(&out).unwrap();
            let types: Vec<String> = file.tensors().iter().map(|t| t.ty.name()).collect();
            let two_d = match ty {
                ExportType::F32 => "F32",
                ExportType::F16 => "F16",
                ExportType::Q8_0 => "Q8_0",
            };
            for t in file.tensors() {
                let want = if t.dims.len() == 1 { "F32" } else { two_d };
                assert_eq!(t.ty.name(), want, "{name}: {} in {types:?}", t.name);
            }
        }
    }
}

/// Q8_0 blocks written by the `gguf` Python package (quants.gguf) come out byte for byte when
/// their values are quantised again: same scale, same rounding.
#[test]
fn q8_0_matches_the_gguf_package() {
    let file = GgufFile::open(&fixture("quants.gguf")).unwrap();
    let info = file
        .tensors()
        .iter()
        .find(|t| t.ty.name() == "Q8_0")
        .expect("quants.gguf has a Q8_0 tensor")
        .clone();
    let values = file.dequantize(&info).unwrap();
    assert_eq!(
        quantize_q8_0(&values),
        file.tensor_bytes(&info).unwrap(),
        "{}",
        info.name
    );
}

/// A tokenizer whose pre-tokenizer tsr cannot name is refused unless one is named; an unknown
/// name is refused.
#[test]
fn unknown_pre_tokenizers_are_errors() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tsr-dpo/tests/fixtures/sft/model");
    let src = load(model.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let e = export_gguf(&src, &out, ExportType::F32, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("matches none") && e.contains("--pre"), "{e}");
    assert!(!out.exists());
    let e = export_gguf(&src, &out, ExportType::F32, Some("nonsense"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown pre-tokenizer"), "{e}");
    export_gguf(&src, &out, ExportType::F16, Some("gpt2")).unwrap();
    assert!(out.is_file());
}
