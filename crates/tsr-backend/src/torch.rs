//! [`TorchBackend`], the libtorch implementation of `tsr_loop::Backend`: tsr-model loads models,
//! tsr-sample samples, tsr-judge's `LlmJudge` judges (with the current model as the judge),
//! tsr-dpo trains.
//!
//! One model is kept loaded at a time (the one used last); training loads a fresh copy of its
//! init model, because DPO updates the weights in place.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;
use tsr_dpo::data::{Message, PairCompletion, PairPrompt};
use tsr_dpo::{DpoConfig, PreferencePair, SampledPair};
use tsr_judge::{
    ChatMessage, Completion, GenRequest, Generator, Judge, JudgeConfig, JudgeItem, JudgeSettings,
    LlmJudge, SamplingParams, Verdict,
};
use tsr_loop::{BackendError, ModelRef, TrainPair, TrainReport};
use tsr_model::{Device, Kind, LoadOptions, Loaded};
use tsr_sample::{Sampler, SamplerOptions};

/// Settings of the real backend, mapped from the run configuration's `[judge]` and `[dpo]`.
#[derive(Debug, Clone)]
pub struct TorchSettings {
    pub device: Device,
    pub judge: JudgeSettings,
    pub dpo: DpoConfig,
    pub sampler: SamplerOptions,
    /// Replace the LLM judge by a hash of (seed, item id, response): a pipeline check for
    /// models that cannot judge (real sampling, training and similarity; meaningless scores).
    pub hash_judge: bool,
}

impl TorchSettings {
    /// Validate the opaque `[judge]` and `[dpo]` tables of a run configuration.
    pub fn from_config(cfg: &tsr_loop::Config, device: Device) -> Result<Self> {
        let judge: JudgeConfig = toml::Value::Table(cfg.judge.clone())
            .try_into()
            .context("invalid [judge] section")?;
        let judge = judge.validate().context("invalid [judge] section")?;
        let dpo: DpoConfig = toml::Value::Table(cfg.dpo.clone())
            .try_into()
            .context("invalid [dpo] section")?;
        dpo.validate().context("invalid [dpo] section")?;
        Ok(Self {
            device,
            judge,
            dpo,

            sampler: SamplerOptions::default(),
            hash_judge: false,
        })
    }
}

/// The real backend.
pub struct TorchBackend {
    settings: TorchSettings,
    loaded: Option<(String, Loaded)>,
}

impl std::fmt::Debug for TorchBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchBackend")
            .field("settings", &self.settings)
            .field("loaded", &self.loaded.as_ref().map(|l| &l.0))
            .finish_non_exhaustive()
    }
}

fn boxed(e: anyhow::Error) -> BackendError {
    format!("{e:#}").into()
}

impl TorchBackend {
    pub fn new(settings: TorchSettings) -> Self {
        Self {
            settings,
            loaded: None,
        }
    }

    fn opts(&self) -> LoadOptions {
        LoadOptions {
            device: self.settings.device,
            kind: Kind::Float,
        }
    }

    fn model(&mut self, m: &ModelRef) -> Result<&Loaded> {
        if self.loaded.as_ref().map(|(l, _)| l.as_str()) != Some(m.location.as_str()) {
            self.loaded = None; // free the old one first
            tracing::info!(model = %m.name, location = %m.location, "loading model");
            let loaded = tsr_model::load(&m.location, &self.opts())
                .with_context(|| format!("loading model {} ({})", m.name, m.location))?;
            self.loaded = Some((m.location.clone(), loaded));
        }
        Ok(&self.loaded.as_ref().expect("just loaded").1)
    }

