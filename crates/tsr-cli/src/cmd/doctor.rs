//! `tsr doctor`: the first debugging command (what it reports: `tsr_backend::doctor`).

#![allow(clippy::print_stdout)]

use anyhow::Result;
use tsr_backend::doctor::{Environment, TCH_VERSION};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let env = Environment::detect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&env.to_json())?);
        return Ok(());
    }
    println!("tsr          {}", env.tsr);
    println!("libtorch     {} (tch {TCH_VERSION})", env.libtorch);
    println!(
        "cuda         {}",
        if env.cuda_available {
            format!("available, {} device(s)", env.cuda_devices)
        } else {
            "not available (CPU only)".to_string()
        }
    );
    println!(
        "threads      {} intra-op, {} inter-op",
        env.threads, env.interop_threads
    );
    if let Some(lib) = &env.libtorch_lib {
        println!("libtorch at  {}", lib.display());
    }
    println!(
        "tsr home     {} (models, caches; set TSR_HOME to move it)",
        env.tsr_home.display()
    );
    Ok(())
}
