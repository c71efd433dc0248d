//! `tsr judge` (being built in its issue).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tsr judge` is not implemented yet")
}
