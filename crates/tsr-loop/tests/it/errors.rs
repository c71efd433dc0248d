use crate::common::*;
use std::path::Path;
use tsr_loop::fake::FakeBackend;
use tsr_loop::{load_prompts, Config, Method, NoObserver, PromptRecord, Run};

#[test]
fn config_file_errors_name_the_file_and_key() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("run.toml");
    std::fs::write(&p, "[loop]\nk = 4\nsamples = 3\n").unwrap();
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("run.toml") && e.contains("unknown field `samples`"),
        "{e}"
    );
    std::fs::write(&p, "[loop]\nk = 1\n").unwrap();
    let e = Config::load(&p)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("loop.k"), "{e}");
}

#[test]
fn prompts_are_resolved_against_the_config_file() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("run.toml"), "[run]\nprompts = \"p.jsonl\"\n").unwrap();
    std::fs::write(
        t.path().join("p.jsonl"),
        "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\",\"prompt\":\"y\"}\n",
    )
    .unwrap();
    let c = Config::load(&t.path().join("run.toml")).unwrap();
    let e = load_prompts(&c.run.prompts).unwrap_err().to_string();
    assert!(
        e.contains("p.jsonl:2") && e.contains("duplicate prompt id `a`"),
        "{e}"
    );
}

#[test]
fn create_refuses_bad_input_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("r");
    let dup = vec![
        PromptRecord {
            id: "a".into(),
            prompt: "x".into(),
        },
        PromptRecord {
            id: "a".into(),
            prompt: "y".into(),
        },
    ];
    let e = Run::create(&dir, config(Method::Sr, 1), dup)
        .unwrap_err()
        .to_string();
    assert!(e.contains("duplicate"), "{e}");
    let e = Run::create(&dir, config(Method::Sr, 1), vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no prompts"), "{e}");
    let e = Run::create(&dir, config(Method::Sr, 3), prompts(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fresh chunk"), "{e}");
    let mut c = config(Method::Sr, 1);
    c.dpo.insert("beta".into(), toml::Value::Float(0.0));
    assert!(Run::create(&dir, c, prompts(2))
        .unwrap_err()
        .to_string()
        .contains("dpo.beta"));
    assert!(!dir.exists());
}

#[test]
fn run_folder_misuse_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (_, _) = run_fresh(t.path(), Method::Sr, 1, 2);
    let e = Run::create(t.path(), config(Method::Sr, 1), prompts(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("x"), "").unwrap();
    let e = Run::create(other.path(), config(Method::Sr, 1), prompts(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
    let e = Run::open(other.path()).unwrap_err().to_string();
    assert!(e.contains("not a run folder"), "{e}");
}

#[test]
fn a_creation_killed_before_run_json_can_be_started_again() {
    // What `Run::create` writes before `run.json` (prompts, config, an unfinished temporary):
    // no run yet, so starting again removes it and creates the run.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("prompts.jsonl"), "{\"id\": \"old\"").unwrap();
    std::fs::write(dir.join("config.toml"), "half").unwrap();
    std::fs::write(dir.join(".run.json.tsr-tmp-4242"), "").unwrap();
    let run = Run::create(&dir, config(Method::Sr, 1), prompts(2)).unwrap();
    assert_eq!(run.prompts().len(), 2);
    assert!(dir.join("run.json").exists());
    assert!(!dir.join(".run.json.tsr-tmp-4242").exists());
    assert!(Run::open(&dir).is_ok());
    // A file of anyone else's still makes the folder off limits.
    let other = t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("prompts.jsonl"), "").unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let e = Run::create(&other, config(Method::Sr, 1), prompts(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
    assert!(other.join("notes.txt").exists() && other.join("prompts.jsonl").exists());
}

#[test]
fn unwritable_run_folder_is_an_error() {
    let e = Run::create(
        Path::new("/proc/tsr-cannot-write-here"),
        config(Method::Sr, 1),
        prompts(2),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/proc/tsr-cannot-write-here"), "{e}");
}

#[test]
fn write_failure_mid_run_leaves_the_stage_incomplete() {
    // Make a stage's output folder unwritable by putting a file where the folder should go:
    // the stage fails with the path, nothing is marked done, and the run resumes once fixed.
    let t = tempfile::tempdir().unwrap();
    let mut run = Run::create(t.path(), config(Method::Sr, 1), prompts(2)).unwrap();
    std::fs::create_dir_all(t.path().join("iter-001")).unwrap();
    std::fs::write(t.path().join("iter-001/judge-current"), "in the way").unwrap();
    let e = run
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap_err()
        .to_string();
    assert!(e.contains("judge-current"), "{e}");
    assert!(!t.path().join("iter-001/done/judge-current.json").exists());
    assert!(t.path().join("iter-001/done/gen-current.json").exists());
    assert_eq!(read_json(&t.path().join("state.json"))["finished"], false);
    std::fs::remove_file(t.path().join("iter-001/judge-current")).unwrap();
    let out = Run::open(t.path())
        .unwrap()
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap();
    assert!(out.state.finished);
}

#[test]
fn backend_protocol_violations_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let mut run = Run::create(t.path(), config(Method::Sr, 1), prompts(2)).unwrap();
    let e = run
        .execute(
            &mut Tweaked {
                drop_a_completion: true,
                ..Tweaked::default()
            },
            &mut NoObserver,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gen-current") && e.contains("result lists"),
        "{e}"
    );
    assert!(!t.path().join("iter-001/gen-current/00000.jsonl").exists());
}

#[test]
fn documented_example_configs_parse_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
    for name in ["tiny.toml", "tsr-paper.toml"] {
        let c = Config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn provenance_is_recorded_and_a_different_judge_is_refused_on_resume() {
    let t = tempfile::tempdir().unwrap();
    let mut run = Run::create(t.path(), config(Method::Sr, 2), prompts(4)).unwrap();
    let mut b = FakeBackend::new();
    let out = run.execute(&mut b, &mut NoObserver).unwrap();
    assert!(out.state.finished);
    let p = read_json(&t.path().join("provenance.json"));
    assert_eq!(p["test_doubles"][0], "fake backend");
    let s = read_json(&t.path().join("summary.json"));
    let it = &s["iterations"][0];
    assert_eq!(it["results_are_real"], false);
    assert_eq!(it["provenance"]["judge"], p["judge"]);
    assert_eq!(it["test_doubles"].as_array().unwrap().len(), 2);

    let e = Run::open(t.path())
        .unwrap()
        .execute(
            &mut Tweaked {
                judge: Some("another judge".into()),
                ..Tweaked::default()
            },
            &mut NoObserver,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("another judge"), "{e}");
    assert!(e.contains("mix two ways of scoring"), "{e}");
    // The same provenance resumes (here: finds everything done).
    Run::open(t.path())
        .unwrap()
        .execute(&mut FakeBackend::new(), &mut NoObserver)
        .unwrap();
}

/// The fake backend with one thing changed: a completion missing from the first generation
/// result (a protocol violation), or another judge in its provenance.
struct Tweaked {
    inner: FakeBackend,
    drop_a_completion: bool,
    judge: Option<String>,
}

impl Default for Tweaked {
    fn default() -> Self {
        Self {
            inner: FakeBackend::new(),
            drop_a_completion: false,
            judge: None,
        }
    }
}

impl tsr_loop::Backend for Tweaked {
    fn generate(
        &mut self,
        m: &tsr_loop::ModelRef,
        r: &[tsr_judge::GenRequest],
        p: &tsr_judge::SamplingParams,
    ) -> Result<Vec<Vec<tsr_judge::Completion>>, tsr_loop::BackendError> {
        let mut v = self.inner.generate(m, r, p)?;
        if self.drop_a_completion {
            v[0].pop();
        }
        Ok(v)
    }
    fn judge(
        &mut self,
        m: &tsr_loop::ModelRef,
        i: &[tsr_judge::JudgeItem],
        s: u64,
    ) -> Result<Vec<tsr_judge::Verdict>, tsr_loop::BackendError> {
        self.inner.judge(m, i, s)
    }
    fn train_dpo(
        &mut self,
        m: &tsr_loop::ModelRef,
        p: &[tsr_loop::TrainPair],
        o: &Path,
        s: u64,
    ) -> Result<tsr_loop::TrainReport, tsr_loop::BackendError> {
        self.inner.train_dpo(m, p, o, s)
    }
    fn representation_similarity(
        &mut self,
        m: &tsr_loop::ModelRef,
        p: &[tsr_loop::TrainPair],
    ) -> Result<Vec<f64>, tsr_loop::BackendError> {
        self.inner.representation_similarity(m, p)
    }
    fn provenance(&self) -> tsr_loop::Provenance {
        let p = self.inner.provenance();
        tsr_loop::Provenance {
            judge: self.judge.clone().unwrap_or(p.judge),
            ..p
        }
    }
}
