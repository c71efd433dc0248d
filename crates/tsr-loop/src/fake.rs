//! A deterministic stand-in for real models, for tests and dry runs of the loop.
//!
//! Texts, scores, training results and similarities are hashes of the inputs (the model's
//! identity, the prompt, the seed), so the same inputs always give the same outputs, whatever
//! the batching. A checkpoint is a folder holding `fake-model.json` whose fingerprint hashes the
//! init model and the training pairs: it does not depend on where the run folder lives.
//! Faults can be injected to test crash recovery: an error or a panic at the n-th call.

use crate::backend::{Backend, ModelRef, TrainPair, TrainReport};
use crate::error::BackendError;
use std::path::Path;
use std::time::Duration;
use tsr_judge::{
    Completion, FinishReason, GenRequest, JudgeItem, JudgeSample, SamplingParams, Verdict,
};

/// How the fake fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Return an error from the n-th call (0-based, counting every backend call).
    ErrorAt(usize),
    /// Panic in the n-th call.
    PanicAt(usize),
}

/// The deterministic fake backend.
#[derive(Debug, Default)]
pub struct FakeBackend {
    /// Calls made so far (including a failing one).
    pub calls: usize,
    /// One line per call that completed: `method model-name size`.
    pub log: Vec<String>,
    pub fault: Option<Fault>,
    /// Sleep this long in every call (lets a test kill a run mid-stage).
    pub delay: Duration,
    /// Share of judge samples that do not parse (in 1/100).
    pub unparsed_percent: u64,
}

