//! The iteration summary: scores, shares, margins, compute, provenance
//! ([`crate::summary::IterationSummary`]).

use super::*;
use crate::summary::{
    write_sorted, ComputeSummary, CumulativeCompute, CurationSummary, DpoSummary, EvalSummary,
    IterationSummary, JudgingSummary, PairStats, StageCompute,
};

impl Run {
    pub(super) fn summary_stage(&self, it: u32) -> Result<StageRecord> {
        let method = self.config.run.method;
        let idir = self.iter_dir(it);
        let final_pairs: Vec<PairRecord> = fsio::read_jsonl(&self.final_pairs_path(it))?;
        let mut stages = BTreeMap::new();
        let (mut generated, mut gen_prompt, mut judged, mut trained, mut wall) =
            (0u64, 0u64, 0u64, 0u64, 0f64);
        let mut details: HashMap<Stage, Value> = HashMap::new();
        for stage in self.stages() {
            if stage == Stage::Summary {
                continue;
            }
            let r = self.read_marker(it, stage)?;
            generated += r.tokens_generated;
            gen_prompt += r.generation_prompt_tokens;
            judged += r.tokens_judged;
            trained += r.tokens_trained;
            wall += r.wall_s;
            stages.insert(
                stage.name().to_string(),
                StageCompute {
                    wall_s: Some(r.wall_s),
                    tokens_generated: Some(r.tokens_generated),
                    tokens_judged: Some(r.tokens_judged),
                    tokens_trained: Some(r.tokens_trained),
                },
            );
            details.insert(stage, r.details);
        }
        let (mut cg, mut cj, mut ct) = (generated, judged, trained);
        if it > 1 {
            let prev: IterationSummary =
                fsio::read_json(&self.iter_dir(it - 1).join("summary.json"))?;
            let c = &prev.compute.cumulative;
            cg += c.tokens_generated.unwrap_or(0);
            cj += c.tokens_judged.unwrap_or(0);
            ct += c.tokens_trained.unwrap_or(0);
        }
        let stats = PairStats::of(&final_pairs);
        let n = final_pairs.len();
        let share = |f: &dyn Fn(&PairRecord) -> bool| -> Option<f64> {
            (n > 0).then(|| final_pairs.iter().filter(|p| f(p)).count() as f64 / n as f64)
        };
        let rejected_from_initial = if method.uses_initial() {
            share(&|p| p.rejected.pool == Pool::Initial)
        } else {
            None
        };
        let chosen_from_future = if method.uses_future() {
            share(&|p| p.chosen.pool == Pool::Future)
        } else {
            None
        };
        let train: TrainDetails = self.train_details(it, Stage::Train)?;
        let train_future: Option<TrainDetails> =
            self.details_of(it, Stage::TrainFuture, &details)?;
        let mut judging: BTreeMap<String, JudgingSummary> = BTreeMap::new();
        for s in self.stages() {
            if s.name().starts_with("judge-") {
                if let Some(d) = self.details_of(it, s, &details)? {
                    judging.insert(s.name().to_string(), d);
                }
            }
        }
        let similarity: Option<SimilarityDetails> =
            self.details_of(it, Stage::Similarity, &details)?;
        let eval: Option<EvalSummary> = self.details_of(it, Stage::Eval, &details)?;
        let provenance = self.provenance()?;
        let doubles_used = provenance
            .as_ref()
            .map(|p| p.test_doubles.clone())
            .unwrap_or_default();
        let summary = IterationSummary {
            iteration: Some(it),
            method: Some(method),
            provenance,
            results_are_real: Some(doubles_used.is_empty()),
            test_doubles: doubles_used,
            prompts: Some(self.iteration_prompts(it).len()),
            model: Some(self.current_model(it)?.name),
            trained_model: Some(train.model.clone()),
            pairs: Some(n),
            chosen_score_mean: stats.chosen_score_mean,
            rejected_score_mean: stats.rejected_score_mean,
            score_gap: stats.score_gap,
            rejected_from_initial_share: rejected_from_initial,
            chosen_from_future_share: chosen_from_future,
            similarity_mean: similarity.and_then(|s| s.mean),
            dpo: Some(DpoSummary::from_details(&train)),
            dpo_future: train_future.as_ref().map(DpoSummary::from_details),
            curation: CurationSummary {
                phase1: self.details_of(it, Stage::Curate1, &details)?,
                phase2: self.details_of(it, Stage::Curate2, &details)?,
            },
            judging,
            eval,
            compute: ComputeSummary {
                tokens_generated: Some(generated),
                generation_prompt_tokens: Some(gen_prompt),
                tokens_judged: Some(judged),
                tokens_trained: Some(trained),
                wall_s: Some(wall),
                stages,
                cumulative: CumulativeCompute {
                    tokens_generated: Some(cg),
                    tokens_judged: Some(cj),
                    tokens_trained: Some(ct),
                },
            },
        };
        write_sorted(&idir.join("summary.json"), &summary)?;
        tracing::info!(pairs = n, gap = ?stats.score_gap, "iteration summary written");
        Ok(StageRecord::default())
    }

    /// The `details` of a completed stage of iteration `it` read as `T` (the fields `T` lacks
    /// ignored); `None` when the stage is not in the plan.
    fn details_of<T: serde::de::DeserializeOwned>(
        &self,
        it: u32,
        stage: Stage,
        all: &HashMap<Stage, Value>,
    ) -> Result<Option<T>> {
        all.get(&stage)
            .map(|d| {
                T::deserialize(d).map_err(|e| LoopError::Record {
                    path: self.marker(it, stage),
                    message: e.to_string(),
                })
            })
            .transpose()
    }
}

/// The part of the similarity stage's details the summary uses.
#[derive(Deserialize)]
struct SimilarityDetails {
    #[serde(default)]
    mean: Option<f64>,
}
