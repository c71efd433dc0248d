//! Built-in instructions for making a seed model (`tsr seed-model`): short everyday tasks written
//! for tsr from topic and task lists, so that judge-training (EFT) data can be made from a
//! model's own answers without touching evaluation sets (AlpacaEval's 805 instructions, GSM8K).
//!
//! [`seed_instructions`] returns a seeded selection of the topic x task combinations; the
//! selection and its order depend only on the seed.

use crate::prompts::PromptRecord;
use crate::seed::derive_seed;

const TOPICS: &[&str] = &[
    "green tea",
    "the water cycle",
    "volcanoes",
    "bicycles",
    "public libraries",
    "honey bees",
    "the moon",
    "recycling plastic",
    "learning a second language",
    "saving money",
    "a good night's sleep",
    "chess",
    "rain forests",
    "electric cars",
    "baking bread",
    "the human heart",
    "solar panels",
    "a job interview",
    "houseplants",
    "the Roman Empire",
    "writing a polite email",
    "training for a marathon",
    "coffee",
    "time management",
    "how the internet works",
    "penguins",
    "photography",
    "camping",
    "vaccines",
    "earthquakes",
    "vegetable gardening",
    "credit cards",
    "jazz music",
    "ocean tides",
    "a first aid kit",
    "composting",
];

const TASKS: &[&str] = &[
    "Explain {t} to a ten-year-old in two sentences.",
    "Give three practical tips about {t}.",
    "Write a short poem about {t}.",
    "List two advantages and two disadvantages of {t}.",
    "What is a common misconception about {t}? Answer briefly.",
    "Describe {t} in one short paragraph.",
    "In one sentence, why does {t} matter?",
    "Tell me one surprising fact about {t}.",
    "Write a question a student might ask about {t}, then answer it.",
    "Compare {t} with something similar in two sentences.",
];

/// How many different instructions [`seed_instructions`] can return.
pub fn seed_instruction_count() -> usize {
    TOPICS.len() * TASKS.len()
}

/// `n` different instructions (at most [`seed_instruction_count`]), chosen and ordered by `seed`.
/// Ids are `seed-TTT-KK` (topic and task index), stable across seeds.
pub fn seed_instructions(n: usize, seed: u64) -> Vec<PromptRecord> {
    // A seeded order: sort by a hash of (seed, id).
    let mut all: Vec<(u64, PromptRecord)> = (0..TOPICS.len())
        .flat_map(|t| (0..TASKS.len()).map(move |k| (t, k)))
        .map(|(t, k)| {
            let id = format!("seed-{t:03}-{k:02}");
            let key = derive_seed(seed, &[&id]);
            let prompt = TASKS[k].replace("{t}", TOPICS[t]);
            (key, PromptRecord { id, prompt })
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    all.into_iter().take(n).map(|(_, p)| p).collect()
}

/// The topic index of an instruction id made by [`seed_instructions`].
pub fn seed_topic(id: &str) -> Option<usize> {
    id.strip_prefix("seed-")?.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_distinct_and_stable() {
        let a = seed_instructions(50, 1);
        assert_eq!(a, seed_instructions(50, 1));
        assert_ne!(a, seed_instructions(50, 2));
        let ids: std::collections::HashSet<_> = a.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), 50);
        assert_eq!(seed_instructions(10_000, 0).len(), seed_instruction_count());
        let p = a.iter().find(|p| p.id == "seed-000-01");
        if let Some(p) = p {
            assert_eq!(p.prompt, "Give three practical tips about green tea.");
        }
        assert!(a.iter().all(|p| !p.prompt.contains("{t}")));
        assert_eq!(seed_topic("seed-012-03"), Some(12));
        assert_eq!(seed_topic("d01-tea"), None);
    }
}
