//! The training stages (`M_f`, `M_{i+1}` by DPO) and the hidden-state similarity of the final pairs.

use super::*;

impl Run {
    pub(super) fn train_details(&self, it: u32, stage: Stage) -> Result<TrainDetails> {
        let rec = self.read_marker(it, stage)?;
        serde_json::from_value(rec.details).map_err(|e| LoopError::Record {
            path: self.marker(it, stage),
            message: e.to_string(),
        })
    }

    pub(super) fn train_stage(
        &self,
        b: &mut dyn Backend,
        it: u32,
        stage: Stage,
        init: &ModelRef,
        pairs: &[PairRecord],
        name: &str,
    ) -> Result<StageRecord> {
        let idir = self.iter_dir(it);
        let out = idir.join(name);
        let partial = idir.join(format!("{name}.partial"));
        let report_path = out.join(TRAIN_REPORT);
        let rel = format!("{}/{name}", iter_name(it));
        let details = if pairs.is_empty() {
            let reason = match stage {
                Stage::TrainFuture => SKIPPED_FUTURE,
                _ => SKIPPED_TRAIN,
            };
            tracing::warn!(model = %init.name, "{reason}");
            fsio::remove_if_exists(&out)?;
            TrainDetails {
                model: init.name.clone(),
                trained: false,
                report: None,
                skipped_reason: Some(reason.to_string()),
            }
        } else {
            let mut report: TrainReport = if report_path.exists() {
                // Trained and renamed into place before a crash: keep it.
                fsio::read_json(&report_path)?
            } else {
                fsio::remove_if_exists(&out)?;
                fsio::remove_if_exists(&partial)?;
                fsio::create_dir(&partial)?;
                let train: Vec<TrainPair> = pairs.iter().map(to_train_pair).collect();
                let seed = derive_seed(self.config.run.seed, &[&iter_name(it), stage.name()]);
                let trained = b
                    .train_dpo(init, &train, &partial, seed)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: stage.name().into(),
                        source,
                    })
                    .and_then(|report| {
                        fsio::write_json(&partial.join(TRAIN_REPORT), &report)?;
                        fsio::rename(&partial, &out)?;
                        Ok(report)
                    });
                match trained {
                    Ok(report) => report,
                    Err(e) => {
                        // Never leave a half-written model folder behind (the trainer's own
                        // work folder, if any, stays for it to resume from).
                        if let Err(rm) = fsio::remove_if_exists(&partial) {
                            tracing::warn!(error = %error_chain(&rm), "could not remove a partial model folder");
                        }
                        return Err(e);
                    }
                }
            };
            fsio::write_jsonl(&idir.join(format!("train-{name}.jsonl")), &report.steps_log)?;
            report.steps_log.clear();
            TrainDetails {
                model: rel,
                trained: true,
                report: Some(report),
                skipped_reason: None,
            }
        };
        let tokens = details.report.as_ref().map_or(0, |r| r.tokens);
        Ok(StageRecord {
            tokens_trained: tokens,
            details: serde_json::to_value(&details)
                .map_err(|e| LoopError::Config(e.to_string()))?,
            ..StageRecord::default()
        })
    }

    pub(super) fn similarity_stage(
        &self,
        b: &mut dyn Backend,
        it: u32,
        mi: &ModelRef,
    ) -> Result<StageRecord> {
        let pairs: Vec<PairRecord> = fsio::read_jsonl(&self.final_pairs_path(it))?;
        let sims = if self.config.loop_.similarity && !pairs.is_empty() {
            let train: Vec<TrainPair> = pairs.iter().map(to_train_pair).collect();
            let s =
                b.representation_similarity(mi, &train)
                    .map_err(|source| LoopError::Backend {
                        iteration: it,
                        stage: "similarity".into(),
                        source,
                    })?;
            if s.len() != pairs.len() {
                return Err(LoopError::Protocol {
                    iteration: it,
                    stage: "similarity".into(),
                    message: format!(
                        "backend returned {} similarities for {} pairs",
                        s.len(),
                        pairs.len()
                    ),
                });
            }
            Some(s)
        } else {
            None
        };
        let mean = sims.as_ref().and_then(|s| mean(s.iter().copied()));
        let per_pair: Vec<Value> = match &sims {
            Some(s) => pairs
                .iter()
                .zip(s)
                .map(|(p, c)| json!({"prompt_id": p.prompt_id, "cosine": c}))
                .collect(),
            None => Vec::new(),
        };
        fsio::write_json(
            &self.iter_dir(it).join("similarity.json"),
            &json!({"model": mi.name, "measured": sims.is_some(), "mean": mean, "pairs": per_pair}),
        )?;
        Ok(StageRecord {
            details: json!({"model": mi.name, "mean": mean}),
            ..StageRecord::default()
        })
    }
}
