//! Packed fp16 weights for CPU decoding: libtorch's FBGEMM kernels (`fbgemm_pack_gemm_matrix_fp16`
//! and `fbgemm_linear_fp16_weight_fp32_activation`), reached through the C++ shim in
//! `csrc/fbgemm_fp16.cpp` because tch does not generate them. The weights are stored as fp16 in
//! FBGEMM's blocked layout and the product runs on f32 activations: half the bytes of f32 per
//! token like bf16, with fp16's 10-bit mantissa instead of bf16's 7 (about 15 times closer to f32
//! on SmolLM2, `benches/weight_formats_ref.py`) and, on this x86 CPU, faster kernels than
//! libtorch's bf16 products at one to four rows.
//!
//! Inference only: the product has no backward.
//!
//! The one module of the crate with foreign calls (besides memory maps): each `unsafe` block
//! passes tensors tch owns to the shim for the length of the call and takes ownership of the
//! tensor or message it returns.
#![allow(unsafe_code)]

use std::ffi::c_char;
use std::ptr;
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::error::ModelError;
use crate::shim::take;

extern "C" {
    fn tsr_fbgemm_pack_fp16(weight: *const C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    fn tsr_fbgemm_linear_fp16(
        input: *const C_tensor,
        packed: *const C_tensor,
        bias: *const C_tensor,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
}

/// Whether this libtorch has FBGEMM's fp16 kernels (x86 builds): packs and multiplies a 1x1
/// weight once per process.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let _guard = tch::no_grad_guard();
        let w = Tensor::ones([1, 1], (Kind::Float, Device::Cpu));
        match PackedF16::pack(&w) {
            Ok(p) => {
                let x = Tensor::ones([1, 1], (Kind::Float, Device::Cpu));
                let mut out = ptr::null_mut();
                // SAFETY: as in `PackedF16::forward`.
                let message = unsafe {
                    tsr_fbgemm_linear_fp16(x.as_ptr(), p.packed.as_ptr(), ptr::null(), &mut out)
                };
                take(message, out).is_ok()
            }
            Err(_) => false,
        }
    })
}

/// A weight `[out, in]` packed for FBGEMM's fp16 product.
pub(crate) struct PackedF16 {
    packed: Tensor,
    out_features: i64,
}

impl PackedF16 {
    /// Packs an f32 CPU weight `[out, in]`. Fails on another device or dtype, and on a libtorch
    /// built without FBGEMM (not x86).
    pub(crate) fn pack(weight: &Tensor) -> Result<PackedF16, ModelError> {
        if weight.device() != Device::Cpu || weight.kind() != Kind::Float || weight.dim() != 2 {
            return Err(ModelError::Other(format!(
                "packed fp16 weights need a 2-D f32 CPU weight, got {:?} {:?} {:?}",
                weight.size(),
                weight.kind(),
                weight.device()
            )));
        }
        let weight = weight.contiguous();
        let mut out = ptr::null_mut();
        // SAFETY: `weight` outlives the call; the shim writes `out` only on success.
        let message = unsafe { tsr_fbgemm_pack_fp16(weight.as_ptr(), &mut out) };
        let packed = take(message, out).map_err(|e| {
            ModelError::Other(format!(
                "packing fp16 weights with FBGEMM (this libtorch may lack it): {e}"
            ))
        })?;
        Ok(PackedF16 {
            packed,
            out_features: weight.size()[0],
        })
    }

    /// `x W^T + b` for f32 `x` `[.., in]` on the CPU. Panics on a shape or dtype mismatch, as
    /// tch's own products do.
    pub(crate) fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let mut out = ptr::null_mut();
        let bias = bias.map_or(ptr::null(), Tensor::as_ptr);
        // SAFETY: `x`, the packed weight and the bias outlive the call; the shim writes `out`
        // only on success.
        let message =
            unsafe { tsr_fbgemm_linear_fp16(x.as_ptr(), self.packed.as_ptr(), bias, &mut out) };
        match take(message, out) {
            Ok(y) => y,
            Err(e) => panic!(
                "FBGEMM fp16 product of {:?} by a [{}, _] weight: {e}",
                x.size(),
                self.out_features
            ),
        }
    }
}
