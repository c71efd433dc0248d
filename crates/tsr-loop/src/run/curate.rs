//! The curation stages: Phase 1 (SR rule or anchored rejection) and Phase 2 (future-guided
//! chosen), with every decision and the kept pairs written.

use super::*;

impl Run {
    pub(super) fn load_pool_data(&self, it: u32, pool: Pool) -> Result<PoolData> {
        let idir = self.iter_dir(it);
        let gens: Vec<GenerationRecord> = read_chunks(&idir.join(pool_dir("gen", pool)))?;
        let verdicts: Vec<VerdictRecord> = read_chunks(&idir.join(pool_dir("judge", pool)))?;
        Ok((
            gens.into_iter().map(|g| (g.prompt_id.clone(), g)).collect(),
            verdicts
                .into_iter()
                .map(|v| (v.prompt_id.clone(), v))
                .collect(),
        ))
    }

    /// Resolve the kept decisions into pairs with their texts, drop the pairs whose texts are
    /// degenerate ([`tsr_curate::degenerate_pair`]: empty chosen, chosen = rejected) with their
    /// reason, and write `decisions-N.jsonl` and `pairs-N.jsonl`.
    pub(super) fn write_decisions(
        &self,
        it: u32,
        n: u32,
        mut decisions: Vec<DecisionRecord>,
    ) -> Result<StageRecord> {
        let idir = self.iter_dir(it);
        let mut pools: HashMap<Pool, PoolData> = HashMap::new();
        for pool in [Pool::Current, Pool::Initial, Pool::Future] {
            if idir.join(pool_dir("judge", pool)).exists() {
                pools.insert(pool, self.load_pool_data(it, pool)?);
            }
        }
        let text: HashMap<&str, &str> = self
            .prompts
            .iter()
            .map(|p| (p.id.as_str(), p.prompt.as_str()))
            .collect();
        let side = |pid: &str, pick: tsr_curate::Pick| -> Result<PairSide> {
            let missing = || LoopError::Protocol {
                iteration: it,
                stage: format!("curate-{n}"),
                message: format!(
                    "prompt `{pid}`: no {} response {}",
                    pick.pool.as_str(),
                    pick.index
                ),
            };
            let (g, v) = pools.get(&pick.pool).ok_or_else(missing)?;
            let comp = g
                .get(pid)
                .and_then(|g| g.completions.get(pick.index))
                .ok_or_else(missing)?;
            let verdict = v
                .get(pid)
                .and_then(|v| v.verdicts.get(pick.index))
                .ok_or_else(missing)?;
            Ok(PairSide {
                pool: pick.pool,
                index: pick.index,
                score: pick.score,
                text: comp.text.clone(),
                token_ids: comp.token_ids.clone(),
                judge_samples: verdict.samples.clone(),
            })
        };
        let mut pairs = Vec::new();
        let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
        for d in &mut decisions {
            if let Some((c, r)) = d.decision.pair() {
                let (chosen, rejected) = (side(&d.prompt_id, c)?, side(&d.prompt_id, r)?);
                d.decision = d.decision.clone().check_texts(&chosen.text, &rejected.text);
                if d.decision.is_kept() {
                    pairs.push(PairRecord {
                        prompt_id: d.prompt_id.clone(),
                        prompt: text
                            .get(d.prompt_id.as_str())
                            .copied()
                            .unwrap_or_default()
                            .to_string(),
                        chosen,
                        rejected,
                        replaced_from_future: d.decision.replaced_from_future,
                    });
                    continue;
                }
                tracing::debug!(prompt = %d.prompt_id, reason = ?d.decision.dropped, "degenerate pair dropped");
            }
            let reason = d.decision.dropped.map(|r| r.as_str()).unwrap_or("unknown");
            *dropped.entry(reason.to_string()).or_default() += 1;
        }
        fsio::write_jsonl(&idir.join(format!("decisions-{n}.jsonl")), &decisions)?;
        fsio::write_jsonl(&idir.join(format!("pairs-{n}.jsonl")), &pairs)?;
        tracing::info!(
            kept = pairs.len(),
            dropped = decisions.len() - pairs.len(),
            "curated"
        );
        Ok(StageRecord {
            details: json!({"prompts": decisions.len(), "kept": pairs.len(), "dropped": dropped, "pairs": PairStats::of(&pairs)}),
            ..StageRecord::default()
        })
    }

    pub(super) fn curate1(&self, it: u32) -> Result<StageRecord> {
        let (_, cur) = self.load_pool_data(it, Pool::Current)?;
        let init = if self.config.run.method.uses_initial() {
            Some(self.load_pool_data(it, Pool::Initial)?.1)
        } else {
            None
        };
        let mut decisions = Vec::new();
        for p in self.iteration_prompts(it) {
            let c = cur
                .get(&p.id)
                .map(VerdictRecord::scores)
                .unwrap_or_default();
            let decision = match &init {
                Some(init) => {
                    let i = init
                        .get(&p.id)
                        .map(VerdictRecord::scores)
                        .unwrap_or_default();
                    anchored_rejection(&c, &i)
                }
                None => self_rewarding(&c),
            };
            decisions.push(DecisionRecord {
                prompt_id: p.id.clone(),
                decision,
            });
        }
        self.write_decisions(it, 1, decisions)
    }

    pub(super) fn curate2(&self, it: u32) -> Result<StageRecord> {
        let p1: Vec<DecisionRecord> =
            fsio::read_jsonl(&self.iter_dir(it).join("decisions-1.jsonl"))?;
        let (_, fut) = self.load_pool_data(it, Pool::Future)?;
        let decisions = p1
            .into_iter()
            .map(|d| {
                let f = fut
                    .get(&d.prompt_id)
                    .map(VerdictRecord::scores)
                    .unwrap_or_default();
                DecisionRecord {
                    decision: future_guided(&d.decision, &f),
                    prompt_id: d.prompt_id,
                }
            })
            .collect();
        self.write_decisions(it, 2, decisions)
    }
}
