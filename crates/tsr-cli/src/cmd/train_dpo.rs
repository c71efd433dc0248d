//! `tsr train-dpo` (being built in its issue).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tsr train-dpo` is not implemented yet")
}
