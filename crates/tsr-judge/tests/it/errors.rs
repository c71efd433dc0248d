//! Error chains: a variant with a source does not repeat it in its message, so the CLI's
//! `{:#}` (message: source: source's source) prints each cause once.

use tsr_judge::{JudgeConfig, JudgeError};

fn printed(e: JudgeError) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

#[test]
fn chained_errors_print_each_cause_once() {
    let e = JudgeConfig {
        template_path: Some("/nonexistent/judge.txt".into()),
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    let p = printed(e);
    assert!(
        p.starts_with("cannot read judge template /nonexistent/judge.txt: "),
        "{p}"
    );
    assert_eq!(p.matches("No such file or directory").count(), 1, "{p}");

    let cases = [
        (
            JudgeError::TemplateRead {
                path: "/t/judge.txt".into(),
                source: std::io::Error::other("disk on fire"),
            },
            "cannot read judge template /t/judge.txt: disk on fire",
        ),
        (
            JudgeError::Generator {
                requests: 3,
                source: "cuda out of memory".into(),
            },
            "judge generator failed on a batch of 3 request(s): cuda out of memory",
        ),
        (
            JudgeError::Io {
                path: "/t/verdicts.jsonl".into(),
                source: std::io::Error::other("disk on fire"),
            },
            "/t/verdicts.jsonl: disk on fire",
        ),
    ];
    for (e, want) in cases {
        assert_eq!(printed(e), want);
    }
}
