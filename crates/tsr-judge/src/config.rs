//! Judge configuration: the TOML/JSON section, and the checked settings it validates into.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::JudgeError;
use crate::generate::SamplingParams;
use crate::template::JudgeTemplate;

/// How a judge turns its model's output into a score.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgeMode {
    /// The paper's: sample `samples` verdicts, parse each `Score:` line, average those that parse.
    #[default]
    Sampled,
    /// Sample a justification (cut at `Score:`), append `Score: ` and read the expected digit
    /// from one forward pass; `samples` justifications, averaged.
    Expected,
    /// No justification: the answer is prefilled with `Score: ` and the score is the expected
    /// digit of one forward pass (no sampling; one batched prefill judges a whole pool).
    Direct,
}

impl JudgeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeMode::Sampled => "sampled",
            JudgeMode::Expected => "expected",
            JudgeMode::Direct => "direct",
        }
    }

    /// Whether the mode reads next-token probabilities (needs a [`NextTokenProbe`](crate::NextTokenProbe)).
    pub fn reads_probabilities(self) -> bool {
        !matches!(self, JudgeMode::Sampled)
    }
}

impl std::fmt::Display for JudgeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JudgeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sampled" => Ok(JudgeMode::Sampled),
            "expected" => Ok(JudgeMode::Expected),
            "direct" => Ok(JudgeMode::Direct),
            other => Err(format!(
                "unknown judge mode `{other}` (expected sampled, expected or direct)"
            )),
        }
    }
}

/// The `[judge]` section of a run configuration. Defaults (the paper's, where it has them) live
/// in the [`Default`] impl; unknown keys are rejected. Validate with [`JudgeConfig::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// How verdicts become scores: `sampled` (the paper's), `expected` or `direct`.
    pub mode: JudgeMode,
    /// A built-in judge prompt: `additive` (the paper's additive 5-point prompt) or `short`
    /// (tsr's short question/answer prompt for small judges). Ignored when `template_path` is set.
    pub template: String,
    /// A judge prompt file with `{instruction}` and `{response}` placeholders; `None` uses the
    /// paper's additive 5-point prompt.
    pub template_path: Option<PathBuf>,
    /// Judge samples per response; the score is the mean of those that parse. Paper: 3.
    pub samples: usize,
    /// Sampling temperature of the judge; 0 is greedy (then use `samples = 1`). Paper: 0.7.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]. Paper: 0.9.
    pub top_p: f64,
    /// Generation limit per verdict. The prompt asks for a justification of up to 100 words
    /// and a final `Score: N` line: 100 English words are about 130-150 BPE tokens, the score
    /// line about 5, so 256 leaves ~70% headroom for judges that run a little long or restate
    /// the criteria. Lower values cut verdicts before the score line (a known failure of
    /// earlier implementations); [`JudgeStats::unfinished_samples`](crate::JudgeStats) counts
    /// how often that happens, so raise it if that count is not small.
    pub max_new_tokens: usize,
    /// Base seed; each item's sampling seed derives from it and the item id.
    pub seed: u64,
    /// Judge prompts per generator call; 0 sends all items of a `judge` call at once.
    pub batch_size: usize,
    /// `expected` and `direct` modes: how many of the most likely next tokens to read at the
    /// score position (remote engines cap this, often at 20).
    pub top_logprobs: usize,
    /// `expected` and `direct` modes: a verdict whose probability mass on the digits 0..5 is
    /// below this counts as unparsed (the judge did not mean to give a score).
    pub min_digit_mass: f64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            mode: JudgeMode::Sampled,
            template: "additive".into(),
            template_path: None,
            samples: 3,
            temperature: 0.7,
            top_p: 0.9,
            max_new_tokens: 256,
            seed: 0,
            batch_size: 0,
            top_logprobs: 20,
            min_digit_mass: 0.1,
        }
    }
}

