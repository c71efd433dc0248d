//! `tsr logprobs` (being built in its issue).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tsr logprobs` is not implemented yet")
}
