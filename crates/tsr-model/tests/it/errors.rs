//! Bad input gives errors naming the file and tensor.

use std::path::Path;

use tsr_model::{hf, LoadOptions, Model, ModelError, Tensor};

use crate::{expected, fixture_dir, load};

fn copy_fixture(case: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture_dir(case).join(f), to.join(f)).unwrap();
    }
}

fn load_err(dir: &Path) -> ModelError {
    hf::load_model_dir(dir, &LoadOptions::default()).unwrap_err()
}

#[test]
fn missing_config_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e:?}");
    assert!(e.to_string().contains("config.json"), "{e}");
}

#[test]
fn missing_weights_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("llama", tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e:?}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn missing_shard_names_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    hf::save_model_dir(
        &load("llama"),
        &dir,
        &hf::SaveOptions {
            max_shard_bytes: 100_000,
        },
        |_| Ok(()),
    )
    .unwrap();
    std::fs::remove_file(dir.join("model-00002-of-00005.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(
        e.to_string().contains("model-00002-of-00005.safetensors"),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupt_safetensors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("llama", tmp.path());
    let weights = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, ModelError::Safetensors { .. }), "{e:?}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");

    std::fs::write(&weights, b"\x08\x00\x00\x00\x00\x00\x00\x00not json").unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, ModelError::Safetensors { .. }), "{e:?}");
}

#[test]
fn shape_mismatch_names_the_tensor() {
    // Through a directory: a config that disagrees with the weights.
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("llama", tmp.path());
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let e = load_err(tmp.path());
    match &e {
        ModelError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "model.layers.0.mlp.gate_proj.weight");
            assert_eq!(expected, &vec![96, 64]);
            assert_eq!(found, &vec![128, 64]);
        }
        other => panic!("{other:?}"),
    }
    assert!(e
        .to_string()
        .contains("model.layers.0.mlp.gate_proj.weight"));

    // Through tensors: one wrong tensor among right ones.
    let model = load("qwen2");
    let mut tensors: Vec<(String, Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach()))
        .collect();
    for (n, t) in tensors.iter_mut() {
        if n == "model.layers.1.self_attn.k_proj.bias" {
            *t = Tensor::zeros([7], (tch::Kind::Float, tch::Device::Cpu));
        }
    }
    let e =
        Model::from_tensors(model.config().clone(), tensors, &LoadOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("model.layers.1.self_attn.k_proj.bias"),
        "{e}"
    );
}

#[test]
fn missing_tensor_names_the_tensor_and_file() {
    let model = load("llama");
    let tensors: Vec<(String, Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(n, _)| n != "model.layers.1.post_attention_layernorm.weight")
        .map(|(n, t)| (n, t.detach()))
        .collect();
    let e =
        Model::from_tensors(model.config().clone(), tensors, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(&e, ModelError::MissingTensor { name, .. } if name == "model.layers.1.post_attention_layernorm.weight"),
        "{e:?}"
    );
    // From a directory the message also names the weights file.
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("llama", tmp.path());
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
    )
    .unwrap();
    let e = load_err(tmp.path()).to_string();
    assert!(
        e.contains("model.layers.2.") && e.contains("model.safetensors"),
        "{e}"
    );
}

#[test]
fn unsupported_model_type_and_rope_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("llama", tmp.path());
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt_neox\""),
    )
    .unwrap();
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ModelError::UnsupportedArchitecture { arch, .. } if arch == "gpt_neox"),
        "{e:?}"
    );
    assert!(e.to_string().contains("config.json"), "{e}");

    std::fs::write(
        &path,
        text.replace("\"rope_type\": \"default\"", "\"rope_type\": \"yarn\""),
    )
    .unwrap();
    let e = load_err(tmp.path()).to_string();
    assert!(e.contains("yarn") && e.contains("config.json"), "{e}");

    std::fs::write(&path, "{ not json").unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, ModelError::Json { .. }), "{e:?}");
}

#[test]
fn bad_forward_inputs_are_errors() {
    let model = load("llama");
    let e = expected("llama");
    let too_big = e.input_ids.copy().fill_(10_000);
    assert!(matches!(
        model.logits(&too_big, &e.attention_mask, false),
        Err(ModelError::InvalidInput { .. })
    ));
    let short_mask = e.attention_mask.narrow(1, 0, 5);
    assert!(matches!(
        model.logits(&e.input_ids, &short_mask, false),
        Err(ModelError::InvalidInput { .. })
    ));
    let mut cache = model.new_cache(2);
    assert!(matches!(
        model.forward_cached(&e.input_ids, &e.position_ids, &e.attention_mask, &mut cache),
        Err(ModelError::InvalidInput { .. })
    ));
}

/// Issue 14: a sequence longer than `max_position_embeddings` is an error naming both lengths,
/// in every forward path, not a silently extrapolated result.
#[test]
fn sequences_longer_than_the_context_are_errors() {
    let model = load("llama");
    let context = model.config().max_position_embeddings as i64;
    let ids = Tensor::ones(
        [1, context + 1],
        (tsr_model::Kind::Int64, tsr_model::Device::Cpu),
    );
    let mask = ids.ones_like();
    let e = model.logits(&ids, &mask, false).unwrap_err();
    assert!(matches!(e, ModelError::InvalidInput { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("{} tokens", context + 1))
            && text.contains(&format!("context of {context} tokens")),
        "{text}"
    );
    // Exactly the context is fine; left padding does not count.
    assert!(model
        .logits(
            &ids.narrow(1, 0, context),
            &mask.narrow(1, 0, context),
            false
        )
        .is_ok());
    let padded = Tensor::cat(
        &[
            mask.narrow(1, 0, 1).zeros_like(),
            mask.narrow(1, 0, context),
        ],
        1,
    );
    assert!(model.logits(&ids, &padded, false).is_ok());
    // Packed rows and the kv-cache path check their position ids.
    let positions = Tensor::arange(
        context + 1,
        (tsr_model::Kind::Int64, tsr_model::Device::Cpu),
    )
    .unsqueeze(0);
    assert!(model
        .hidden_states_packed(&ids, &positions, &mask, false)
        .is_err());
    let mut cache = model.new_cache(1);
    let e = model
        .forward_cached(&ids, &positions, &mask, &mut cache)
        .unwrap_err();
    assert!(e.to_string().contains("max_position_embeddings"), "{e}");
}