impl JudgeConfig {
    /// Checks the values and loads the template.
    pub fn validate(&self) -> Result<JudgeSettings, JudgeError> {
        let invalid = |field, reason: &str| JudgeError::InvalidConfig {
            field,
            reason: reason.to_string(),
        };
        let samples = NonZeroUsize::new(self.samples)
            .ok_or_else(|| invalid("samples", "must be at least 1"))?;
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(invalid(
                "temperature",
                &format!("must be a finite number >= 0, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid(
                "top_p",
                &format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        if self.max_new_tokens == 0 {
            return Err(invalid("max_new_tokens", "must be at least 1"));
        }
        if self.top_logprobs == 0 {
            return Err(invalid("top_logprobs", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.min_digit_mass) {
            return Err(invalid(
                "min_digit_mass",
                &format!("must be in [0, 1], got {}", self.min_digit_mass),
            ));
        }
        let template = match &self.template_path {
            Some(p) => JudgeTemplate::from_file(p)?,
            None => JudgeTemplate::builtin(&self.template).ok_or_else(|| {
                invalid(
                    "template",
                    &format!(
                        "`{}` is not a built-in template (additive or short); use template_path for a file",
                        self.template
                    ),
                )
            })?,
        };
        Ok(JudgeSettings {
            mode: self.mode,
            top_logprobs: self.top_logprobs,
            min_digit_mass: self.min_digit_mass,
            template,
            samples,
            params: SamplingParams {
                temperature: self.temperature,
                top_p: self.top_p,
                max_new_tokens: self.max_new_tokens,
                ..SamplingParams::default()
            },
            seed: self.seed,
            batch_size: NonZeroUsize::new(self.batch_size),
        })
    }
}

/// Validated judge settings (from [`JudgeConfig::validate`]).
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeSettings {
    mode: JudgeMode,
    top_logprobs: usize,
    min_digit_mass: f64,
    template: JudgeTemplate,
    samples: NonZeroUsize,
    params: SamplingParams,
    seed: u64,
    batch_size: Option<NonZeroUsize>,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        JudgeConfig::default()
            .validate()
            .expect("default judge config is valid")
    }
}

impl JudgeSettings {
    pub fn mode(&self) -> JudgeMode {
        self.mode
    }
    pub fn top_logprobs(&self) -> usize {
        self.top_logprobs
    }
    pub fn min_digit_mass(&self) -> f64 {
        self.min_digit_mass
    }
    /// A one-line description for run records: mode, template and the settings that matter.
    pub fn describe(&self) -> String {
        match self.mode {
            JudgeMode::Sampled => format!(
                "llm judge, mode sampled, template {}, {} sample(s) at T={} top_p={}, max_new_tokens {}",
                self.template.origin(),
                self.samples,
                self.params.temperature,
                self.params.top_p,
                self.params.max_new_tokens
            ),
            JudgeMode::Expected => format!(
                "llm judge, mode expected, template {}, {} justification(s) at T={} top_p={}, max_new_tokens {}, top_logprobs {}, min_digit_mass {}",
                self.template.origin(),
                self.samples,
                self.params.temperature,
                self.params.top_p,
                self.params.max_new_tokens,
                self.top_logprobs,
                self.min_digit_mass
            ),
            JudgeMode::Direct => format!(
                "llm judge, mode direct, template {}, top_logprobs {}, min_digit_mass {}",
                self.template.origin(),
                self.top_logprobs,
                self.min_digit_mass
            ),
        }
    }
    pub fn template(&self) -> &JudgeTemplate {
        &self.template
    }
    pub fn samples(&self) -> usize {
        self.samples.get()
    }
    /// The sampling parameters sent to the generator.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Judge prompts per generator call; `None` means all at once.
    pub fn batch_size(&self) -> Option<usize> {
        self.batch_size.map(NonZeroUsize::get)
    }
    /// The same settings with another template.
    pub fn with_template(mut self, template: JudgeTemplate) -> Self {
        self.template = template;
        self
    }
    /// The same settings with another base seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers() {
        let s = JudgeConfig::default().validate().unwrap();
        assert_eq!(s.samples(), 3);
        assert_eq!(s.params().temperature, 0.7);
        assert_eq!(s.params().top_p, 0.9);
        assert_eq!(s.params().max_new_tokens, 256);
        assert_eq!(s.batch_size(), None);
        assert_eq!(s.template(), &JudgeTemplate::additive_5pt());
        assert_eq!(s.mode(), JudgeMode::Sampled);
    }

    #[test]
    fn modes_and_templates_by_name() {
        let c: JudgeConfig =
            serde_json::from_str(r#"{"mode": "direct", "template": "short"}"#).unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.mode(), JudgeMode::Direct);
        assert_eq!(s.template(), &JudgeTemplate::short());
        assert!(s.describe().contains("mode direct"), "{}", s.describe());
        assert!(serde_json::from_str::<JudgeConfig>(r#"{"mode": "greedy"}"#).is_err());
        let e = JudgeConfig {
            template: "long".into(),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("`long`"), "{e}");
        assert_eq!("expected".parse::<JudgeMode>(), Ok(JudgeMode::Expected));
        assert!("x".parse::<JudgeMode>().is_err());
    }

    #[test]
    fn invalid_values_are_rejected() {
        let bad = [
            JudgeConfig {
                samples: 0,
                ..Default::default()
            },
            JudgeConfig {
                temperature: -0.1,
                ..Default::default()
            },
            JudgeConfig {
                temperature: f64::NAN,
                ..Default::default()
            },
            JudgeConfig {
                top_p: 0.0,
                ..Default::default()
            },
            JudgeConfig {
                top_p: 1.01,
                ..Default::default()
            },
            JudgeConfig {
                max_new_tokens: 0,
                ..Default::default()
            },
            JudgeConfig {
                top_logprobs: 0,
                ..Default::default()
            },
            JudgeConfig {
                min_digit_mass: 1.5,
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(JudgeError::InvalidConfig { .. })),
                "{c:?}"
            );
        }
        let ok = JudgeConfig {
            temperature: 0.0,
            top_p: 1.0,
            samples: 1,
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected_and_defaults_fill_in() {
        let c: JudgeConfig = serde_json::from_str(r#"{"samples": 5}"#).unwrap();
        assert_eq!(
            c,
            JudgeConfig {
                samples: 5,
                ..Default::default()
            }
        );
        assert!(serde_json::from_str::<JudgeConfig>(r#"{"sample": 5}"#).is_err());
    }

    #[test]
    fn missing_template_file_is_an_error() {
        let c = JudgeConfig {
            template_path: Some("/nonexistent/judge.txt".into()),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(matches!(e, JudgeError::TemplateRead { .. }));
        assert!(e.to_string().contains("/nonexistent/judge.txt"), "{e}");
    }
}
