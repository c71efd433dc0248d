//! GGUF reading and dequantization against the `gguf` Python package and transformers
//! (fixtures and script: `tests/fixtures/make_gguf.py`).

use std::path::{Path, PathBuf};

use tsr_model::gguf::GgufFile;
use tsr_model::{load, Kind, LoadOptions, ModelError, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
}

#[test]
fn dequantization_matches_gguf_python_bit_for_bit() {
    let file = GgufFile::open(&fixture("quants.gguf")).unwrap();
    let expected = json("quants.json");
    let mut checked = 0;
    for (name, want) in expected.as_object().unwrap() {
        if want["type"] == "Q2_K" {
            continue;
        }
        let t = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape: Vec<i64> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        assert_eq!(t.size(), shape, "{name}");
        let got = values(&t);
        let want = floats(&want["values"]);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: {g} vs {w}");
        }
        checked += 1;
    }
    // F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K + a 3-d tensor.
    assert_eq!(checked, 12);
}

#[test]
fn unsupported_quantization_names_the_tensor() {
    let file = GgufFile::open(&fixture("quants.gguf")).unwrap();
    let e = file.tensor("t.q2_k").unwrap_err();
    assert!(
        matches!(e, ModelError::UnsupportedQuantization { .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("t.q2_k") && msg.contains("Q2_K"), "{msg}");
}

/// Byte position of the type field of tensor `name` in the tensor table.
fn type_field(bytes: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .unwrap()
        + key.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    at + 4 + 8 * n_dims
}

#[test]
fn unknown_type_id_is_an_error_naming_the_tensor() {
    let mut bytes = std::fs::read(fixture("quants.gguf")).unwrap();
    let at = type_field(&bytes, "t.cube");
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let file = GgufFile::from_bytes(Path::new("patched.gguf"), bytes).unwrap();
    let msg = file.tensor("t.cube").unwrap_err().to_string();
    assert!(msg.contains("t.cube") && msg.contains("type 99"), "{msg}");
    // Other tensors still read.
    assert!(file.tensor("t.q8_0").is_ok());
}

#[test]
fn version_2_files_read_like_version_3() {
    let bytes = std::fs::read(fixture("quants.gguf")).unwrap();
    let v3 = GgufFile::from_bytes(Path::new("v3.gguf"), bytes.clone()).unwrap();
    let mut v2_bytes = bytes;
    v2_bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let v2 = GgufFile::from_bytes(Path::new("v2.gguf"), v2_bytes).unwrap();
    assert_eq!((v3.version(), v2.version()), (3, 2));
    assert_eq!(
        values(&v2.tensor("t.q4_k").unwrap()),
        values(&v3.tensor("t.q4_k").unwrap())
    );
    assert_eq!(v2.get_str("tsr.fixture"), Some("quants"));
}

#[test]
fn truncated_and_corrupt_files_are_errors_naming_the_file() {
    let bytes = std::fs::read(fixture("quants.gguf")).unwrap();
    for cut in [0, 3, 10, 30, 200, bytes.len() / 2, bytes.len() - 1] {
        let e = GgufFile::from_bytes(Path::new("cut.gguf"), bytes[..cut].to_vec()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ModelError::Gguf { .. }), "cut at {cut}: {msg}");
        assert!(msg.contains("cut.gguf"), "{msg}");
        if cut >= 8 {
            assert!(msg.contains("truncated"), "cut at {cut}: {msg}");
        }
    }
    let mut bad = bytes.clone();
    bad[0] = b'X';
    let msg = GgufFile::from_bytes(Path::new("bad.gguf"), bad)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bad magic"), "{msg}");
    let mut v1 = bytes.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    let msg = GgufFile::from_bytes(Path::new("v1.gguf"), v1)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("version 1"), "{msg}");
    // A tensor count that cannot fit in the file.
    let mut huge = bytes;
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let msg = GgufFile::from_bytes(Path::new("huge.gguf"), huge)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tensor count"), "{msg}");
}

#[test]
fn truncated_file_on_disk_fails_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let bytes = std::fs::read(fixture("tiny_llama.gguf")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 64]).unwrap();
    let msg = load(path.to_str().unwrap(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("truncated") && msg.contains("tiny.gguf"),
        "{msg}"
    );
}

#[test]
fn missing_gguf_file_is_named() {
    let e = GgufFile::open(Path::new("/no/such/file.gguf")).unwrap_err();
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("/no/such/file.gguf"));
}

