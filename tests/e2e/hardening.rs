//! Bad inputs of issue 14 that reach the libtorch crates, through the `tsr` binary on the tiny
//! Llama of tsr-dpo's SFT fixture (context 256 tokens): each is a one-line error, not a silently
//! wrong result or a libtorch backtrace.

use std::path::{Path, PathBuf};

use crate::tsr;

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tsr-dpo/tests/fixtures/sft/model")
}

fn failure(args: &[&str]) -> String {
    let out = tsr().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail: {args:?}\n{stderr}");
    stderr
}

#[test]
fn logprobs_of_a_prompt_longer_than_the_context_is_an_error_naming_the_lengths() {
    let model = tiny_model();
    let prompt = "word ".repeat(300);
    let stderr = failure(&[
        "logprobs",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        &prompt,
        "--completion",
        "fine",
    ]);
    assert!(
        stderr.contains("context of 256 tokens") && stderr.contains("max_position_embeddings"),
        "{stderr}"
    );
}

#[test]
fn generate_with_zero_max_new_tokens_is_refused() {
    let model = tiny_model();
    let stderr = failure(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "0",
    ]);
    assert!(
        stderr.contains("--max-new-tokens must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn cuda_without_a_gpu_is_a_one_line_error() {
    if tch::Cuda::is_available() {
        return; // nothing to check on a machine with a GPU
    }
    let model = tiny_model();
    let stderr = failure(&[
        "logprobs",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a",
        "--completion",
        "b",
        "--device",
        "cuda",
    ]);
    assert!(
        stderr.contains("CUDA requested but not available: "),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn unknown_gguf_pretokenizer_is_refused_naming_the_opt_in() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tsr-model/tests/fixtures");
    let mut bytes = std::fs::read(fixtures.join("tiny_llama.gguf")).unwrap();
    let key = b"tokenizer.ggml.pre";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap();
    let value = at + key.len() + 4 + 8;
    assert_eq!(&bytes[value..value + 7], b"default");
    bytes[value..value + 7].copy_from_slice(b"mystery");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unknown_pre.gguf");
    std::fs::write(&path, bytes).unwrap();
    let args = [
        "logprobs",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        "a",
        "--completion",
        "b",
    ];
    let out = tsr()
        .args(args)
        .env_remove("TSR_ALLOW_UNKNOWN_PRETOKENIZER")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("\"mystery\"") && stderr.contains("TSR_ALLOW_UNKNOWN_PRETOKENIZER=1"),
        "{stderr}"
    );
    let out = tsr()
        .args(args)
        .env("TSR_ALLOW_UNKNOWN_PRETOKENIZER", "1")
        .output()
        .unwrap();
    crate::assert_success(&out);
}

#[test]
fn train_dpo_never_changes_a_finished_output_folder_unless_asked() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/training");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("dpo");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("config.json"), "{}").unwrap();
    std::fs::write(out.join("model.safetensors"), "old").unwrap();
    std::fs::write(out.join("dpo_config.json"), "SENTINEL").unwrap();
    let bad = t.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"no chosen\"}\n").unwrap();
    let model = tiny_model();
    let args = |pairs: &Path| {
        vec![
            "train-dpo".to_string(),
            "--model".into(),
            model.display().to_string(),
            "--pairs".into(),
            pairs.display().to_string(),
            "--config".into(),
            fixtures.join("dpo.toml").display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--max-steps".into(),
            "1".into(),
        ]
    };
    let untouched = || {
        assert_eq!(
            std::fs::read_to_string(out.join("dpo_config.json")).unwrap(),
            "SENTINEL"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("model.safetensors")).unwrap(),
            "old"
        );
    };
    // Bad pairs: an error about the pairs, and the folder as it was.
    let a = args(&bad);
    let stderr = failure(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stderr.contains("bad.jsonl"), "{stderr}");
    untouched();
    // Good pairs into a finished folder: refused, naming --overwrite.
    let a = args(&fixtures.join("pairs.jsonl"));
    let stderr = failure(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        stderr.contains("already holds a trained model") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    untouched();
    // With --overwrite it trains and replaces the model and the settings.
    let status = tsr()
        .args(a.iter().chain([&"--overwrite".to_string()]))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let cfg = std::fs::read_to_string(out.join("dpo_config.json")).unwrap();
    assert!(cfg.contains("\"beta\""), "{cfg}");
    // The model is the output folder itself (TRL's output_dir layout): it loads from there.
    assert!(tsr_model::hf::holds_model(&out));
    assert_ne!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        b"old"
    );
    assert!(tsr_model::load(out.to_str().unwrap(), &tsr_model::LoadOptions::default()).is_ok());
}

#[test]
fn shapes_that_cannot_fit_in_memory_are_refused_before_they_start() {
    let model = tiny_model();
    let model = model.to_str().unwrap();
    // A billion samples: their results alone need terabytes; refused at once, naming the parts.
    let stderr = failure(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "hi",
        "--n",
        "1000000000",
        "--max-new-tokens",
        "200",
    ]);
    assert!(
        stderr.contains("holding 1000000000 generated sequences")
            && stderr.contains("but the memory limit is")
            && stderr.contains("max_new_tokens"),
        "{stderr}"
    );
    // One chunk of rows whose KV cache exceeds an explicit --memory-limit.
    let stderr = failure(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "hi",
        "--n",
        "4096",
        "--max-batch",
        "4096",
        "--max-new-tokens",
        "200",
        "--memory-limit",
        "64MiB",
    ]);
    assert!(
        stderr.contains("chunk of 4096 sequences")
            && stderr.contains("KV cache")
            && stderr.contains("memory limit is 64.0 MiB")
            && stderr.contains("--max-batch"),
        "{stderr}"
    );
    // The same job in smaller chunks fits under the same limit.
    let out = tsr()
        .args([
            "generate",
            "--model",
            model,
            "--prompt",
            "hi",
            "--n",
            "2",
            "--max-new-tokens",
            "4",
            "--memory-limit",
            "64MiB",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Training: the weights with their Adam state exceed a tiny limit.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/training");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("dpo");
    let stderr = failure(&[
        "train-dpo",
        "--model",
        model,
        "--pairs",
        fixtures.join("pairs.jsonl").to_str().unwrap(),
        "--config",
        fixtures.join("dpo.toml").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--memory-limit",
        "100KiB",
    ]);
    assert!(
        stderr.contains("a training step on")
            && stderr.contains("Adam state")
            && stderr.contains("batch_size"),
        "{stderr}"
    );
    // A bad size is a clear argument error.
    let stderr = failure(&["doctor", "--memory-limit", "lots"]);
    assert!(stderr.contains("is not a size"), "{stderr}");
}
