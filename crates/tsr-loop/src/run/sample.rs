//! The sampling and judging stages: `P_i`, `P_0` (reused across iterations) and `P_f`, chunk by
//! chunk, and the verdicts of `M_i` on each pool.

use super::*;

impl Run {
    pub(super) fn chunks<'a, T>(&self, items: &'a [T]) -> impl Iterator<Item = (usize, &'a [T])> {
        items.chunks(self.config.loop_.chunk_prompts).enumerate()
    }

    /// All `P_0` samples earlier iterations drew, by prompt id.
    pub(super) fn initial_cache(&self, before: u32) -> Result<HashMap<String, GenerationRecord>> {
        let mut cache = HashMap::new();
        for it in 1..before {
            let dir = self.iter_dir(it).join(pool_dir("gen", Pool::Initial));
            for rec in read_chunks::<GenerationRecord>(&dir)? {
                let origin = rec.reused_from.unwrap_or(it);
                cache
                    .entry(rec.prompt_id.clone())
                    .or_insert(GenerationRecord {
                        reused_from: Some(origin),
                        ..rec
                    });
            }
        }
        Ok(cache)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn gen_stage(
        &self,
        b: &mut dyn Backend,
        obs: &mut dyn Observer,
        it: u32,
        stage: Stage,
        pool: Pool,
        model: &ModelRef,
        prompts: &[&PromptRecord],
    ) -> Result<StageRecord> {
        let dir = self.iter_dir(it).join(pool_dir("gen", pool));
        fsio::create_dir(&dir)?;
        let cache = if pool == Pool::Initial {
            self.initial_cache(it)?
        } else {
            HashMap::new()
        };
        let k = self.config.loop_.k;
        let total = prompts.len() as u64;
        obs.event(&Event::StageStarted {
            iteration: it,
            stage: stage.name(),
            total,
        });
        let mut done = 0u64;
        for (c, chunk) in self.chunks(prompts) {
            let path = dir.join(format!("{c:05}.jsonl"));
            done += chunk.len() as u64;
            if path.exists() {
                obs.event(&Event::StageProgress {
                    iteration: it,
                    stage: stage.name(),
                    done,
                    total,
                });
                continue;
            }
            let seed_of = |p: &PromptRecord| match pool {
                // P_0 seeds do not depend on the iteration, so a cached sample equals a fresh one.
                Pool::Initial => derive_seed(self.config.run.seed, &["gen-initial", &p.id]),
                _ => derive_seed(self.config.run.seed, &[&iter_name(it), stage.name(), &p.id]),
            };
            let missing: Vec<&PromptRecord> = chunk
                .iter()
                .copied()
                .filter(|p| !cache.contains_key(&p.id))
                .collect();
            let requests: Vec<GenRequest> = missing
                .iter()
                .map(|p| GenRequest {
                    prompt: Prompt::user(p.prompt.clone()),
                    n: k,
                    seed: seed_of(p),
                })
                .collect();
            let mut fresh: HashMap<&str, Vec<tsr_judge::Completion>> = HashMap::new();
            if !requests.is_empty() {
                let out = b
                    .generate(model, &requests, &self.config.sampling)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: stage.name().into(),
                        source,
                    })?;
                if out.len() != requests.len() || out.iter().any(|o| o.len() != k) {
                    return Err(LoopError::Protocol {
                        iteration: it,
                        stage: stage.name().into(),
                        message: format!(
                            "backend returned {} result lists for {} requests of {k}",
                            out.len(),
                            requests.len()
                        ),
                    });
                }
                for (p, comps) in missing.iter().zip(out) {
                    fresh.insert(p.id.as_str(), comps);
                }
            }
            let records: Vec<GenerationRecord> = chunk
                .iter()
                .map(|p| match cache.get(&p.id) {
                    Some(r) => r.clone(),
                    None => GenerationRecord {
                        prompt_id: p.id.clone(),
                        pool,
                        model: model.name.clone(),
                        seed: seed_of(p),
                        completions: fresh.remove(p.id.as_str()).unwrap_or_default(),
                        reused_from: None,
                    },
                })
                .collect();
            fsio::write_jsonl(&path, &records)?;
            tracing::debug!(chunk = c, prompts = chunk.len(), "generated");
            obs.event(&Event::StageProgress {
                iteration: it,
                stage: stage.name(),
                done,
                total,
            });
        }
        // Counted from the files, so a resumed stage reports what an uninterrupted one would.
        let recs: Vec<GenerationRecord> = read_chunks(&dir)?;
        let mut rec = StageRecord::default();
        let mut reused = 0usize;
        for r in &recs {
            if r.reused_from.is_some() {
                reused += 1;
                continue;
            }
            // The K samples of a prompt share one prefill: its tokens count once.
            rec.generation_prompt_tokens +=
                r.completions.first().map_or(0, |c| c.prompt_tokens) as u64;
            for c in &r.completions {
                rec.tokens_generated += c.token_ids.len() as u64;
            }
        }
        rec.details = json!({"prompts": recs.len(), "responses": recs.len() * k, "reused_prompts": reused, "model": model.name});
        Ok(rec)
    }

    pub(super) fn judge_stage(
        &self,
        b: &mut dyn Backend,
        obs: &mut dyn Observer,
        it: u32,
        stage: Stage,
        pool: Pool,
        judge: &ModelRef,
    ) -> Result<StageRecord> {
        let gens: Vec<GenerationRecord> =
            read_chunks(&self.iter_dir(it).join(pool_dir("gen", pool)))?;
        let dir = self.iter_dir(it).join(pool_dir("judge", pool));
        fsio::create_dir(&dir)?;
        let text: HashMap<&str, &str> = self
            .prompts
            .iter()
            .map(|p| (p.id.as_str(), p.prompt.as_str()))
            .collect();
        let judge_seed = derive_seed(self.config.run.seed, &[&iter_name(it), stage.name()]);
        let total = gens.len() as u64;
        obs.event(&Event::StageStarted {
            iteration: it,
            stage: stage.name(),
            total,
        });
        let mut done = 0u64;
        for (c, chunk) in self.chunks(&gens) {
            let path = dir.join(format!("{c:05}.jsonl"));
            done += chunk.len() as u64;
            if path.exists() {
                obs.event(&Event::StageProgress {
                    iteration: it,
                    stage: stage.name(),
                    done,
                    total,
                });
                continue;
            }
            let mut items = Vec::new();
            for g in chunk {
                let instruction = text.get(g.prompt_id.as_str()).copied().unwrap_or_default();
                for (j, comp) in g.completions.iter().enumerate() {
                    let id = format!("{}/{}/{}/{j}", iter_name(it), pool.as_str(), g.prompt_id);
                    items.push(JudgeItem::new(id, instruction, comp.text.clone()));
                }
            }
            let verdicts = if items.is_empty() {
                Vec::new()
            } else {
                b.judge(judge, &items, judge_seed)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: stage.name().into(),
                        source,
                    })?
            };
            if verdicts.len() != items.len() {
                return Err(LoopError::Protocol {
                    iteration: it,
                    stage: stage.name().into(),
                    message: format!(
                        "backend returned {} verdicts for {} responses",
                        verdicts.len(),
                        items.len()
                    ),
                });
            }
            let mut vs = verdicts.into_iter().zip(items);
            let mut records = Vec::new();
            for g in chunk {
                let verdicts = (0..g.completions.len())
                    .map(|index| {
                        let (v, item) = vs.next().expect("counted above");
                        ResponseVerdict {
                            index,
                            item: item.id,
                            score: v.score.filter(|s| s.is_finite()),
                            samples: v.samples,
                        }
                    })
                    .collect();
                records.push(VerdictRecord {
                    prompt_id: g.prompt_id.clone(),
                    pool,
                    judge: judge.name.clone(),
                    seed: judge_seed,
                    verdicts,
                });
            }
            fsio::write_jsonl(&path, &records)?;
            obs.event(&Event::StageProgress {
                iteration: it,
                stage: stage.name(),
                done,
                total,
            });
        }
        let recs: Vec<VerdictRecord> = read_chunks(&dir)?;
        let mut rec = StageRecord::default();
        let (mut responses, mut unscored, mut samples, mut unparsed) =
            (0usize, 0usize, 0usize, 0usize);
        let mut masses = Vec::new();
        for r in &recs {
            for v in &r.verdicts {
                responses += 1;
                unscored += usize::from(v.score.is_none());
                samples += v.samples.len();
                unparsed += v.samples.iter().filter(|s| s.score.is_none()).count();
                masses.extend(v.samples.iter().filter_map(|s| s.digit_mass));
                rec.tokens_judged += v.tokens();
            }
        }
        let mass_mean = mean(masses.iter().copied());
        let mass_min = masses.iter().copied().reduce(f64::min);
        tracing::info!(responses, unscored, unparsed, digit_mass_mean = ?mass_mean, "judged");
        rec.details = json!({"judge": judge.name, "responses": responses, "unscored_responses": unscored,
            "judge_samples": samples, "unparsed_samples": unparsed,
            "digit_mass_mean": mass_mean, "digit_mass_min": mass_min});
        Ok(rec)
    }
}