#[test]
fn unsupported_architecture_is_an_error() {
    let mut bytes = std::fs::read(fixture("tiny_llama.gguf")).unwrap();
    // general.architecture = "llama" -> "llamb" (same length).
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap();
    let val = at + key.len() + 4 + 8;
    assert_eq!(&bytes[val..val + 5], b"llama");
    bytes[val + 4] = b'b';
    let file = GgufFile::from_bytes(Path::new("arch.gguf"), bytes).unwrap();
    let e = file.model_config().unwrap_err();
    assert!(
        matches!(e, ModelError::UnsupportedArchitecture { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("llamb"));
}

/// Config, q/k weights (llama: permutation undone) and logits of a tiny GGUF against
/// transformers' own GGUF loader.
fn check_tiny(arch: &str) {
    let expected = json(&format!("tiny_{arch}.json"));
    let gguf = fixture(&format!("tiny_{arch}.gguf"));
    let file = GgufFile::open(&gguf).unwrap();
    assert_eq!(file.model_config().unwrap().model_type, arch);
    let config = file.model_config().unwrap();
    let want = &expected["config"];
    assert_eq!(
        config.hidden_size as u64,
        want["hidden_size"].as_u64().unwrap()
    );
    assert_eq!(
        config.intermediate_size as u64,
        want["intermediate_size"].as_u64().unwrap()
    );
    assert_eq!(
        config.num_hidden_layers as u64,
        want["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        config.num_attention_heads as u64,
        want["num_attention_heads"].as_u64().unwrap()
    );
    assert_eq!(
        config.num_kv_heads() as u64,
        want["num_key_value_heads"].as_u64().unwrap()
    );
    assert_eq!(
        config.vocab_size as u64,
        want["vocab_size"].as_u64().unwrap()
    );
    // GGUF stores eps as f32: tsr writes its shortest decimal (1e-5), transformers the widened f32.
    assert_eq!(
        config.rms_norm_eps as f32,
        want["rms_norm_eps"].as_f64().unwrap() as f32
    );
    assert_eq!(
        config.tie_word_embeddings,
        want["tie_word_embeddings"].as_bool().unwrap()
    );

    // Q/K rows come back in HF order (llama.cpp's permutation undone), exactly.
    let tensors = file.hf_tensors(&config).unwrap();
    let get = |n: &str| values(&tensors.iter().find(|(k, _)| k == n).unwrap().1);
    for (hf, key) in [
        ("model.layers.0.self_attn.q_proj.weight", "q_proj"),
        ("model.layers.0.self_attn.k_proj.weight", "k_proj"),
    ] {
        let got = get(hf);
        let want = floats(&expected[key]);
        assert_eq!(got, want, "{hf}");
    }
    assert_eq!(
        get("model.embed_tokens.weight")[..256],
        floats(&expected["embed"])[..]
    );

    // The whole load path: logits within 1e-4 of transformers.
    let loaded = load(gguf.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let ids: Vec<i64> = expected["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let n = ids.len() as i64;
    let input = Tensor::from_slice(&ids).view([1, n]);
    let mask = Tensor::ones([1, n], (Kind::Int64, tch::Device::Cpu));
    let logits = loaded.model.logits(&input, &mask, false).unwrap();
    let got = values(&logits);
    let want = floats(&expected["logits"]);
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-4, "max logit diff {max}");
    assert_eq!(loaded.tokenizer.bos_id(), Some(62));
    assert_eq!(loaded.tokenizer.eos_ids(), &[63]);
    let chat = loaded
        .tokenizer
        .apply_chat_template(
            &[serde_json::json!({"role": "user", "content": "AB"})],
            false,
        )
        .unwrap();
    assert_eq!(chat, "<s>user: AB</s>");
}

#[test]
fn tiny_llama_matches_transformers_gguf_loader() {
    check_tiny("llama");
}

#[test]
fn tiny_qwen2_matches_transformers_gguf_loader() {
    check_tiny("qwen2");
}

#[test]
fn llama3_rope_scaling_is_recovered_from_rope_freqs() {
    for case in json("rope_freqs.json").as_array().unwrap() {
        let factors = floats(&case["factors"]);
        let head_dim = case["head_dim"].as_u64().unwrap() as usize;
        let theta = case["theta"].as_f64().unwrap();
        let got = tsr_model::gguf::llama3_scaling_from_factors(&factors, head_dim, theta)
            .expect("llama3 parameters recovered");
        let want = &case["rope_scaling"];
        for key in [
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ] {
            assert_eq!(got[key].as_f64(), want[key].as_f64(), "{key}");
        }
        assert_eq!(got["rope_type"], "llama3");
        // Divisors that follow no llama3 curve are rejected, not guessed.
        let mut bent = factors.clone();
        bent[head_dim / 4] *= 1.5;
        assert!(tsr_model::gguf::llama3_scaling_from_factors(&bent, head_dim, theta).is_none());
    }
}

#[test]
fn gguf_loads_in_bf16() {
    let path = fixture("tiny_llama.gguf");
    let opts = LoadOptions {
        device: tch::Device::Cpu,
        kind: Kind::BFloat16,
    };
    let half = load(path.to_str().unwrap(), &opts).unwrap();
    assert_eq!(half.model.kind(), Kind::BFloat16);
    let full = load(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let ids = Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]);
    let mask = Tensor::ones([1, 4], (Kind::Int64, tch::Device::Cpu));
    let a = values(&half.model.logits(&ids, &mask, false).unwrap());
    let b = values(&full.model.logits(&ids, &mask, false).unwrap());
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|x| x.abs()).fold(0f32, f32::max);
    // bf16 keeps ~3 significant digits; a wrong load would be off by the logits' own scale.
    assert!(
        max < 0.05 * scale,
        "bf16 vs f32 logits differ by {max} (scale {scale})"
    );
}