    fn generate_impl(
        &mut self,
        m: &ModelRef,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>> {
        let options = self.settings.sampler.clone();
        let loaded = self.model(m)?;
        let mut sampler = Sampler::new(&loaded.model, &loaded.tokenizer)
            .with_generation_config(&loaded.generation)
            .with_options(options);
        sampler
            .generate(requests, params)
            .map_err(|e| anyhow::Error::from_boxed(e).context("sampling"))
    }

    fn judge_impl(&mut self, m: &ModelRef, items: &[JudgeItem], seed: u64) -> Result<Vec<Verdict>> {
        if self.settings.hash_judge {
            return Ok(items.iter().map(|i| hash_verdict(i, seed)).collect());
        }
        let settings = self.settings.judge.clone().with_seed(seed);
        let options = self.settings.sampler.clone();
        let loaded = self.model(m)?;
        let sampler = Sampler::new(&loaded.model, &loaded.tokenizer)
            .with_generation_config(&loaded.generation)
            .with_options(options);
        let mut judge = LlmJudge::new(sampler, settings);
        let mut verdicts = judge.judge(items).context("judging")?;
        let stats = judge.stats();
        tracing::info!(
            items = stats.items,
            unscored = stats.unscored_items,
            unparsed_samples = stats.unparsed_samples,
            unfinished_samples = stats.unfinished_samples,
            "judged"
        );
        // The rendered judge prompt is the template filled with the item: not worth storing.
        for v in &mut verdicts {
            v.judge_prompt = None;
        }
        Ok(verdicts)
    }

    fn compare_impl(
        &mut self,
        m: &ModelRef,
        items: &[tsr_judge::PairwiseItem],
        mode: tsr_judge::PairwiseMode,
        seed: u64,
    ) -> Result<Vec<tsr_judge::PairwiseVerdict>> {
        use tsr_judge::PairwiseJudge;
        if self.settings.hash_judge {
            return Ok(items.iter().map(|i| hash_preference(i, seed)).collect());
        }
        let settings = tsr_judge::PairwiseSettings {
            mode,
            seed,
            ..tsr_judge::PairwiseSettings::default()
        };
        let options = self.settings.sampler.clone();
        let loaded = self.model(m)?;
        let sampler = Sampler::new(&loaded.model, &loaded.tokenizer)
            .with_generation_config(&loaded.generation)
            .with_options(options);
        let mut judge = tsr_judge::LlmPairwiseJudge::new(sampler, settings)?;
        judge.compare(items).context("pairwise judging")
    }

    fn train_impl(
        &mut self,
        init: &ModelRef,
        pairs: &[TrainPair],
        out_dir: &Path,
        seed: u64,
    ) -> Result<TrainReport> {
        // DPO changes the weights in place: train a fresh copy, never the cached model.
        self.loaded = None;
        tracing::info!(init = %init.name, pairs = pairs.len(), "training with DPO");
        let mut loaded = tsr_model::load(&init.location, &self.opts())
            .with_context(|| format!("loading model {} ({})", init.name, init.location))?;
        let mut cfg = self.settings.dpo.clone();
        cfg.seed = seed;
        let checked = cfg.validate()?;
        let chat = |p: &TrainPair| {
            PairPrompt::Chat(vec![Message {
                role: "user".into(),
                content: p.prompt.clone(),
            }])
        };
        // Train on the token ids that were sampled (EOS only where the model wrote it). Pairs
        // without ids (an engine that returns only text) are trained on their text, tokenized
        // as `tsr train-dpo` does.
        let sampled = pairs
            .iter()
            .all(|p| !p.chosen_token_ids.is_empty() && !p.rejected_token_ids.is_empty());
        let (tokenized, dropped, truncated) = if sampled {
            let data: Vec<SampledPair> = pairs
                .iter()
                .map(|p| SampledPair {
                    prompt: chat(p),
                    chosen_ids: p.chosen_token_ids.clone(),
                    rejected_ids: p.rejected_token_ids.clone(),
                })
                .collect();
            let truncated = tsr_dpo::count_unended(&data, loaded.tokenizer.eos_ids());
            let (t, d) = tsr_dpo::tokenize_sampled_pairs(
                &loaded.tokenizer,
                &data,
                cfg.max_length,
                cfg.truncation,
            )?;
            (t, d, Some(truncated))
        } else {
            tracing::warn!("pairs without sampled token ids: training on their re-tokenized text");
            let data: Vec<PreferencePair> = pairs
                .iter()
                .map(|p| PreferencePair {
                    prompt: chat(p),
                    chosen: PairCompletion::Text(p.chosen.clone()),
                    rejected: PairCompletion::Text(p.rejected.clone()),
                })
                .collect();
            let (t, d) =
                tsr_dpo::tokenize_pairs(&loaded.tokenizer, &data, cfg.max_length, cfg.truncation)?;
            (t, d, None)
        };
        let pass_tokens: u64 = tokenized
            .iter()
            .map(|t| (t.chosen.ids.len() + t.rejected.ids.len()) as u64)
            .sum();
        // The trainer's work folder (reference cache, step log, checkpoints when the `[dpo]`
        // section sets `checkpoint_every`) sits beside the model folder, so a crashed training
        // resumes from its last checkpoint when the loop retries the stage.
        let work = out_dir.with_extension("dpo-work");
        let mut steps: Vec<tsr_dpo::StepMetrics> = Vec::new();
        let pad_id = loaded.tokenizer.pad_id();
        let report = tsr_dpo::train_dpo_tokenized(
            &mut loaded.model,
            pad_id,
            tokenized,
            dropped,
            &checked,
            &work,
            |m, total| {
                tracing::info!(
                    step = m.step,
                    total,
                    loss = m.loss,
                    margin = m.rewards_margins,
                    accuracy = m.rewards_accuracies,
                    "dpo step"
                );
                steps.push(m.clone());
            },
        );
        let report = report?;
        // The work folder holds the reference cache and timing-laden logs: not part of the run.
        match std::fs::remove_dir_all(&work) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", work.display()));
            }
            _ => {}
        }
        loaded
            .model
            .save_hf(out_dir, &loaded.tokenizer, &loaded.generation)?;
        let epochs_done = report.summary.last.as_ref().map_or(0.0, |l| l.epoch);
        let steps_log: Vec<Value> = steps
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    // Wall-clock numbers would make otherwise identical runs differ.
                    o.remove("tokens/s");
                    o.remove("step_seconds");
                }
                v
            })
            .collect();
        Ok(TrainReport {
            pairs: report.summary.pairs,
            epochs: cfg.epochs as usize,
            steps: report.summary.steps as usize,
            tokens: (pass_tokens as f64 * epochs_done).round() as u64,
            reward_margin: TrainReport::last_epoch_mean(&steps_log, "rewards/margins"),
            reward_accuracy: TrainReport::last_epoch_mean(&steps_log, "rewards/accuracies"),
            final_loss: report.summary.last.as_ref().map(|l| l.loss),
            sampled_ids: sampled,
            truncated_completions: truncated,
            steps_log,
        })
    }

    fn similarity_impl(&mut self, m: &ModelRef, pairs: &[TrainPair]) -> Result<Vec<f64>> {
        let loaded = self.model(m)?;
        let tok = &loaded.tokenizer;
        let mut chosen = Vec::with_capacity(pairs.len());
        let mut rejected = Vec::with_capacity(pairs.len());
        for p in pairs {
            let text = tok.apply_chat_template(&[ChatMessage::user(p.prompt.clone())], true)?;
            let prompt = tok.encode(&text, false)?;
            let ids = |sampled: &[u32], text: &str| -> Result<Vec<u32>> {
                if sampled.is_empty() {
                    Ok(tok.encode(text, false)?)
                } else {
                    Ok(sampled.to_vec())
                }
            };
            chosen.push((prompt.clone(), ids(&p.chosen_token_ids, &p.chosen)?));
            rejected.push((prompt, ids(&p.rejected_token_ids, &p.rejected)?));
        }
        let pad = tok.pad_id();
        let hc = tsr_dpo::mean_completion_hidden(&loaded.model, &chosen, pad, 8)?;
        let hr = tsr_dpo::mean_completion_hidden(&loaded.model, &rejected, pad, 8)?;
        Ok(tsr_dpo::row_cosines(&hc, &hr)?)
    }
}

