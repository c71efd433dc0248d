//! bf16 weights packed for oneDNN's CPU products (`mkldnn::_reorder_linear_weight` and
//! `mkldnn::_linear_pointwise`, reached through the C++ shim in `csrc/mkldnn_bf16.cpp` because tch
//! does not generate them). A plain bf16 `linear` hands oneDNN a weight in PyTorch's layout, which
//! its kernel reorders into blocks at every call; packed once, the weight is read as it lies.
//! One decoding step's products of SmolLM2 (the LM head included) on the 2-core AMD EPYC with
//! AVX512-BF16: 15.6 ms instead of 25.6 ms at 14 rows, 9.6 ms instead of 23.7 ms at one row
//! (`benches/weight_formats_ref.py --rows R`), the same results as the plain bf16 product (test).
//!
//! Inference only: the product has no backward. The activations are rounded to bf16 for the
//! product, as with a plain bf16 weight.
//!
//! Foreign calls: each `unsafe` block passes tensors tch owns to the shim for the length of the
//! call and takes ownership of the tensor or message it returns.
#![allow(unsafe_code)]

use std::ffi::c_char;
use std::ptr;
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::error::ModelError;
use crate::shim::take;

extern "C" {
    fn tsr_mkldnn_pack_linear(weight: *const C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    fn tsr_mkldnn_linear(
        input: *const C_tensor,
        packed: *const C_tensor,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
}

/// Whether this libtorch packs and multiplies bf16 weights with oneDNN: one 1x1 product, once
/// per process, checked against the plain product.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let _guard = tch::no_grad_guard();
        let w = Tensor::from_slice(&[0.5f32, 2.0]).reshape([2, 1]);
        let x = Tensor::from_slice(&[3.0f32]).reshape([1, 1]);
        match PackedBf16::pack(&w) {
            Ok(p) => p
                .try_forward(&x)
                .is_ok_and(|y| Vec::<f32>::try_from(y.reshape([-1])).ok() == Some(vec![1.5, 6.0])),
            Err(_) => false,
        }
    })
}

/// A weight `[out, in]` in bf16, packed for oneDNN's product.
pub(crate) struct PackedBf16 {
    packed: Tensor,
    out_features: i64,
}

impl PackedBf16 {
    /// Packs a 2-D CPU weight (f32 or bf16; rounded to bf16). Fails on another device, and on a
    /// libtorch built without oneDNN.
    pub(crate) fn pack(weight: &Tensor) -> Result<PackedBf16, ModelError> {
        if weight.device() != Device::Cpu || weight.dim() != 2 {
            return Err(ModelError::Other(format!(
                "packed bf16 weights need a 2-D CPU weight, got {:?} on {:?}",
                weight.size(),
                weight.device()
            )));
        }
        let weight = weight.to_kind(Kind::BFloat16).contiguous();
        let mut out = ptr::null_mut();
        // SAFETY: `weight` outlives the call; the shim writes `out` only on success.
        let message = unsafe { tsr_mkldnn_pack_linear(weight.as_ptr(), &mut out) };
        let packed = take(message, out).map_err(|e| {
            ModelError::Other(format!(
                "packing bf16 weights for oneDNN (this libtorch may lack it): {e}"
            ))
        })?;
        Ok(PackedBf16 {
            packed,
            out_features: weight.size()[0],
        })
    }

    fn try_forward(&self, x: &Tensor) -> Result<Tensor, String> {
        let xb = x.to_kind(Kind::BFloat16);
        let mut out = ptr::null_mut();
        // SAFETY: the input and the packed weight outlive the call; the shim writes `out` only on
        // success.
        let message = unsafe { tsr_mkldnn_linear(xb.as_ptr(), self.packed.as_ptr(), &mut out) };
        take(message, out).map(|y| y.to_kind(x.kind()))
    }

    /// `x Wᵀ` for `x` `[.., in]` on the CPU, in `x`'s dtype (the product in bf16). Panics on a
    /// shape mismatch, as tch's own products do.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        match self.try_forward(x) {
            Ok(y) => y,
            Err(e) => panic!(
                "oneDNN bf16 product of {:?} by a [{}, _] weight: {e}",
                x.size(),
                self.out_features
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packed_product_is_the_plain_bf16_product() {
        // libtorch's x86 builds all have oneDNN; elsewhere the format falls back to plain bf16
        // products and there is nothing to compare.
        #[cfg(target_arch = "x86_64")]
        assert!(
            available(),
            "oneDNN's bf16 products are missing from an x86 libtorch"
        );
        #[cfg(not(target_arch = "x86_64"))]
        if !available() {
            return;
        }
        let _guard = tch::no_grad_guard();
        let w = Tensor::arange(96 * 40, (Kind::Float, Device::Cpu))
            .sin()
            .reshape([96, 40]);
        let p = PackedBf16::pack(&w).unwrap();
        for shape in [vec![1i64, 40], vec![14, 40], vec![3, 2, 40]] {
            let n: i64 = shape.iter().product();
            let x = Tensor::arange(n, (Kind::Float, Device::Cpu))
                .cos()
                .reshape(&shape);
            let plain = x
                .to_kind(Kind::BFloat16)
                .linear::<&Tensor>(&w.to_kind(Kind::BFloat16), None)
                .to_kind(Kind::Float);
            let packed = p.forward(&x);
            assert_eq!(packed.size(), plain.size());
            assert_eq!(packed.kind(), Kind::Float);
            let d = (&packed - &plain).abs().max().double_value(&[]);
            assert!(d <= 1e-6, "{shape:?}: {d}");
        }
        // A product of the wrong width is refused with libtorch's message, not a crash.
        let bad = Tensor::ones([2, 7], (Kind::Float, Device::Cpu));
        assert!(p.try_forward(&bad).is_err());
    }
}
