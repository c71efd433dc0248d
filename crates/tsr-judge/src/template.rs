//! The judge prompt template and its literal `{instruction}` / `{response}` filling.

use std::ops::Range;
use std::path::Path;

use crate::error::JudgeError;

/// The Self-Rewarding paper's additive 5-point judge prompt, byte for byte
/// (`shared/docs/judge-prompt.txt`, from Yuan et al. 2024, figure 2).
pub const ADDITIVE_5PT: &str = include_str!("prompts/additive_5pt.txt");

/// tsr's short judge prompt: the question, the answer, one line of criteria and the score line.
/// Small judges (100M-1B parameters) learn to judge with it where the paper's long additive
/// prompt defeats them (see docs/judging.md); it is not the paper's prompt.
pub const SHORT: &str = include_str!("prompts/short.txt");

const INSTRUCTION: &str = "{instruction}";
const RESPONSE: &str = "{response}";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Range<usize>),
    Instruction,
    Response,
}

/// A judge prompt with `{instruction}` and `{response}` placeholders.
///
/// Filling is literal and single-pass: the template is split at its placeholders once, and
/// [`render`](Self::render) concatenates the pieces with the values. A response that itself
/// contains `{instruction}` (or any braces) is inserted as is and never substituted again.
/// Every other character of the template, braces included, is kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JudgeTemplate {
    origin: String,
    text: String,
    segments: Vec<Segment>,
}

impl Default for JudgeTemplate {
    fn default() -> Self {
        Self::additive_5pt()
    }
}

impl JudgeTemplate {
    /// The paper's prompt ([`ADDITIVE_5PT`]).
    pub fn additive_5pt() -> Self {
        Self::new("additive_5pt (built in)", ADDITIVE_5PT)
            .expect("the built-in template has both placeholders")
    }

    /// tsr's short prompt ([`SHORT`]).
    pub fn short() -> Self {
        Self::new("short (built in)", SHORT).expect("the built-in template has both placeholders")
    }

    /// A built-in template by name: `additive` (the paper's, [`ADDITIVE_5PT`]) or `short`
    /// ([`SHORT`]).
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "additive" | "additive_5pt" | "additive-5pt" => Some(Self::additive_5pt()),
            "short" => Some(Self::short()),
            _ => None,
        }
    }

    /// A template from text. `origin` names it in errors and logs (a path, or a label).
    /// Both placeholders must occur at least once.
    pub fn new(origin: impl Into<String>, text: impl Into<String>) -> Result<Self, JudgeError> {
        let origin = origin.into();
        let text = text.into();
        let mut segments = Vec::new();
        let mut pos = 0;
        let mut lit_start = 0;
        while pos < text.len() {
            let rest = &text[pos..];
            let placeholder = if rest.starts_with(INSTRUCTION) {
                Some((Segment::Instruction, INSTRUCTION.len()))
            } else if rest.starts_with(RESPONSE) {
                Some((Segment::Response, RESPONSE.len()))
            } else {
                None
            };
            match placeholder {
                Some((seg, len)) => {
                    if lit_start < pos {
                        segments.push(Segment::Literal(lit_start..pos));
                    }
                    segments.push(seg);
                    pos += len;
                    lit_start = pos;
                }
                None => pos += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        if lit_start < text.len() {
            segments.push(Segment::Literal(lit_start..text.len()));
        }
        for (seg, placeholder) in [
            (Segment::Instruction, INSTRUCTION),
            (Segment::Response, RESPONSE),
        ] {
            if !segments.contains(&seg) {
                return Err(JudgeError::TemplatePlaceholder {
                    origin,
                    placeholder,
                });
            }
        }
        Ok(Self {
            origin,
            text,
            segments,
        })
    }

    /// A template read from a UTF-8 file.
    pub fn from_file(path: &Path) -> Result<Self, JudgeError> {
        Self::new(path.display().to_string(), read_template_file(path)?)
    }

    /// Where the template came from (a path, or a label for built-in ones).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The template text, placeholders unfilled.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The template with both placeholders filled literally.
    pub fn render(&self, instruction: &str, response: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + instruction.len() + response.len());
        for seg in &self.segments {
            match seg {
                Segment::Literal(r) => out.push_str(&self.text[r.clone()]),
                Segment::Instruction => out.push_str(instruction),
                Segment::Response => out.push_str(response),
            }
        }
        out
    }
}

/// The text of a template file (UTF-8), or [`JudgeError::TemplateRead`].
pub(crate) fn read_template_file(path: &Path) -> Result<String, JudgeError> {
    std::fs::read_to_string(path).map_err(|source| JudgeError::TemplateRead {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_renders_both_placeholders_once() {
        let t = JudgeTemplate::additive_5pt();
        let r = t.render("What is 2+2?", "4");
        assert!(r.contains("User: What is 2+2?\n<response>4</response>\n"));
        assert!(!r.contains("{instruction}") && !r.contains("{response}"));
        assert_eq!(
            r.len(),
            ADDITIVE_5PT.len() - INSTRUCTION.len() - RESPONSE.len() + 13
        );
    }

    #[test]
    fn values_are_not_substituted_again() {
        let t = JudgeTemplate::new("t", "I={instruction} R={response}").unwrap();
        assert_eq!(
            t.render("{response}", "{instruction}"),
            "I={response} R={instruction}"
        );
        assert_eq!(t.render("a{", "}b"), "I=a{ R=}b");
    }

    #[test]
    fn other_braces_and_unicode_are_kept() {
        let t = JudgeTemplate::new("t", "é{x} {instruction}→{response}{}").unwrap();
        assert_eq!(t.render("i", "r"), "é{x} i→r{}");
    }

    #[test]
    fn repeated_placeholders_are_all_filled() {
        let t = JudgeTemplate::new("t", "{instruction}|{response}|{instruction}").unwrap();
        assert_eq!(t.render("a", "b"), "a|b|a");
    }

    #[test]
    fn missing_placeholder_is_an_error() {
        let e = JudgeTemplate::new("mine.txt", "only {instruction}").unwrap_err();
        assert!(matches!(
            e,
            JudgeError::TemplatePlaceholder {
                placeholder: "{response}",
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "judge template mine.txt lacks the `{response}` placeholder"
        );
        let e = JudgeTemplate::new("t", "{Instruction} {response}").unwrap_err();
        assert!(matches!(
            e,
            JudgeError::TemplatePlaceholder {
                placeholder: "{instruction}",
                ..
            }
        ));
    }
}
