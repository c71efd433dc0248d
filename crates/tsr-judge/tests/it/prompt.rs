//! The built-in prompt is the paper's, byte for byte.

use std::path::PathBuf;

use tsr_judge::{JudgeTemplate, ADDITIVE_5PT};

/// `shared/docs/judge-prompt.txt` as the checkout sees it: inside the repository
/// (`<repo>/shared`, as on CI machines) or beside it (`<repo>/../shared`, the working layout).
fn shared_prompt() -> Option<PathBuf> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        "../../shared/docs/judge-prompt.txt",
        "../../../shared/docs/judge-prompt.txt",
    ]
    .iter()
    .map(|p| crate_dir.join(p))
    .find(|p| p.is_file())
}

#[test]
fn builtin_prompt_is_byte_identical_to_the_shared_copy() {
    match shared_prompt() {
        Some(path) => {
            let shared = std::fs::read(&path).unwrap();
            assert_eq!(ADDITIVE_5PT.as_bytes(), &shared[..], "{} differs from the built-in prompt", path.display());
        }
        #[allow(clippy::print_stderr)]
        None => eprintln!("note: shared/docs/judge-prompt.txt not found; comparing the built-in prompt's invariants only"),
    }
}

#[test]
fn builtin_prompt_invariants() {
    assert_eq!(ADDITIVE_5PT.matches("{instruction}").count(), 1);
    assert_eq!(ADDITIVE_5PT.matches("{response}").count(), 1);
    assert!(ADDITIVE_5PT.starts_with("Review the user's question and the corresponding response using the additive 5-point scoring system"));
    assert!(ADDITIVE_5PT.contains("User: {instruction}\n<response>{response}</response>\n"));
    assert!(ADDITIVE_5PT
        .contains("- Conclude with the score using the format: \"Score: <total points>\"\n"));
    assert!(ADDITIVE_5PT.ends_with("based on the outlined criteria.\n"));
    assert_eq!(JudgeTemplate::default().text(), ADDITIVE_5PT);
}
