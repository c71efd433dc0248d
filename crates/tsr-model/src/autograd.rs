//! Gradient slots that tch does not expose, reached through the C++ shim in `csrc/autograd.cpp`:
//! releasing a parameter's gradient between optimizer steps, and adding a gradient formed by hand
//! straight into it, without building an autograd graph whose only job is to deliver it.
#![allow(unsafe_code)]

use std::ffi::c_int;

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::ModelError;

extern "C" {
    fn tsr_clear_grad(tensor: *const C_tensor);
    fn tsr_accumulate_grad(param: *const C_tensor, grad: *const C_tensor) -> c_int;
}

/// Releases `tensor`'s accumulated gradient (PyTorch's `zero_grad(set_to_none=True)`): its memory
/// is freed now, and the next backward pass allocates a fresh gradient instead of adding into a
/// zeroed one. A no-op when there is no gradient.
pub fn clear_grad(tensor: &Tensor) {
    // SAFETY: the pointer is tch's live `at::Tensor*` for the length of the call; the shim only
    // resets the gradient slot of its autograd metadata and cannot throw.
    unsafe { tsr_clear_grad(tensor.as_ptr()) }
}

/// Adds `grad` into the gradient of `param` (a leaf that requires grad) as a backward pass would:
/// in place when `param` has a gradient, otherwise `grad` itself becomes it (no copy; it must
/// not be written to afterwards). `grad` must match `param` in shape, kind and device.
pub fn accumulate_grad(param: &Tensor, grad: Tensor) -> Result<(), ModelError> {
    if !param.requires_grad() || !param.is_leaf() {
        return Err(ModelError::input(
            "accumulate_grad: the parameter must be a leaf tensor that requires grad",
        ));
    }
    if grad.size() != param.size() || grad.kind() != param.kind() || grad.device() != param.device()
    {
        return Err(ModelError::input(format!(
            "accumulate_grad: gradient {:?} {:?} on {:?} for a parameter {:?} {:?} on {:?}",
            grad.size(),
            grad.kind(),
            grad.device(),
            param.size(),
            param.kind(),
            param.device()
        )));
    }
    let grad = grad.f_detach()?;
    // SAFETY: both pointers are tch's live `at::Tensor*` for the length of the call; the shim
    // catches every C++ exception and reports it as 1.
    let failed = unsafe { tsr_accumulate_grad(param.as_ptr(), grad.as_ptr()) };
    if failed != 0 {
        return Err(ModelError::input(
            "accumulate_grad: libtorch could not add the gradient",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn grad_of(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.grad()).unwrap()
    }

    #[test]
    fn a_cleared_gradient_is_undefined_and_the_next_backward_starts_fresh() {
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&w * 2.0).sum(Kind::Float).backward();
        assert_eq!(grad_of(&w), [2.0; 3]);
        clear_grad(&w);
        assert!(!w.grad().defined());
        // Accumulating again starts from nothing, not from the old 2s.
        (&w * 3.0).sum(Kind::Float).backward();
        assert_eq!(grad_of(&w), [3.0; 3]);
        // Clearing a tensor without a gradient does nothing.
        let plain = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        clear_grad(&plain);
        assert!(!plain.grad().defined());
    }

    #[test]
    fn an_accumulated_gradient_adds_up_with_backward_passes() {
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let by_hand = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        // No gradient yet: the given one becomes it ...
        accumulate_grad(&w, by_hand.copy()).unwrap();
        assert_eq!(grad_of(&w), [1.0, 2.0, 3.0]);
        // ... a backward pass adds to it, and so does a second hand-made one.
        (&w * 2.0).sum(Kind::Float).backward();
        accumulate_grad(&w, by_hand).unwrap();
        assert_eq!(grad_of(&w), [4.0, 6.0, 8.0]);
        assert!(!w.grad().requires_grad());
    }

    #[test]
    fn a_mismatched_gradient_or_a_non_parameter_is_refused() {
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let wrong_shape = Tensor::ones([4], (Kind::Float, Device::Cpu));
        assert!(accumulate_grad(&w, wrong_shape).is_err());
        let wrong_kind = Tensor::ones([3], (Kind::Double, Device::Cpu));
        assert!(accumulate_grad(&w, wrong_kind).is_err());
        let frozen = Tensor::ones([3], (Kind::Float, Device::Cpu));
        assert!(accumulate_grad(&frozen, Tensor::ones([3], (Kind::Float, Device::Cpu))).is_err());
        let derived = &w * 2.0;
        assert!(accumulate_grad(&derived, Tensor::ones([3], (Kind::Float, Device::Cpu))).is_err());
        assert!(
            !w.grad().defined(),
            "a refused gradient leaves the parameter as it was"
        );
    }
}