fn h(parts: &[&[u8]]) -> u64 {
    use tsr_judge::seed::{fnv1a64_extend, FNV_OFFSET};
    let mut x = FNV_OFFSET;
    for p in parts {
        x = fnv1a64_extend(fnv1a64_extend(x, p), &[0xff]);
    }
    // A Murmur-style finaliser (the fake backend's own; its outputs are fixed by tests).
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

const WORDS: [&str; 16] = [
    "the", "answer", "is", "clearly", "maybe", "because", "first", "then", "water", "light",
    "seven", "simple", "careful", "quick", "however", "finally",
];

impl FakeBackend {
    pub fn new() -> Self {
        Self {
            unparsed_percent: 10,
            ..Self::default()
        }
    }

    fn tick(&mut self) -> Result<(), BackendError> {
        let n = self.calls;
        self.calls += 1;
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        match self.fault {
            Some(Fault::ErrorAt(k)) if k == n => {
                Err(format!("injected failure at call {n}").into())
            }
            Some(Fault::PanicAt(k)) if k == n => panic!("injected panic at call {n}"),
            _ => Ok(()),
        }
    }

    /// The identity of a model: its spec for `m0`, its fingerprint file for a checkpoint.
    fn fingerprint(model: &ModelRef) -> Result<(String, u64), BackendError> {
        let file = Path::new(&model.location).join("fake-model.json");
        if file.exists() {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
            let fp = v["fingerprint"]
                .as_str()
                .ok_or("fake-model.json without fingerprint")?
                .to_string();
            let depth = v["depth"].as_u64().unwrap_or(0);
            Ok((fp, depth))
        } else if model.name == "m0" {
            Ok((model.location.clone(), 0))
        } else {
            Err(format!("{}: not a fake checkpoint", model.location).into())
        }
    }
}

impl Backend for FakeBackend {
    fn generate(
        &mut self,
        model: &ModelRef,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, BackendError> {
        self.tick()?;
        let (fp, depth) = Self::fingerprint(model)?;
        let out = requests
            .iter()
            .map(|r| {
                let prompt = serde_json::to_string(&r.prompt).unwrap_or_default();
                (0..r.n)
                    .map(|j| {
                        let x = h(&[
                            fp.as_bytes(),
                            prompt.as_bytes(),
                            &r.seed.to_le_bytes(),
                            &j.to_le_bytes(),
                        ]);
                        let len = 3 + (x % 6) as usize;
                        let words: Vec<&str> = (0..len)
                            .map(|w| WORDS[((x >> (4 * w)) & 15) as usize])
                            .collect();
                        let text = format!("{} (d{depth})", words.join(" "));
                        let token_ids: Vec<u32> = (0..len as u32)
                            .map(|w| ((x >> (4 * w)) & 15) as u32 + 3)
                            .collect();
                        Completion {
                            finish_reason: if len < params.max_new_tokens {
                                FinishReason::Eos
                            } else {
                                FinishReason::Length
                            },
                            token_ids,
                            text,
                            prompt_tokens: 5 + prompt.len() / 8,
                        }
                    })
                    .collect()
            })
            .collect();
        self.log
            .push(format!("generate {} {}", model.name, requests.len()));
        Ok(out)
    }

    fn judge(
        &mut self,
        judge: &ModelRef,
        items: &[JudgeItem],
        seed: u64,
    ) -> Result<Vec<Verdict>, BackendError> {
        self.tick()?;
        let (fp, _) = Self::fingerprint(judge)?;
        let out = items
            .iter()
            .map(|it| {
                let item_seed = tsr_judge::item_seed(seed, &it.id);
                let samples: Vec<JudgeSample> = (0..2u64)
                    .map(|s| {
                        let x = h(&[
                            fp.as_bytes(),
                            it.response.as_bytes(),
                            &item_seed.to_le_bytes(),
                            &s.to_le_bytes(),
                        ]);
                        let text = if x % 100 < self.unparsed_percent {
                            "I cannot decide.".to_string()
                        } else {
                            // Trained models' answers (depth > 0) score a point higher.
                            let bonus = if it.response.contains("(d0)") {
                                0.0
                            } else {
                                1.0
                            };
                            let score = ((x >> 8) % 9) as f64 / 2.0 * 0.8 + bonus;
                            format!("Fine.\nScore: {score}")
                        };
                        let parsed = tsr_judge::parse_score(&text);
                        JudgeSample {
                            completion_tokens: text.len() / 3,
                            digit_probs: None,
                            digit_mass: None,
                            prompt_tokens: 40 + it.prompt.len() / 4 + it.response.len() / 4,
                            finish_reason: Some(FinishReason::Eos),
                            score: parsed.as_ref().ok().copied(),
                            failure: parsed.err(),
                            text,
                        }
                    })
                    .collect();
                let score = tsr_judge::mean_score(samples.iter().map(|s| &s.score));
                Verdict {
                    id: it.id.clone(),
                    judge_prompt: None,
                    samples,
                    score,
                }
            })
            .collect();
        self.log
            .push(format!("judge {} {}", judge.name, items.len()));
        Ok(out)
    }

    fn train_dpo(
        &mut self,
        init: &ModelRef,
        pairs: &[TrainPair],
        out_dir: &Path,
        seed: u64,
    ) -> Result<TrainReport, BackendError> {
        self.tick()?;
        let (fp, depth) = Self::fingerprint(init)?;
        let mut x = h(&[fp.as_bytes(), &seed.to_le_bytes()]);
        let mut tokens = 0u64;
        for p in pairs {
            x = h(&[
                &x.to_le_bytes(),
                p.prompt.as_bytes(),
                p.chosen.as_bytes(),
                p.rejected.as_bytes(),
            ]);
            tokens += (p.chosen_token_ids.len()
                + p.rejected_token_ids.len()
                + 2 * (5 + p.prompt.len() / 8)) as u64;
        }
        let fingerprint = format!("{x:016x}");
        let body = serde_json::json!({"fingerprint": fingerprint, "depth": depth + 1, "pairs": pairs.len()});
        std::fs::write(
            out_dir.join("fake-model.json"),
            serde_json::to_vec_pretty(&body)?,
        )?;
        // Two epochs of batches of 2 pairs; the margin grows step by step, so the last epoch's
        // mean (the reported one) differs from the mean over all steps.
        let epochs = 2;
        let per_epoch = pairs.len().div_ceil(2);
        let steps = per_epoch * epochs;
        let base = (x % 1000) as f64 / 1000.0;
        let steps_log: Vec<serde_json::Value> = (0..steps)
            .map(|s| {
                let margin = base + 0.1 * s as f64;
                serde_json::json!({"step": s + 1, "epoch": (s + 1) as f64 / per_epoch as f64,
                    "loss": 0.69 - 0.01 * s as f64, "rewards/margins": margin,
                    "rewards/accuracies": (0.5 + margin / 4.0).min(1.0)})
            })
            .collect();
        self.log
            .push(format!("train {} {}", init.name, pairs.len()));
        Ok(TrainReport {
            pairs: pairs.len(),
            epochs,
            steps,
            tokens: tokens * epochs as u64,
            reward_margin: TrainReport::last_epoch_mean(&steps_log, "rewards/margins"),
            reward_accuracy: TrainReport::last_epoch_mean(&steps_log, "rewards/accuracies"),
            final_loss: Some(0.69 - 0.01 * (steps - 1) as f64),
            sampled_ids: false,
            truncated_completions: None,
            steps_log,
        })
    }

    fn representation_similarity(
        &mut self,
        model: &ModelRef,
        pairs: &[TrainPair],
    ) -> Result<Vec<f64>, BackendError> {
        self.tick()?;
        let (fp, _) = Self::fingerprint(model)?;
        self.log
            .push(format!("similarity {} {}", model.name, pairs.len()));
        Ok(pairs
            .iter()
            .map(|p| {
                (h(&[fp.as_bytes(), p.chosen.as_bytes(), p.rejected.as_bytes()]) % 1000) as f64
                    / 1000.0
            })
            .collect())
    }

    fn compare(
        &mut self,
        judge: &ModelRef,
        items: &[tsr_judge::PairwiseItem],
        _mode: tsr_judge::PairwiseMode,
        seed: u64,
    ) -> Result<Vec<tsr_judge::PairwiseVerdict>, BackendError> {
        use tsr_judge::Preference;
        self.tick()?;
        let (fp, _) = Self::fingerprint(judge)?;
        // Answers of more-trained models (a higher `(dN)`) win; otherwise a hash decides.
        let depth = |t: &str| -> u64 {
            t.rsplit_once("(d")
                .and_then(|(_, r)| r.trim_end_matches(')').parse().ok())
                .unwrap_or(0)
        };
        let out = items
            .iter()
            .map(|it| {
                let (da, db) = (depth(&it.response_a), depth(&it.response_b));
                let x = h(&[
                    fp.as_bytes(),
                    it.response_a.as_bytes(),
                    it.response_b.as_bytes(),
                    &tsr_judge::item_seed(seed, &it.id).to_le_bytes(),
                ]);
                let preference = match da.cmp(&db) {
                    std::cmp::Ordering::Greater => Preference::A,
                    std::cmp::Ordering::Less => Preference::B,
                    std::cmp::Ordering::Equal => match x % 3 {
                        0 => Preference::A,
                        1 => Preference::B,
                        _ => Preference::Tie,
                    },
                };
                tsr_judge::PairwiseVerdict {
                    id: it.id.clone(),
                    preference: Some(preference),
                    text: Some("fake pairwise verdict".into()),
                    probs: None,
                    failure: None,
                    prompt_tokens: 30 + (it.response_a.len() + it.response_b.len()) / 4,
                    completion_tokens: 0,
                }
            })
            .collect();
        self.log
            .push(format!("compare {} {}", judge.name, items.len()));
        Ok(out)
    }

    fn provenance(&self) -> crate::Provenance {
        crate::Provenance {
            backend: "fake backend (tsr-loop's test double: no model)".into(),
            judge: "fake judge (scores from a hash of the response)".into(),
            test_doubles: vec!["fake backend".into(), "hash judge".into()],
        }
    }
}
