//! Throughput of score parsing and of an LLM judge's bookkeeping (with a generator that returns
//! canned verdicts), so judging overhead can be compared with generation time.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tsr_judge::{
    parse_score, Completion, FinishReason, GenRequest, GenerateError, Generator, Judge,
    JudgeConfig, JudgeItem, LlmJudge, SamplingParams,
};

const VERDICTS: &[&str] = &[
    "The response is relevant and addresses the user's question about the French capital directly. It is concise, accurate and written from an AI Assistant's perspective, though it could mention a fact or two more.\n\nScore: 4",
    "The response is off-topic and does not answer the question.\n**Score:** 0",
    "Relevant (+1), substantial (+1), useful (+1), but not comprehensive. Score: 3/5.",
    "The response starts well and explains the main idea, but it stops before covering the second part of the question, and",
    "Conclude with the score using the format: \"Score: <total points>\"",
];

struct Canned;

impl Generator for Canned {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        _: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, GenerateError> {
        Ok(requests
            .iter()
            .map(|r| {
                (0..r.n)
                    .map(|j| Completion {
                        text: VERDICTS[(r.seed as usize + j) % VERDICTS.len()].to_string(),
                        token_ids: vec![0; 60],
                        finish_reason: FinishReason::Eos,
                        prompt_tokens: 400,
                    })
                    .collect()
            })
            .collect())
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("judge");
    g.throughput(Throughput::Elements(VERDICTS.len() as u64));
    g.bench_function("parse_score/5 verdicts", |b| {
        b.iter(|| {
            VERDICTS
                .iter()
                .filter(|v| parse_score(std::hint::black_box(v)).is_ok())
                .count()
        })
    });
    let items: Vec<JudgeItem> = (0..256)
        .map(|i| {
            JudgeItem::new(
                format!("p{i}"),
                "What is the capital of France?",
                "Paris is the capital of France.",
            )
        })
        .collect();
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("llm_judge/256 items x 3 samples (canned generator)", |b| {
        let mut judge = LlmJudge::from_config(Canned, &JudgeConfig::default()).unwrap();
        b.iter(|| judge.judge(std::hint::black_box(&items)).unwrap().len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
