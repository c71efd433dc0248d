//! JSON-lines input validation and output annotation.

use std::io::Cursor;
use std::path::Path;

use serde_json::{json, Value};
use tsr_judge::jsonl::{annotate, read_jsonl, read_judge_input, to_judge_item, write_jsonl};
use tsr_judge::{FinishReason, Judge, JudgeConfig, JudgeError, LlmJudge};

use crate::fake::Scripted;

fn origin() -> &'static Path {
    Path::new("in.jsonl")
}

fn items_of(text: &str) -> Result<Vec<tsr_judge::JudgeItem>, JudgeError> {
    let recs = read_jsonl(Cursor::new(text), origin())?;
    recs.iter().map(|r| to_judge_item(r, origin())).collect()
}

fn err_line(e: JudgeError) -> (usize, String) {
    match e {
        JudgeError::Jsonl { line, message, .. } => (line, message),
        other => panic!("expected a JSONL error, got {other:?}"),
    }
}

#[test]
fn reads_items_with_ids_references_and_blank_lines() {
    let text = r#####"{"prompt": "p1", "response": "r1", "id": "a"}

{"prompt": "p2", "response": "r2", "id": 17, "reference": "#### 4"}
{"prompt": "p3", "response": "r3", "reference": 12.5, "extra": [1, 2]}
"#####;
    let items = items_of(text).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        (
            items[0].id.as_str(),
            items[0].prompt.as_str(),
            items[0].response.as_str()
        ),
        ("a", "p1", "r1")
    );
    assert_eq!(items[1].id, "17");
    assert_eq!(items[1].reference.as_deref(), Some("#### 4"));
    assert_eq!(items[2].id, "line-4");
    assert_eq!(items[2].reference.as_deref(), Some("12.5"));
}

#[test]
fn malformed_lines_name_their_line() {
    let cases = [
        (
            "{\"prompt\": \"p\", \"response\": \"r\"}\n{\"prompt\": \"p\", \"response\": ",
            2,
            "invalid JSON",
        ),
        ("\n\n[1, 2]\n", 3, "invalid JSON object"),
        ("\"just a string\"\n", 1, "invalid JSON object"),
        ("{\"response\": \"r\"}\n", 1, "missing field `prompt`"),
        ("{\"prompt\": \"p\"}\n", 1, "missing field `response`"),
        (
            "{\"prompt\": \"p\", \"response\": 3}\n",
            1,
            "field `response` must be a string, got a number",
        ),
        (
            "{\"prompt\": \"p\", \"response\": \"r\", \"id\": 1.5}\n",
            1,
            "field `id` must be a string or an integer",
        ),
        (
            "{\"prompt\": \"p\", \"response\": \"r\", \"reference\": [4]}\n",
            1,
            "field `reference` must be a string or a number",
        ),
    ];
    for (text, line, msg) in cases {
        let (got_line, got_msg) = err_line(items_of(text).unwrap_err());
        assert_eq!(got_line, line, "{text:?}");
        assert!(got_msg.contains(msg), "{text:?}: {got_msg}");
    }
    let e = items_of("{\"prompt\": 1, \"response\": \"r\"}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "in.jsonl:1: field `prompt` must be a string, got a number"
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let e = read_judge_input(Path::new("/nonexistent/in.jsonl")).unwrap_err();
    assert!(matches!(e, JudgeError::Io { .. }));
    // The path is the message, the OS error its source: the chain prints each once.
    assert_eq!(e.to_string(), "/nonexistent/in.jsonl");
    let printed = format!("{:#}", anyhow::Error::from(e));
    assert!(printed.starts_with("/nonexistent/in.jsonl: "), "{printed}");
    assert_eq!(printed.matches("No such file").count(), 1, "{printed}");
}

#[test]
fn output_keeps_input_fields_in_order_and_adds_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"zeta": 1, "prompt": "Hi?", "response": "Hello!", "meta": {"k": [true, null]}, "score": "old"}"#,
            "\n",
            r#"{"prompt": "Q", "response": "A", "id": "x"}"#,
            "\n"
        ),
    )
    .unwrap();
    let (mut records, items) = read_judge_input(&input).unwrap();
    let texts = ["Nice.\nScore: 4", "Hmm", "Score: 3"];
    let script = Scripted::new(move |_, j| {
        (
            texts[j].to_string(),
            if j == 1 {
                FinishReason::Length
            } else {
                FinishReason::Eos
            },
        )
    });
    let verdicts = LlmJudge::from_config(script, &JudgeConfig::default())
        .unwrap()
        .judge(&items)
        .unwrap();
    for (r, v) in records.iter_mut().zip(&verdicts) {
        annotate(&mut r.fields, v);
    }
    let mut out = Vec::new();
    write_jsonl(&mut out, records.iter().map(|r| &r.fields)).unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    // Key order: input order, `score` replaced in place, new keys appended.
    assert!(lines[0].starts_with(r#"{"zeta":1,"prompt":"Hi?","response":"Hello!","meta":{"k":[true,null]},"score":3.5,"judge_samples":"#), "{}", lines[0]);
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["judge_samples"], json!(texts));
    assert_eq!(v["judge_scores"], json!([4.0, null, 3.0]));
    assert_eq!(
        v["judge_failures"],
        json!([null, "no score statement", null])
    );
    assert_eq!(v["judge_finish_reasons"], json!(["eos", "length", "eos"]));
    let v2: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v2["id"], "x");
    assert_eq!(v2["score"], 3.5);
}

#[test]
fn unscored_items_write_null() {
    let (mut records, items) = {
        let recs = read_jsonl(
            Cursor::new("{\"prompt\": \"p\", \"response\": \"r\"}\n"),
            origin(),
        )
        .unwrap();
        let items: Vec<_> = recs
            .iter()
            .map(|r| to_judge_item(r, origin()).unwrap())
            .collect();
        (recs, items)
    };
    let v = LlmJudge::from_config(Scripted::constant("no verdict"), &JudgeConfig::default())
        .unwrap()
        .judge(&items)
        .unwrap();
    annotate(&mut records[0].fields, &v[0]);
    let mut out = Vec::new();
    write_jsonl(&mut out, [&records[0].fields]).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["score"], Value::Null);
    assert_eq!(v["judge_scores"], json!([null, null, null]));
}
