//! `tsr`: the command-line driver. Argument parsing and wiring only; the work lives in the
//! library crates. One module per subcommand under `cmd/`.

mod cmd;
mod logging;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tsr",
    version,
    about = "Self-Rewarding and Temporal Self-Rewarding language models"
)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info`, `tsr_loop=debug`. `TSR_LOG` also works.
    #[arg(long, global = true)]
    log: Option<String>,
    /// Most memory a job may plan to use (e.g. `8GiB`, `512MiB`). Batch and sample shapes whose
    /// estimated memory exceeds it are refused before they start. Default: the memory available
    /// when the job starts (host memory; CUDA device memory is not checked).
    #[arg(long, global = true, value_parser = parse_memory_limit, value_name = "SIZE")]
    memory_limit: Option<u64>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Versions, libtorch, CUDA devices, threads and cache locations.
    Doctor(cmd::doctor::Args),
    /// Per-token log-probabilities of a completion given a prompt (one JSON object).
    Logprobs(cmd::logprobs::Args),
    /// Sample completions for prompts (JSON lines).
    Generate(cmd::generate::Args),
    /// Score (prompt, response) pairs with the LLM-as-a-judge prompt (JSON lines).
    Judge(cmd::judge::Args),
    /// Judge accuracy on pairs with a known better answer (the built-in set by default).
    JudgeEval(cmd::judge_eval::Args),
    /// EFT data: judge examples that teach a seed model to judge.
    Eft(cmd::eft::Args),
    /// Offline evaluation data: fetch it, write the built-in judge-accuracy pair set.
    Data(cmd::data::Args),
    /// Is a model better? Win rates, GSM8K accuracy, AlpacaEval export, judge accuracy.
    #[command(subcommand_required = true)]
    Eval(cmd::eval::Args),
    /// Train a model with DPO on preference pairs.
    TrainDpo(cmd::train_dpo::Args),
    /// Supervised fine-tuning on chat data (assistant tokens only).
    Sft(cmd::sft::Args),
    /// Build the judge-tuned seed model (SFT on judge examples made from the model's own answers).
    SeedModel(cmd::seed_model::Args),
    /// Run Self-Rewarding / Temporal Self-Rewarding iterations.
    Iterate(cmd::iterate::Args),
    /// Write a model as a GGUF file for a llama.cpp server (f32, f16 or q8_0 weights).
    ExportGguf(cmd::export_gguf::Args),
    /// PNG charts and a report.md of run folders' per-iteration diagnostics.
    Report(cmd::report::Args),
}

fn parse_memory_limit(s: &str) -> Result<u64, String> {
    tsr_model::memory::parse_size(s)
}

/// mimalloc for Rust's and libtorch's allocations: lower peak memory than glibc's allocator in
/// training (see `tsr_model::allocator`).
#[global_allocator]
static ALLOC: tsr_model::allocator::MiMalloc = tsr_model::allocator::MiMalloc;

fn main() {
    tsr_model::allocator::configure();
    let cli = Cli::parse();
    logging::init(cli.log.as_deref());
    tsr_model::memory::set_limit(cli.memory_limit);
    let result = match cli.cmd {
        Command::Doctor(a) => cmd::doctor::run(a),
        Command::Logprobs(a) => cmd::logprobs::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Judge(a) => cmd::judge::run(a),
        Command::JudgeEval(a) => cmd::judge_eval::run(a),
        Command::Eft(a) => cmd::eft::run(a),
        Command::Data(a) => cmd::data::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::TrainDpo(a) => cmd::train_dpo::run(a),
        Command::Sft(a) => cmd::sft::run(a),
        Command::SeedModel(a) => cmd::seed_model::run(a),
        Command::Iterate(a) => cmd::iterate::run(a),
        Command::ExportGguf(a) => cmd::export_gguf::run(a),
        Command::Report(a) => cmd::report::run(a),
    };
    if let Err(e) = result {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("error: {e:#}");
        }
        std::process::exit(1);
    }
}
