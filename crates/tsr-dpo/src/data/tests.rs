use std::path::Path;

use tch::Device;

use super::*;
use crate::error::Result;

/// A toy tokenizer: one id per byte (+3), bos 1, eos 2; ChatML-like template.
#[derive(Debug)]
pub(crate) struct ByteTok;
impl PairTokenizer for ByteTok {
    fn encode_ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let mut v: Vec<u32> = if add_special_tokens { vec![1] } else { vec![] };
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("<eos>") {
                v.push(2);
                rest = r;
            } else {
                let c = rest.as_bytes()[0];
                v.push(c as u32 + 3);
                rest = &rest[1..];
            }
        }
        Ok(v)
    }
    fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut s = String::new();
        for m in messages {
            s += &format!("[{}]{}<eos>\n", m.role, m.content);
        }
        if add_generation_prompt {
            s += "[assistant]";
        }
        Ok(s)
    }
    fn eos_id(&self) -> Option<u32> {
        Some(2)
    }
}

#[test]
fn malformed_lines_name_their_line() {
    let text = "{\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\"}\n\n{\"prompt\":\"a\",\"chosen\":\"b\"}\n";
    let e = parse_pairs(text, Path::new("p.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("p.jsonl:3: missing field `rejected`"), "{e}");
    let e = parse_pairs("not json", Path::new("p.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("p.jsonl:1: invalid json"), "{e}");
    let e = parse_pairs(
        "{\"prompt\":\"a\",\"chosen\":3,\"rejected\":\"c\"}",
        Path::new("x"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("x:1: expected"), "{e}");
    let two = r#"{"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"user","content":"a"}],"rejected":"r"}"#;
    let e = parse_pairs(two, Path::new("x")).unwrap_err().to_string();
    assert!(e.contains("exactly one assistant message"), "{e}");
}

#[test]
fn plain_text_gets_eos_and_exact_boundary() {
    let pairs = parse_pairs(
        r#"{"prompt":"ab","chosen":"c","rejected":"de<eos>","id":7}"#,
        Path::new("x"),
    )
    .unwrap();
    let (tp, dropped) = tokenize_pairs(&ByteTok, &pairs, 100, Truncation::KeepStart).unwrap();
    assert!(dropped.is_empty());
    let p = &tp[0];
    assert_eq!(
        p.chosen.ids,
        vec![1, 'a' as u32 + 3, 'b' as u32 + 3, 'c' as u32 + 3, 2]
    );
    assert_eq!(p.chosen.prompt_len, 3);
    // EOS already present: not doubled.
    assert_eq!(
        p.rejected.ids,
        vec![1, 100, 101, 'd' as u32 + 3, 'e' as u32 + 3, 2]
    );
}

#[test]
fn chat_completion_is_the_template_suffix() {
    let line = r#"{"prompt":[{"role":"user","content":"q"}],"chosen":"yes","rejected":[{"role":"assistant","content":"no"}]}"#;
    let pairs = parse_pairs(line, Path::new("x")).unwrap();
    let (tp, _) = tokenize_pairs(&ByteTok, &pairs, 100, Truncation::KeepStart).unwrap();
    let prompt = ByteTok
        .encode_ids("[user]q<eos>\n[assistant]", false)
        .unwrap();
    assert_eq!(
        &tp[0].chosen.ids[..tp[0].chosen.prompt_len],
        prompt.as_slice()
    );
    assert_eq!(
        &tp[0].chosen.ids[prompt.len()..],
        ByteTok.encode_ids("yes<eos>\n", false).unwrap().as_slice()
    );
    assert_eq!(
        &tp[0].rejected.ids[prompt.len()..],
        ByteTok.encode_ids("no<eos>\n", false).unwrap().as_slice()
    );
}

#[test]
fn sampled_ids_are_trained_verbatim_without_an_added_eos() {
    let prompt = PairPrompt::Chat(vec![Message {
        role: "user".into(),
        content: "q".into(),
    }]);
    // Chosen ended with EOS (2); rejected was cut by the length limit: no EOS, none added.
    // The ids are not what tokenizing their text would give (one id per byte + 3).
    let pairs = vec![SampledPair {
        prompt: prompt.clone(),
        chosen_ids: vec![500, 501, 2],
        rejected_ids: vec![600, 601, 602],
    }];
    let (tp, dropped) =
        tokenize_sampled_pairs(&ByteTok, &pairs, 100, Truncation::KeepStart).unwrap();
    assert!(dropped.is_empty());
    let p = ByteTok
        .encode_ids("[user]q<eos>\n[assistant]", false)
        .unwrap();
    assert_eq!(tp[0].chosen.prompt_len, p.len());
    assert_eq!(&tp[0].chosen.ids[..p.len()], p.as_slice());
    assert_eq!(&tp[0].chosen.ids[p.len()..], &[500, 501, 2]);
    assert_eq!(&tp[0].rejected.ids[p.len()..], &[600, 601, 602]);
    assert_eq!(count_unended(&pairs, &[2]), 1);
    assert_eq!(count_unended(&pairs, &[7]), 2);
    // Same truncation rule as text pairs: keep-start cuts the completion's end.
    let (tp, _) =
        tokenize_sampled_pairs(&ByteTok, &pairs, p.len() + 2, Truncation::KeepStart).unwrap();
    assert_eq!(&tp[0].chosen.ids[p.len()..], &[500, 501]);
    // A prompt that fills max_length drops the pair; an empty side is an error.
    let (tp, dropped) =
        tokenize_sampled_pairs(&ByteTok, &pairs, p.len(), Truncation::KeepStart).unwrap();
    assert!(tp.is_empty());
    assert_eq!(dropped, vec![0]);
    let empty = vec![SampledPair {
        prompt,
        chosen_ids: vec![],
        rejected_ids: vec![9],
    }];
    let err = tokenize_sampled_pairs(&ByteTok, &empty, 100, Truncation::KeepStart)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no token ids"), "{err}");
}

#[test]
fn truncation_modes_follow_trl() {
    let pairs = vec![
        PreferencePair::text("abcdef", "xyz", "q"),
        PreferencePair::text("abcdefghij", "x", "y"),
    ];
    // prompt = bos + 6 = 7 ids; chosen 4 ids (xyz + eos), rejected 2 ids.
    let (tp, dropped) = tokenize_pairs(&ByteTok, &pairs, 9, Truncation::KeepStart).unwrap();
    assert_eq!(dropped, vec![1]);
    assert_eq!(tp[0].chosen.ids.len(), 9);
    assert_eq!(tp[0].chosen.prompt_len, 7);
    assert_eq!(tp[0].chosen.completion_len(), 2);
    assert_eq!(tp[0].rejected.ids.len(), 9);
    let (tp, dropped) = tokenize_pairs(&ByteTok, &pairs, 9, Truncation::KeepEnd).unwrap();
    assert!(dropped.is_empty());
    assert_eq!(tp[0].chosen.prompt_len, 5);
    assert_eq!(tp[0].chosen.ids[5..], [123, 124, 125, 2]);
    assert_eq!(tp[1].chosen.prompt_len, 7);
}

#[test]
fn collate_layout_and_epoch_batches() {
    let pairs: Vec<PreferencePair> = (0..10)
        .map(|i| PreferencePair::text("p".repeat(i + 1), "c".repeat(10 - i), "r"))
        .collect();
    let (tp, _) = tokenize_pairs(&ByteTok, &pairs, 100, Truncation::KeepStart).unwrap();
    let b = collate(&tp, &[0, 3], 0, Device::Cpu).unwrap();
    assert_eq!(b.input_ids.size(), [4, 13]);
    let comp: Vec<i64> = Vec::try_from(b.completion_mask.get(2)).unwrap();
    assert_eq!(comp[..5], [0, 0, 1, 1, 0]);
    assert_eq!(
        Vec::<i64>::try_from(&b.completion_tokens).unwrap(),
        vec![11, 8, 2, 2]
    );
    assert_eq!(b.real_tokens, 13 + 13 + 4 + 7);
    let e1 = epoch_batches(&tp, 3, 2, 5, 0);
    assert_eq!(e1, epoch_batches(&tp, 3, 2, 5, 0));
    assert_ne!(e1, epoch_batches(&tp, 3, 2, 5, 1));
    let mut all: Vec<usize> = e1.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}
