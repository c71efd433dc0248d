//! Judging one 7-answer pool on SmolLM2-135M-Instruct, float32, CPU: `direct` mode (one batched
//! prefill of the 7 judge prompts) against `sampled` mode (the paper's 3 verdicts per answer,
//! here cut at `TSR_BENCH_JUDGE_TOKENS` = 128 new tokens) and `expected` mode (1 justification per
//! answer, then one prefill), on the same pool and judge prompt (`cargo xtask bench judge_modes`).
//!
//! Prints the median wall time of each mode over `TSR_BENCH_RUNS` (default 3) runs and the
//! ratio to `direct`, and the judge tokens each mode processes.

#![allow(clippy::print_stdout)]

use std::time::Instant;
use tsr_judge::{Judge, JudgeConfig, JudgeItem, JudgeMode, JudgeStats, LlmJudge};
use tsr_model::{load, LoadOptions};
use tsr_sample::Sampler;

const QUESTION: &str = "Give three practical tips for brewing a good cup of green tea.";
const ANSWERS: [&str; 7] = [
    "Use water at about 80 C, not boiling; steep for two to three minutes; use about one teaspoon of leaves per cup.",
    "Green tea is a drink made from leaves.",
    "Boil the water hard and steep the tea for ten minutes so it gets strong.",
    "1. Use fresh, cool water heated to 75-85 C. 2. Do not over-steep: two minutes is enough. 3. Store the leaves in an airtight tin away from light.",
    "I like coffee more than tea.",
    "Warm the cup first, use filtered water below boiling, and remove the leaves after a short steep to avoid bitterness.",
    "Tea.",
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    tch::set_num_threads(2);
    let loaded = load(
        &std::env::var("TSR_BENCH_MODEL").unwrap_or_else(|_| "smollm2-135m-instruct".into()),
        &LoadOptions::default(),
    )
    .expect("bench model loads");
    let items: Vec<JudgeItem> = ANSWERS
        .iter()
        .enumerate()
        .map(|(i, a)| JudgeItem::new(format!("a{i}"), QUESTION, *a))
        .collect();
    let runs = env("TSR_BENCH_RUNS", 3).max(1);
    let tokens = env("TSR_BENCH_JUDGE_TOKENS", 128);
    let modes = [
        (JudgeMode::Direct, 1),
        (JudgeMode::Expected, 1),
        (JudgeMode::Sampled, 3),
    ];
    let mut direct_s = None;
    println!("judge_modes: 7 answers, template additive, {runs} run(s) each, median wall time");
    for (mode, samples) in modes {
        let cfg = JudgeConfig {
            mode,
            samples,
            max_new_tokens: tokens,
            ..JudgeConfig::default()
        };
        let mut times = Vec::new();
        let mut stats = JudgeStats::default();
        for _ in 0..runs {
            let sampler = Sampler::new(&loaded.model, &loaded.tokenizer)
                .with_generation_config(&loaded.generation);
            let mut judge = LlmJudge::from_config(sampler, &cfg).expect("valid config");
            let t0 = Instant::now();
            let v = judge.judge(&items).expect("judging works");
            times.push(t0.elapsed().as_secs_f64());
            stats = JudgeStats::of(&v);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let ratio = direct_s.map_or(1.0, |d: f64| median / d);
        direct_s.get_or_insert(median);
        println!(
            "  {:<9} samples {samples}: {median:7.2} s  ({ratio:6.1}x direct)  prompt tokens {}, generated {}, scored {}/{}",
            mode.as_str(),
            stats.prompt_tokens,
            stats.completion_tokens,
            stats.scored_items,
            stats.items
        );
    }
}
