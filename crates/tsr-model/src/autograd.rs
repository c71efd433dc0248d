//! Autograd entry points that tch does not expose, reached through the C++ shim in
//! `csrc/autograd.cpp`: releasing a parameter's gradient between optimizer steps, adding a
//! gradient formed by hand straight into it, and a backward pass from several tensors with given
//! gradients ([`backward`]), none of which needs a surrogate graph whose only job is to deliver a
//! gradient.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::ModelError;

extern "C" {
    fn tsr_clear_grad(tensor: *const C_tensor);
    fn tsr_accumulate_grad(param: *const C_tensor, grad: *const C_tensor) -> c_int;
    fn tsr_backward(
        roots: *const *const C_tensor,
        grads: *const *const C_tensor,
        n: usize,
    ) -> *mut c_char;
}

/// Back-propagates from each of `roots` the gradient of the same index in `grads` (`∂L/∂root`)
/// in one pass, as PyTorch's `torch.autograd.backward(roots, grads)`: the leaves' gradients
/// accumulate and the graph is freed. The same as `Σ_i (roots[i] · grads[i]).sum().backward()`
/// without building those products. Each gradient must match its root in shape, kind and device.
pub fn backward(roots: &[&Tensor], grads: &[&Tensor]) -> Result<(), ModelError> {
    if roots.len() != grads.len() {
        return Err(ModelError::input(format!(
            "backward: {} roots and {} gradients",
            roots.len(),
            grads.len()
        )));
    }
    for (r, g) in roots.iter().zip(grads) {
        if !r.requires_grad() {
            return Err(ModelError::input(
                "backward: a root does not require grad (it is not part of a graph)",
            ));
        }
        if r.size() != g.size() || r.kind() != g.kind() || r.device() != g.device() {
            return Err(ModelError::input(format!(
                "backward: gradient {:?} {:?} on {:?} for a root {:?} {:?} on {:?}",
                g.size(),
                g.kind(),
                g.device(),
                r.size(),
                r.kind(),
                r.device()
            )));
        }
    }
    let r: Vec<*const C_tensor> = roots.iter().map(|t| t.as_ptr()).collect();
    let g: Vec<*const C_tensor> = grads.iter().map(|t| t.as_ptr()).collect();
    // SAFETY: every pointer is tch's live `at::Tensor*`, borrowed for the length of the call; the
    // shim catches every C++ exception and returns its message.
    let message = unsafe { tsr_backward(r.as_ptr(), g.as_ptr(), r.len()) };
    crate::shim::check(message).map_err(|e| ModelError::input(format!("backward: {e}")))
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
    fn backward_from_several_roots_equals_the_summed_surrogate() {
        tch::manual_seed(3);
        let opts = (Kind::Double, Device::Cpu);
        let w = Tensor::randn([4, 3], opts).set_requires_grad(true);
        let x = Tensor::randn([5, 4], opts);
        let a = x.matmul(&w); // [5, 3]
        let b = a.tanh(); // [5, 3], shares a's graph
        let ga = Tensor::randn([5, 3], opts);
        let gb = Tensor::randn([5, 3], opts);
        backward(&[&a, &b], &[&ga, &gb]).unwrap();
        let ours = w.grad().copy();
        clear_grad(&w);
        let a = x.matmul(&w);
        let b = a.tanh();
        ((&a * &ga).sum(Kind::Double) + (&b * &gb).sum(Kind::Double)).backward();
        let diff = (ours - w.grad()).abs().max().double_value(&[]);
        assert!(diff < 1e-12, "{diff}");
    }

    #[test]
    fn backward_refuses_mismatched_gradients_and_roots_without_a_graph() {
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = &w * 2.0;
        let wrong = Tensor::ones([4], (Kind::Float, Device::Cpu));
        assert!(backward(&[&y], &[&wrong]).is_err());
        assert!(backward(&[&y], &[]).is_err());
        let plain = Tensor::ones([3], (Kind::Float, Device::Cpu));
        assert!(backward(&[&plain], &[&plain]).is_err());
        // A graph freed by one backward pass cannot be walked again (`w * w` saved its inputs):
        // libtorch's error comes back.
        let sq = &w * &w;
        let g = Tensor::ones([3], (Kind::Float, Device::Cpu));
        backward(&[&sq], &[&g]).unwrap();
        let e = backward(&[&sq], &[&g]).unwrap_err();
        assert!(e.to_string().contains("second time"), "{e}");
        assert_eq!(Vec::<f32>::try_from(w.grad()).unwrap(), [2.0; 3]);
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
