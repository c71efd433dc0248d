//! What `tsr doctor` reports: versions, libtorch, CUDA devices, threads and cache locations.

use std::path::{Path, PathBuf};

use tsr_model::tsr_home;

/// The tch version tsr is built with.
pub const TCH_VERSION: &str = "0.24.0";

/// This process's environment as tsr sees it.
#[derive(Debug, Clone)]
pub struct Environment {
    /// tsr's version.
    pub tsr: &'static str,
    /// The version of the libtorch loaded (`unknown` when it cannot be read).
    pub libtorch: String,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn_available: bool,
    /// Intra-op threads.
    pub threads: i32,
    pub interop_threads: i32,
    pub tsr_home: PathBuf,
    /// The folder of the libtorch libraries loaded.
    pub libtorch_lib: Option<PathBuf>,
}

impl Environment {
    /// Looks at this process.
    pub fn detect() -> Environment {
        let libtorch_lib = loaded_libtorch_lib();
        Environment {
            tsr: env!("CARGO_PKG_VERSION"),
            libtorch: torch_version(libtorch_lib.as_deref()),
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
            cudnn_available: tch::Cuda::cudnn_is_available(),
            threads: tch::get_num_threads(),
            interop_threads: tch::get_num_interop_threads(),
            tsr_home: tsr_home(),
            libtorch_lib,
        }
    }

    /// As one JSON object (`tsr doctor --json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tsr": self.tsr,
            "libtorch": self.libtorch,
            "tch": TCH_VERSION,
            "cuda_available": self.cuda_available,
            "cuda_devices": self.cuda_devices,
            "cudnn_available": self.cudnn_available,
            "threads": self.threads,
            "interop_threads": self.interop_threads,
            "tsr_home": self.tsr_home,
            "libtorch_lib": self.libtorch_lib,
        })
    }
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
fn torch_version(lib: Option<&Path>) -> String {
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
