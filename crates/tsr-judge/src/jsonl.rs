//! JSON-lines input and output for judging files (`tsr judge`).
//!
//! Input: one JSON object per line with string fields `prompt` and `response`; optional `id`
//! (string or integer; default `line-N`, N the 1-based line number) and `reference` (string or
//! number, for the verifier judge). Other fields are passed through unchanged, in their order.
//! Blank lines are skipped. Any malformed line is an error naming the file and line.
//!
//! Output ([`annotate`]): the input object plus
//! * `score`: the verdict's mean score, or `null` when no judge sample parsed;
//! * `judge_samples`: the raw judge outputs;
//! * `judge_scores`: the parsed score of each sample, `null` where it did not parse;
//! * `judge_failures`: why each sample did not parse (`null` where it did);
//! * `judge_finish_reasons`: `eos`, `stop` or `length` per sample (`null` for judges that do
//!   not generate).
//!
//! Those keys replace input fields of the same name.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::JudgeError;
use crate::verdict::{JudgeItem, Verdict};

/// A JSON object that keeps its keys in input order (serde_json's `Map` sorts them unless its
/// `preserve_order` feature is on).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JsonObject(pub Vec<(String, Value)>);

impl JsonObject {
    /// The value of `key` (the last one, if the key is repeated).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key`: replaces its value in place, or appends it.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().rev().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_string(), value)),
        }
    }
}

impl Serialize for JsonObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = JsonObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<JsonObject, A::Error> {
                let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0));
                while let Some((k, v)) = access.next_entry::<String, Value>()? {
                    entries.push((k, v));
                }
                Ok(JsonObject(entries))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// One non-blank line of a JSON-lines file.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonlRecord {
    /// 1-based line number in its file.
    pub line: usize,
    pub fields: JsonObject,
}

/// Reads JSON-lines: one object per non-blank line. `origin` names the source in errors.
pub fn read_jsonl(reader: impl BufRead, origin: &Path) -> Result<Vec<JsonlRecord>, JudgeError> {
    let mut records = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let text = line.map_err(|e| JudgeError::Jsonl {
            path: origin.to_path_buf(),
            line: line_no,
            message: format!("cannot read line: {e}"),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let fields: JsonObject = serde_json::from_str(&text).map_err(|e| JudgeError::Jsonl {
            path: origin.to_path_buf(),
            line: line_no,
            message: format!("invalid JSON object: {e}"),
        })?;
        records.push(JsonlRecord {
            line: line_no,
            fields,
        });
    }
    Ok(records)
}

/// [`read_jsonl`] on a file.
pub fn read_jsonl_file(path: &Path) -> Result<Vec<JsonlRecord>, JudgeError> {
    let file = File::open(path).map_err(|source| JudgeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_jsonl(BufReader::new(file), path)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The judge item of a record (see the [module docs](self) for the fields).
pub fn to_judge_item(record: &JsonlRecord, origin: &Path) -> Result<JudgeItem, JudgeError> {
    let err = |message: String| JudgeError::Jsonl {
        path: origin.to_path_buf(),
        line: record.line,
        message,
    };
    let string = |key: &str| match record.fields.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(err(format!(
            "field `{key}` must be a string, got {}",
            json_type(v)
        ))),
        None => Err(err(format!("missing field `{key}`"))),
    };
    let prompt = string("prompt")?;
    let response = string("response")?;
    let id = match record.fields.get("id") {
        None | Some(Value::Null) => format!("line-{}", record.line),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(v) => {
            return Err(err(format!(
                "field `id` must be a string or an integer, got {}",
                json_type(v)
            )))
        }
    };
    let reference = match record.fields.get("reference") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(v) => {
            return Err(err(format!(
                "field `reference` must be a string or a number, got {}",
                json_type(v)
            )))
        }
    };
    Ok(JudgeItem {
        id,
        prompt,
        response,
        reference,
    })
}

/// Reads a judging input file: its records and their judge items, validated.
pub fn read_judge_input(path: &Path) -> Result<(Vec<JsonlRecord>, Vec<JudgeItem>), JudgeError> {
    let records = read_jsonl_file(path)?;
    let items = records
        .iter()
        .map(|r| to_judge_item(r, path))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((records, items))
}

/// Adds a verdict's fields to an output object (see the [module docs](self)).
pub fn annotate(fields: &mut JsonObject, verdict: &Verdict) {
    fields.set("score", score_value(verdict.score));
    fields.set(
        "judge_samples",
        verdict
            .samples
            .iter()
            .map(|s| Value::from(s.text.clone()))
            .collect(),
    );
    fields.set(
        "judge_scores",
        verdict
            .samples
            .iter()
            .map(|s| score_value(s.score))
            .collect(),
    );
    fields.set(
        "judge_failures",
        verdict
            .samples
            .iter()
            .map(|s| {
                s.failure
                    .as_ref()
                    .map_or(Value::Null, |f| Value::from(f.to_string()))
            })
            .collect(),
    );
    fields.set(
        "judge_finish_reasons",
        verdict
            .samples
            .iter()
            .map(|s| serde_json::to_value(s.finish_reason).unwrap_or(Value::Null))
            .collect(),
    );
    // Probability modes: what fell on each score digit, per sample.
    if verdict.samples.iter().any(|s| s.digit_mass.is_some()) {
        fields.set(
            "judge_digit_mass",
            verdict
                .samples
                .iter()
                .map(|s| s.digit_mass.map_or(Value::Null, Value::from))
                .collect(),
        );
        fields.set(
            "judge_digit_probs",
            verdict
                .samples
                .iter()
                .map(|s| serde_json::to_value(s.digit_probs).unwrap_or(Value::Null))
                .collect(),
        );
    }
}

/// A score as JSON: a number, or `null` (also for non-finite values, which JSON lacks).
fn score_value(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// Writes objects as JSON lines.
pub fn write_jsonl<'a>(
    mut writer: impl Write,
    objects: impl IntoIterator<Item = &'a JsonObject>,
) -> std::io::Result<()> {
    for o in objects {
        serde_json::to_writer(&mut writer, o)?;
        writer.write_all(b"\n")?;
    }
    writer.flush()
}