/// A verdict from a hash (see [`TorchSettings::hash_judge`]): scores on the half-point grid.
/// The hash judge's pairwise verdict (a test double, like [`hash_verdict`]).
fn hash_preference(item: &tsr_judge::PairwiseItem, seed: u64) -> tsr_judge::PairwiseVerdict {
    let mut h = tsr_judge::item_seed(seed, &item.id);
    for b in item
        .response_a
        .bytes()
        .chain([0xff])
        .chain(item.response_b.bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let preference = [
        tsr_judge::Preference::A,
        tsr_judge::Preference::B,
        tsr_judge::Preference::Tie,
    ][(h % 3) as usize];
    tsr_judge::PairwiseVerdict {
        id: item.id.clone(),
        preference: Some(preference),
        text: Some("hash judge".into()),
        probs: None,
        failure: None,
        prompt_tokens: 0,
        completion_tokens: 0,
    }
}

fn hash_verdict(item: &JudgeItem, seed: u64) -> Verdict {
    let mut h = tsr_judge::item_seed(seed, &item.id);
    for b in item.response.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let text = format!("hash judge\nScore: {}", (h % 11) as f64 / 2.0);
    let parsed = tsr_judge::parse_score(&text);
    Verdict {
        id: item.id.clone(),
        judge_prompt: None,
        samples: vec![tsr_judge::JudgeSample {
            finish_reason: None,
            score: parsed.as_ref().ok().copied(),
            failure: parsed.err(),
            prompt_tokens: 0,
            completion_tokens: 0,
            digit_probs: None,
            digit_mass: None,
            text,
        }],
        score: None,
    }
    .with_mean()
}

trait WithMean {
    fn with_mean(self) -> Self;
}

impl WithMean for Verdict {
    fn with_mean(mut self) -> Self {
        self.score = tsr_judge::mean_score(self.samples.iter().map(|s| &s.score));
        self
    }
}

impl TorchSettings {
    /// What this backend records in a run folder (see `tsr_loop::Provenance`).
    pub fn provenance(&self) -> tsr_loop::Provenance {
        let (judge, test_doubles) = if self.hash_judge {
            (
                "hash judge (scores from a hash of seed, item id and response; no model)".into(),
                vec!["hash judge".into()],
            )
        } else {
            (self.judge.describe(), Vec::new())
        };
        tsr_loop::Provenance {
            backend: "libtorch (tsr-model, tsr-sample, tsr-dpo)".into(),
            judge,
            test_doubles,
        }
    }
}

impl tsr_loop::Backend for TorchBackend {
    fn provenance(&self) -> tsr_loop::Provenance {
        self.settings.provenance()
    }

    fn generate(
        &mut self,
        model: &ModelRef,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, BackendError> {
        self.generate_impl(model, requests, params).map_err(boxed)
    }

    fn judge(
        &mut self,
        judge: &ModelRef,
        items: &[JudgeItem],
        seed: u64,
    ) -> Result<Vec<Verdict>, BackendError> {
        self.judge_impl(judge, items, seed).map_err(boxed)
    }

    fn train_dpo(
        &mut self,
        init: &ModelRef,
        pairs: &[TrainPair],
        out_dir: &Path,
        seed: u64,
    ) -> Result<TrainReport, BackendError> {
        self.train_impl(init, pairs, out_dir, seed).map_err(boxed)
    }

    fn representation_similarity(
        &mut self,
        model: &ModelRef,
        pairs: &[TrainPair],
    ) -> Result<Vec<f64>, BackendError> {
        self.similarity_impl(model, pairs).map_err(boxed)
    }

    fn compare(
        &mut self,
        judge: &ModelRef,
        items: &[tsr_judge::PairwiseItem],
        mode: tsr_judge::PairwiseMode,
        seed: u64,
    ) -> Result<Vec<tsr_judge::PairwiseVerdict>, BackendError> {
        self.compare_impl(judge, items, mode, seed).map_err(boxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_map_onto_judge_and_dpo_settings() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
        let mut configs = vec![tsr_loop::defaults::config().unwrap()];
        for name in ["tiny.toml", "tsr-paper.toml"] {
            configs.push(tsr_loop::Config::load(&dir.join(name)).unwrap());
        }
        for c in configs {
            let s = TorchSettings::from_config(&c, Device::Cpu).unwrap();
            assert!(s.judge.samples() >= 1);
            assert!(s.dpo.beta > 0.0);
        }
        let paper = tsr_loop::Config::load(&dir.join("tsr-paper.toml")).unwrap();
        let s = TorchSettings::from_config(&paper, Device::Cpu).unwrap();
        assert_eq!(s.judge.samples(), 3);
        assert_eq!(paper.loop_.k, 7);
        assert_eq!(s.dpo.batch_size * s.dpo.gradient_accumulation_steps, 16);
    }

    /// Issue 14: every shipped example's prompts (and eval prompts) file is in the repository,
    /// unless the example marks it as the user's own with a `path/to/` placeholder.
    #[test]
    fn shipped_example_configs_point_at_files_that_exist() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
        let mut checked = 0;
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .chain(std::fs::read_dir(dir.join("reproduction")).unwrap());
        for entry in files {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let c = tsr_loop::Config::load(&path).unwrap();
            // The libtorch sections parse and validate too.
            TorchSettings::from_config(&c, Device::Cpu)
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let eval = c.eval.as_ref().and_then(|e| e.prompts.clone());
            for p in std::iter::once(c.run.prompts.clone()).chain(eval) {
                assert!(
                    p.is_file() || p.to_string_lossy().contains("path/to/"),
                    "{}: prompts file {} is not in the repository",
                    path.display(),
                    p.display()
                );
            }
            checked += 1;
        }
        assert!(checked >= 6);
        // The reproduction's configs differ only in the method and its iterations.
        let repro = |m: &str| {
            let mut c =
                tsr_loop::Config::load(&dir.join(format!("reproduction/{m}.toml"))).unwrap();
            (c.run.method, c.run.iterations) = (tsr_loop::Method::Tsr, 2);
            format!("{c:?}")
        };
        for m in ["sr", "past-only", "future-only"] {
            assert_eq!(repro(m), repro("tsr"), "reproduction/{m}.toml");
        }
        let tiny = tsr_loop::Config::load(&dir.join("tiny.toml")).unwrap();
        assert!(tiny.run.prompts.is_file());
    }

    #[test]
    fn bad_backend_sections_are_errors() {
        for (section, text) in [
            ("dpo", "beta = -1.0"),
            ("judge", "samples = 0"),
            ("judge", "unknown = 1"),
        ] {
            let mut c = tsr_loop::Config::default();
            let table: toml::Table = toml::from_str(text).unwrap();
            if section == "dpo" {
                c.dpo = table;
            } else {
                c.judge = table;
            }
            let e = TorchSettings::from_config(&c, Device::Cpu).unwrap_err();
            assert!(format!("{e:#}").contains(section), "{text}: {e:#}");
        }
    }
}
