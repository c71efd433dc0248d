//! The iteration summary: scores, shares, margins, compute, provenance.

use super::*;

impl Run {
    pub(super) fn summary_stage(&self, it: u32) -> Result<StageRecord> {
        let method = self.config.run.method;
        let idir = self.iter_dir(it);
        let final_pairs: Vec<PairRecord> = fsio::read_jsonl(&self.final_pairs_path(it))?;
        let mut stages = serde_json::Map::new();
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
                stage.name().into(),
                json!({"wall_s": r.wall_s, "tokens_generated": r.tokens_generated,
                       "tokens_judged": r.tokens_judged, "tokens_trained": r.tokens_trained}),
            );
            details.insert(stage, r.details);
        }
        let (mut cg, mut cj, mut ct) = (generated, judged, trained);
        if it > 1 {
            let prev: Value = fsio::read_json(&self.iter_dir(it - 1).join("summary.json"))?;
            let c = &prev["compute"]["cumulative"];
            cg += c["tokens_generated"].as_u64().unwrap_or(0);
            cj += c["tokens_judged"].as_u64().unwrap_or(0);
            ct += c["tokens_trained"].as_u64().unwrap_or(0);
        }
        let stats = pair_stats(&final_pairs);
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
        let train = |s: Stage| details.get(&s).cloned().unwrap_or(Value::Null);
        let dpo_of = |v: Value| -> Value {
            let r = &v["report"];
            let mut o = json!({"model": v["model"], "trained": v["trained"], "pairs": r["pairs"],
                   "reward_margin": r["reward_margin"], "reward_accuracy": r["reward_accuracy"],
                   "final_loss": r["final_loss"], "steps": r["steps"],
                   "sampled_ids": r["sampled_ids"], "truncated_completions": r["truncated_completions"]});
            if let Some(reason) = v.get("skipped_reason") {
                o["skipped_reason"] = reason.clone();
            }
            o
        };
        let judging: serde_json::Map<String, Value> = self
            .stages()
            .iter()
            .filter(|s| s.name().starts_with("judge-"))
            .filter_map(|s| details.get(s).map(|d| (s, d)))
            .map(|(s, d)| {
                (
                    s.name().to_string(),
                    json!({"responses": d["responses"], "unscored_responses": d["unscored_responses"],
                           "unparsed_samples": d["unparsed_samples"],
                           "digit_mass_mean": d["digit_mass_mean"], "digit_mass_min": d["digit_mass_min"]}),
                )
            })
            .collect();
        let curation = |s: Stage| {
            details
                .get(&s)
                .map(|d| json!({"kept": d["kept"], "dropped": d["dropped"], "pairs": d["pairs"]}))
        };
        let provenance = self.provenance()?;
        let doubles_used = provenance
            .as_ref()
            .map(|p| p.test_doubles.clone())
            .unwrap_or_default();
        let summary = json!({
            "iteration": it,
            "method": method.as_str(),
            "provenance": provenance,
            "test_doubles": doubles_used,
            "results_are_real": doubles_used.is_empty(),
            "prompts": self.iteration_prompts(it).len(),
            "model": self.current_model(it)?.name,
            "trained_model": train(Stage::Train)["model"],
            "pairs": n,
            "chosen_score_mean": stats["chosen_score_mean"],
            "rejected_score_mean": stats["rejected_score_mean"],
            "score_gap": stats["score_gap"],
            "rejected_from_initial_share": rejected_from_initial,
            "chosen_from_future_share": chosen_from_future,
            "similarity_mean": details.get(&Stage::Similarity).map(|d| d["mean"].clone()),
            "dpo": dpo_of(train(Stage::Train)),
            "dpo_future": details.get(&Stage::TrainFuture).cloned().map(dpo_of),
            "curation": {"phase1": curation(Stage::Curate1), "phase2": curation(Stage::Curate2)},
            "judging": judging,
            "eval": details.get(&Stage::Eval),
            "compute": {
                "tokens_generated": generated,
                "generation_prompt_tokens": gen_prompt,
                "tokens_judged": judged,
                "tokens_trained": trained,
                "wall_s": wall,
                "stages": stages,
                "cumulative": {"tokens_generated": cg, "tokens_judged": cj, "tokens_trained": ct},
            },
        });
        fsio::write_json(&idir.join("summary.json"), &summary)?;
        tracing::info!(
            pairs = n,
            gap = ?stats["score_gap"].as_f64(),
            "iteration summary written"
        );
        Ok(StageRecord::default())
    }
}

pub(super) fn mean(it: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

pub(super) fn pair_stats(pairs: &[PairRecord]) -> Value {
    let c = mean(pairs.iter().map(|p| p.chosen.score));
    let r = mean(pairs.iter().map(|p| p.rejected.score));
    json!({
        "count": pairs.len(),
        "chosen_score_mean": c,
        "rejected_score_mean": r,
        "score_gap": c.zip(r).map(|(c, r)| c - r),
    })
}
