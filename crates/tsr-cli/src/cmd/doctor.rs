//! `tsr doctor`: the first debugging command.

#![allow(clippy::print_stdout)]

use anyhow::Result;
use std::path::PathBuf;
use tsr_model::tsr_home;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let cuda = tch::Cuda::is_available();
    let devices = tch::Cuda::device_count();
    let lib = loaded_libtorch_lib();
    let libtorch = torch_version(lib.as_deref());
    let info = serde_json::json!({
        "tsr": env!("CARGO_PKG_VERSION"),
        "libtorch": libtorch,
        "tch": "0.24.0",
        "cuda_available": cuda,
        "cuda_devices": devices,
        "cudnn_available": tch::Cuda::cudnn_is_available(),
        "threads": tch::get_num_threads(),
        "interop_threads": tch::get_num_interop_threads(),
        "tsr_home": tsr_home(),
        "libtorch_lib": lib,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("tsr          {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch     {libtorch} (tch 0.24.0)");
    println!(
        "cuda         {}",
        if cuda {
            format!("available, {devices} device(s)")
        } else {
            "not available (CPU only)".to_string()
        }
    );
    println!(
        "threads      {} intra-op, {} inter-op",
        tch::get_num_threads(),
        tch::get_num_interop_threads()
    );
    if let Some(lib) = &lib {
        println!("libtorch at  {}", lib.display());
    }
    println!(
        "tsr home     {} (models, caches; set TSR_HOME to move it)",
        tsr_home().display()
    );
    Ok(())
}

/// The folder of the libtorch actually loaded by this process (from `/proc/self/maps`), falling
/// back to the one the binary was linked against.
fn loaded_libtorch_lib() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(PathBuf::from))
        .or_else(|| option_env!("TSR_LIBTORCH_LIB").map(PathBuf::from))
}

/// The libtorch version: `build-version` of a libtorch zip or `version.py` of a PyTorch wheel,
/// both one level above `lib/`.
fn torch_version(lib: Option<&std::path::Path>) -> String {
    let Some(root) = lib.and_then(|l| l.parent()) else {
        return "unknown".to_string();
    };
    if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        return v.trim().to_string();
    }
    if let Ok(s) = std::fs::read_to_string(root.join("version.py")) {
        if let Some(v) = s.lines().find_map(|l| l.strip_prefix("__version__ = ")) {
            return v.trim().trim_matches('\'').trim_matches('"').to_string();
        }
    }
    "unknown".to_string()
}
