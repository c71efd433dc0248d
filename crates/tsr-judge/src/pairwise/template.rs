//! The pairwise judge prompt: tsr's built-in [`PAIRWISE`] and [`PairwiseTemplate`], a template
//! with `{instruction}`, `{response_a}` and `{response_b}` filled literally.

use std::path::Path;

use super::PairwiseItem;
use crate::error::JudgeError;

/// tsr's pairwise judge prompt (tsr's own wording).
pub const PAIRWISE: &str = include_str!("../prompts/pairwise.txt");

/// A pairwise judge prompt with `{instruction}`, `{response_a}` and `{response_b}`, filled
/// literally in one pass (text inside an answer that looks like a placeholder stays as it is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairwiseTemplate {
    origin: String,
    text: String,
}

const PLACEHOLDERS: [&str; 3] = ["{instruction}", "{response_a}", "{response_b}"];

impl Default for PairwiseTemplate {
    fn default() -> Self {
        Self::new("pairwise (built in)", PAIRWISE).expect("the built-in template is complete")
    }
}

impl PairwiseTemplate {
    /// A template from text; every placeholder must occur.
    pub fn new(origin: impl Into<String>, text: impl Into<String>) -> Result<Self, JudgeError> {
        let (origin, text) = (origin.into(), text.into());
        for placeholder in PLACEHOLDERS {
            if !text.contains(placeholder) {
                return Err(JudgeError::TemplatePlaceholder {
                    origin,
                    placeholder,
                });
            }
        }
        Ok(Self { origin, text })
    }

    /// A template read from a UTF-8 file.
    pub fn from_file(path: &Path) -> Result<Self, JudgeError> {
        let text = crate::template::read_template_file(path)?;
        Self::new(path.display().to_string(), text)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The template with the item filled in.
    pub fn render(&self, item: &PairwiseItem) -> String {
        let values = [&item.instruction, &item.response_a, &item.response_b];
        let mut out =
            String::with_capacity(self.text.len() + values.iter().map(|v| v.len()).sum::<usize>());
        let mut rest = self.text.as_str();
        'outer: while !rest.is_empty() {
            for (placeholder, value) in PLACEHOLDERS.iter().zip(values) {
                if let Some(after) = rest.strip_prefix(placeholder) {
                    out.push_str(value);
                    rest = after;
                    continue 'outer;
                }
            }
            let c = rest.chars().next().expect("rest is not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_fills_literally_once() {
        let t =
            PairwiseTemplate::new("t", "Q={instruction} A={response_a} B={response_b}").unwrap();
        let item = PairwiseItem {
            id: "i".into(),
            instruction: "{response_b}".into(),
            response_a: "x".into(),
            response_b: "y".into(),
        };
        assert_eq!(t.render(&item), "Q={response_b} A=x B=y");
        assert!(matches!(
            PairwiseTemplate::new("t", "{instruction} {response_a}"),
            Err(JudgeError::TemplatePlaceholder {
                placeholder: "{response_b}",
                ..
            })
        ));
    }
}
