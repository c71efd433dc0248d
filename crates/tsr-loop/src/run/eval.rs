//! The optional `eval` stage: held-out answers of `M_{i+1}`, `M_i` and `M_0`, compared pairwise.

use super::*;
use crate::summary::{to_sorted_value, EvalMatchup, EvalSummary};

impl Run {
    /// The answers of `model` to the `[eval]` prompts (greedy, seeded per prompt), cached in
    /// `eval/answers-<model>.jsonl`: a model's answers are the same in every iteration that
    /// evaluates it, so `M_i`'s are made once. Returns the texts and the tokens generated now.
    pub(super) fn eval_answers(
        &self,
        b: &mut dyn Backend,
        it: u32,
        model: &ModelRef,
    ) -> Result<(Vec<String>, u64, u64)> {
        let e = self.config.eval.as_ref().expect("[eval] is set");
        let dir = self.dir.join("eval");
        fsio::create_dir(&dir)?;
        let path = dir.join(format!(
            "answers-{}.jsonl",
            model.name.replace(['/', '\\'], "-")
        ));
        if path.exists() {
            let rows: Vec<Value> = fsio::read_jsonl(&path)?;
            let texts: Vec<String> = rows
                .iter()
                .map(|r| r["response"].as_str().unwrap_or_default().to_string())
                .collect();
            if texts.len() == self.eval_prompts.len() {
                // Compute is charged to the iteration that made the answers, whether this stage
                // made them or an interrupted attempt at it did.
                let ours = |r: &&Value| r["iteration"].as_u64() == Some(u64::from(it));
                let count = |k: &str| -> u64 {
                    rows.iter().filter(ours).filter_map(|r| r[k].as_u64()).sum()
                };
                return Ok((texts, count("tokens"), count("prompt_tokens")));
            }
        }
        let params = tsr_judge::SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: e.max_new_tokens,
            ..self.config.sampling.clone()
        };
        let mut rows = Vec::with_capacity(self.eval_prompts.len());
        let (mut generated, mut prompt_tokens) = (0u64, 0u64);
        for chunk in self.eval_prompts.chunks(self.config.loop_.chunk_prompts) {
            let requests: Vec<GenRequest> = chunk
                .iter()
                .map(|p| GenRequest {
                    prompt: Prompt::user(p.prompt.clone()),
                    n: 1,
                    seed: derive_seed(self.config.run.seed, &["eval", &p.id]),
                })
                .collect();
            let out =
                b.generate(model, &requests, &params)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: "eval".into(),
                        source,
                    })?;
            if out.len() != chunk.len() || out.iter().any(|c| c.len() != 1) {
                return Err(LoopError::Protocol {
                    iteration: it,
                    stage: "eval".into(),
                    message: format!(
                        "backend returned {} outputs for {} one-answer requests",
                        out.len(),
                        chunk.len()
                    ),
                });
            }
            for (p, mut c) in chunk.iter().zip(out) {
                let c = c.pop().expect("one completion");
                generated += c.token_ids.len() as u64;
                prompt_tokens += c.prompt_tokens as u64;
                rows.push(json!({"id": p.id, "model": model.name, "iteration": it,
                                 "response": c.text, "finish_reason": c.finish_reason,
                                 "tokens": c.token_ids.len(), "prompt_tokens": c.prompt_tokens}));
            }
        }
        fsio::write_jsonl(&path, &rows)?;
        let texts = rows
            .iter()
            .map(|r| r["response"].as_str().unwrap_or_default().to_string())
            .collect();
        Ok((texts, generated, prompt_tokens))
    }

    /// `[eval]`: win rates of `M_{i+1}` over `M_i` and over `M_0` on the held-out prompts.
    pub(super) fn eval_stage(
        &self,
        b: &mut dyn Backend,
        obs: &mut dyn Observer,
        it: u32,
    ) -> Result<StageRecord> {
        let e = self
            .config
            .eval
            .clone()
            .expect("the eval stage runs only with [eval]");
        let next = self.model_ref(&self.train_details(it, Stage::Train)?.model);
        let prev = self.current_model(it)?;
        let m0 = ModelRef::initial(&self.config.run.model);
        let judge = match e.judge.as_str() {
            "m0" => m0.clone(),
            "current" => next.clone(),
            spec => ModelRef {
                name: spec.to_string(),
                location: spec.to_string(),
            },
        };
        let mut opponents = vec![("vs_previous", prev.clone())];
        if e.vs_initial && prev.name != m0.name {
            opponents.push(("vs_initial", m0.clone()));
        }
        obs.event(&Event::StageStarted {
            iteration: it,
            stage: "eval",
            total: opponents.len() as u64,
        });
        let (model_answers, mut generated, mut gen_prompt) = self.eval_answers(b, it, &next)?;
        let seed = derive_seed(self.config.run.seed, &["eval-judge"]);
        let mut judged = 0u64;
        let mut details = EvalSummary {
            prompts: Some(self.eval_prompts.len()),
            judge: Some(judge.name.clone()),
            mode: Some(e.mode.as_str().to_string()),
            ..EvalSummary::default()
        };
        for (done, (key, opponent)) in opponents.iter().enumerate() {
            let (baseline, g, gp) = self.eval_answers(b, it, opponent)?;
            generated += g;
            gen_prompt += gp;
            let matchups: Vec<tsr_judge::Matchup> = self
                .eval_prompts
                .iter()
                .zip(&model_answers)
                .zip(baseline)
                .map(|((p, m), base)| tsr_judge::Matchup {
                    id: p.id.clone(),
                    instruction: p.prompt.clone(),
                    model: m.clone(),
                    baseline: base,
                })
                .collect();
            let mut pairwise = BackendPairwise {
                backend: &mut *b,
                judge: &judge,
                mode: e.mode,
                seed,
                tokens: 0,
            };
            let (report, records) =
                tsr_judge::win_rate(&mut pairwise, &matchups, seed).map_err(|err| {
                    LoopError::Protocol {
                        iteration: it,
                        stage: "eval".into(),
                        message: error_chain(&err),
                    }
                })?;
            judged += pairwise.tokens;
            fsio::write_jsonl(
                &self
                    .iter_dir(it)
                    .join(format!("eval-{}.jsonl", key.replace('_', "-"))),
                &records,
            )?;
            tracing::info!(
                against = %opponent.name, win_rate = ?report.win_rate, ci_low = ?report.ci_low,
                ci_high = ?report.ci_high, n = report.n, "eval"
            );
            let matchup = Some(EvalMatchup::new(report, &next.name, &opponent.name));
            match *key {
                "vs_previous" => details.vs_previous = matchup,
                _ => details.vs_initial = matchup,
            }
            obs.event(&Event::StageProgress {
                iteration: it,
                stage: "eval",
                done: done as u64 + 1,
                total: opponents.len() as u64,
            });
        }
        if e.vs_initial && details.vs_initial.is_none() {
            // Iteration 1: M_i is M_0.
            details.vs_initial = details.vs_previous.clone();
        }
        Ok(StageRecord {
            tokens_generated: generated,
            generation_prompt_tokens: gen_prompt,
            tokens_judged: judged,
            details: to_sorted_value(&details)?,
            ..StageRecord::default()
        })
    }
}

/// The backend's pairwise judging as a [`tsr_judge::PairwiseJudge`], counting judge tokens.
struct BackendPairwise<'a> {
    backend: &'a mut dyn Backend,
    judge: &'a ModelRef,
    mode: tsr_judge::PairwiseMode,
    seed: u64,
    tokens: u64,
}

impl tsr_judge::PairwiseJudge for BackendPairwise<'_> {
    fn compare(
        &mut self,
        items: &[tsr_judge::PairwiseItem],
    ) -> std::result::Result<Vec<tsr_judge::PairwiseVerdict>, tsr_judge::JudgeError> {
        let v = self
            .backend
            .compare(self.judge, items, self.mode, self.seed)
            .map_err(|source| tsr_judge::JudgeError::Generator {
                requests: items.len(),
                source,
            })?;
        self.tokens += v
            .iter()
            .map(|x| (x.prompt_tokens + x.completion_tokens) as u64)
            .sum::<u64>();
        Ok(v)
    }
    fn describe(&self) -> String {
        format!(
            "{} as pairwise judge, mode {}",
            self.judge.name,
            self.mode.as_str()
        )
    }
}
