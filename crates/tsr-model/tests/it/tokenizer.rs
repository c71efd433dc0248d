//! The SmolLM2 GGUF tokenizer and chat template against transformers' tokenizer built from the
//! same GGUF (fixture and script: `tests/fixtures/make_tokenizer.py`). These need the built-in
//! model; they skip (saying why) only when it cannot be fetched.

use std::path::{Path, PathBuf};

use tsr_model::gguf::GgufFile;
use tsr_model::hub::SMOLLM2_135M_INSTRUCT;
use tsr_model::ChatTokenizer;

fn smollm2() -> Option<PathBuf> {
    match SMOLLM2_135M_INSTRUCT.fetch() {
        Ok(p) => Some(p),
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipping: the built-in model could not be fetched: {e}");
            }
            None
        }
    }
}

fn fixture() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_against_transformers(tok: &ChatTokenizer, want: &serde_json::Value) {
    assert_eq!(
        tok.vocab_size() as u64,
        want["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(tok.bos_id().map(u64::from), want["bos_id"].as_u64());
    assert_eq!(tok.eos_ids(), &[want["eos_id"].as_u64().unwrap() as u32]);
    // transformers leaves pad unset when the file names none; tsr falls back to eos.
    let want_pad = want["pad_id"].as_u64().or(want["eos_id"].as_u64()).unwrap();
    assert_eq!(u64::from(tok.pad_id()), want_pad);
    for case in want["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, ids(&case["ids"]), "encode {text:?}");
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids_with_special"]),
            "{text:?}"
        );
        assert_eq!(
            tok.decode(&got, false).unwrap(),
            case["decoded"].as_str().unwrap()
        );
        assert_eq!(
            tok.decode(&got, true).unwrap(),
            case["decoded_skip_special"].as_str().unwrap()
        );
    }
    for chat in want["chats"].as_array().unwrap() {
        let messages = chat["messages"].as_array().unwrap();
        let gen = chat["add_generation_prompt"].as_bool().unwrap();
        let got = tok.apply_chat_template(messages, gen).unwrap();
        assert_eq!(got, chat["rendered"].as_str().unwrap());
    }
}

#[test]
fn gguf_tokenizer_matches_transformers() {
    let Some(path) = smollm2() else { return };
    let tok = ChatTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    check_against_transformers(&tok, &fixture());
}

#[test]
fn saved_tokenizer_reloads_identically() {
    let Some(path) = smollm2() else { return };
    let tok = ChatTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let back = ChatTokenizer::from_hf_dir(dir.path()).unwrap();
    check_against_transformers(&back, &fixture());
    assert_eq!(back.chat_template(), tok.chat_template());
}

#[test]
fn template_errors_are_model_errors() {
    let Some(path) = smollm2() else { return };
    let mut tok = ChatTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    tok.set_chat_template(Some(
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('need a system message') }}{% endif %}".into(),
    ));
    let e = tok
        .apply_chat_template(&[serde_json::json!({"role": "user", "content": "x"})], true)
        .unwrap_err();
    assert!(e.to_string().contains("need a system message"), "{e}");
    tok.set_chat_template(None);
    assert!(tok
        .apply_chat_template(&[serde_json::json!({"role": "user", "content": "x"})], true)
        .is_err());
}

#[test]
fn missing_tokenizer_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = ChatTokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    let e = ChatTokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn sentencepiece_gguf_tokenizer_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tokenizer_tiny_spm.json")).unwrap(),
    )
    .unwrap();
    let tok =
        ChatTokenizer::from_gguf(&GgufFile::open(&dir.join("tiny_spm.gguf")).unwrap()).unwrap();
    check_against_transformers(&tok, &want);
    // And after a save / reload through tokenizer.json.
    let out = tempfile::tempdir().unwrap();
    tok.save(out.path()).unwrap();
    check_against_transformers(&ChatTokenizer::from_hf_dir(out.path()).unwrap(), &want);
}

/// A copy of the decoder's tiny llama parity checkpoint (vocab 256) with the tokenizer of `gguf`.
fn hf_dir_with_tokenizer_of(gguf: &str) -> tempfile::TempDir {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(fixtures.join("parity/llama").join(f), dir.path().join(f)).unwrap();
    }
    let tok = ChatTokenizer::from_gguf(&GgufFile::open(&fixtures.join(gguf)).unwrap()).unwrap();
    tok.save(dir.path()).unwrap();
    dir
}

#[test]
fn hf_directory_loads_with_its_tokenizer_and_generation_config() {
    let dir = hf_dir_with_tokenizer_of("tiny_llama.gguf");
    let loaded = tsr_model::load(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    assert_eq!(loaded.source, dir.path());
    assert_eq!(loaded.tokenizer.vocab_size(), 64);
    let gen_text = std::fs::read_to_string(dir.path().join("generation_config.json")).unwrap();
    let gen: serde_json::Value = serde_json::from_str(&gen_text).unwrap();
    let want =
        tsr_model::TokenIds::to_vec(&serde_json::from_value(gen["eos_token_id"].clone()).unwrap());
    assert_eq!(loaded.generation.eos_ids(), want);
}

#[test]
fn tokenizer_larger_than_the_embedding_is_rejected() {
    let dir = hf_dir_with_tokenizer_of("tiny_spm.gguf"); // 340 tokens for 256 rows
    let e = tsr_model::load(dir.path().to_str().unwrap(), &Default::default()).unwrap_err();
    assert!(
        matches!(
            e,
            tsr_model::ModelError::VocabMismatch {
                tokenizer: 340,
                model: 256
            }
        ),
        "{e}"
    );
}

/// A copy of `tiny_llama.gguf` whose `tokenizer.ggml.pre` is `mystery` (same length as the
/// fixture's `default`, so the file layout is unchanged).
fn gguf_with_unknown_pretokenizer(dir: &Path) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut bytes = std::fs::read(fixtures.join("tiny_llama.gguf")).unwrap();
    let key = b"tokenizer.ggml.pre";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap();
    // key, value type (u32), string length (u64), then the string.
    let value = at + key.len() + 4 + 8;
    assert_eq!(&bytes[value..value + 7], b"default");
    bytes[value..value + 7].copy_from_slice(b"mystery");
    let path = dir.join("unknown_pre.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Issue 14: an unknown GGUF pre-tokenizer used to be a warning; tokenisation would silently
/// differ, so it is refused unless the user opts in, and the error says how.
#[test]
fn unknown_gguf_pretokenizer_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = gguf_with_unknown_pretokenizer(dir.path());
    let file = GgufFile::open(&path).unwrap();
    let Err(e) = ChatTokenizer::from_gguf_with(&file, false) else {
        panic!("an unknown pre-tokenizer should be refused");
    };
    let text = e.to_string();
    assert!(
        text.contains("\"mystery\"")
            && text.contains(tsr_model::ALLOW_UNKNOWN_PRETOKENIZER_ENV)
            && text.contains("unknown_pre.gguf"),
        "{text}"
    );
    if std::env::var_os(tsr_model::ALLOW_UNKNOWN_PRETOKENIZER_ENV).is_none() {
        assert!(ChatTokenizer::from_gguf(&file).is_err());
        assert!(tsr_model::load(path.to_str().unwrap(), &Default::default()).is_err());
    }
    let tok = ChatTokenizer::from_gguf_with(&file, true).unwrap();
    assert_eq!(tok.vocab_size(), 64);
}
