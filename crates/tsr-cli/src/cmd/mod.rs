//! One module per subcommand: `Args` (clap) and `run(Args) -> anyhow::Result<()>`.

pub mod data;
pub mod doctor;
pub mod eft;
pub mod generate;
pub mod iterate;
pub mod judge;
pub mod judge_eval;
pub mod logprobs;
pub mod train_dpo;
