//! tsr-model's build script: the rpath and CUDA link arguments every libtorch crate gets
//! (`build/link-libtorch.rs`), plus small C++ shims over what tch does not expose: libtorch's
//! FBGEMM fp16 kernels (`csrc/fbgemm_fp16.cpp`) and oneDNN's packed bf16 products
//! (`csrc/mkldnn_bf16.cpp`), used by `Model::set_weight_dtype` on the CPU, and autograd's gradient
//! slots and multi-root backward (`csrc/autograd.cpp`, `tsr_model::autograd`), compiled against the
//! headers of the libtorch torch-sys links.
#![allow(clippy::print_stdout)] // cargo reads build-script instructions from stdout

#[path = "../../build/link-libtorch.rs"]
mod link_libtorch;

use std::path::Path;

fn main() {
    link_libtorch::link();
    for f in [
        "csrc/shim.h",
        "csrc/shim.cpp",
        "csrc/fbgemm_fp16.cpp",
        "csrc/mkldnn_bf16.cpp",
        "csrc/autograd.cpp",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB)");
    let include = Path::new(&lib)
        .parent()
        .expect("the libtorch lib folder has a parent")
        .join("include");
    // The same C++ ABI as torch-sys's own wrapper (its default too).
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/shim.cpp")
        .file("csrc/fbgemm_fp16.cpp")
        .file("csrc/mkldnn_bf16.cpp")
        .file("csrc/autograd.cpp")
        .compile("tsr_shim");
}
