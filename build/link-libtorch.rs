//! Build script shared by every crate that links libtorch (`build = "../../build/link-libtorch.rs"`).
//!
//! torch-sys gives its dependents the libtorch library folder as `DEP_TCH_LIBTORCH_LIB` but sets an
//! rpath only for its own wrapper. This script adds that folder to the rpath of the crate's
//! binaries, tests, examples and benches so they run without `LD_LIBRARY_PATH`, and links
//! `torch_cuda` with `--no-as-needed` when the libtorch has it, so CUDA is visible at run time even
//! though no symbol of it is referenced. Build scripts themselves are not affected (these are
//! `rustc-link-arg`s of this crate's targets, not global rustflags).
#![allow(clippy::print_stdout)] // cargo reads build-script instructions from stdout

use std::path::Path;

#[allow(dead_code)] // a build script of its own, or a module of tsr-model's
fn main() {
    link();
}

/// Adds the rpath and the CUDA link arguments (see the module docs).
pub fn link() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-env=TSR_LIBTORCH_LIB={lib}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
