//! One module per subcommand: `Args` (clap) and `run(Args) -> anyhow::Result<()>`.

pub mod doctor;
pub mod generate;
pub mod iterate;
pub mod judge;
pub mod logprobs;
pub mod train_dpo;
