//! Train a model with DPO on a JSON-lines file of preference pairs and save it.
//!
//! ```text
//! cargo run -p tsr-dpo --example train_jsonl -- MODEL PAIRS.jsonl OUT_DIR [MAX_STEPS]
//! ```
//! `MODEL` is `smollm2-135m-instruct`, a Hugging Face directory or a `.gguf` file. Each line of
//! `PAIRS.jsonl` is `{"prompt": ..., "chosen": ..., "rejected": ...}` (strings or chat messages).
//! `OUT_DIR` receives `metrics.jsonl` and the trained model in `OUT_DIR/model` (Hugging Face layout).

#![allow(clippy::print_stderr)]

use std::path::Path;

use tsr_dpo::{save_model, train_dpo_jsonl, DpoConfig};
use tsr_model::{load, LoadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, pairs, out, rest @ ..] = args.as_slice() else {
        return Err("usage: train_jsonl MODEL PAIRS.jsonl OUT_DIR [MAX_STEPS]".into());
    };
    let max_steps = rest.first().map(|s| s.parse::<u64>()).transpose()?;

    // Paper defaults (beta 0.1, lr 1e-6 -> 1e-7, 16 pairs per step); a short run for the demo.
    let config = DpoConfig {
        max_steps,
        max_length: 512,
        ..DpoConfig::default()
    }
    .validate()?;

    let mut loaded = load(model, &LoadOptions::default())?;
    let report = train_dpo_jsonl(
        &mut loaded.model,
        &loaded.tokenizer,
        Path::new(pairs),
        &config,
        Path::new(out),
        |m, total| {
            eprintln!(
                "step {}/{total}: loss {:.4}, margin {:+.4}, accuracy {:.2}, {:.0} tok/s",
                m.step, m.loss, m.rewards_margins, m.rewards_accuracies, m.tokens_per_s
            );
        },
    )?;
    let model_dir = Path::new(out).join("model");
    save_model(
        &loaded.model,
        &loaded.tokenizer,
        &loaded.generation,
        &model_dir,
    )?;
    eprintln!(
        "{} steps on {} pairs; metrics.jsonl in {out}, model in {}",
        report.summary.steps,
        report.summary.pairs,
        model_dir.display()
    );
    Ok(())
}
