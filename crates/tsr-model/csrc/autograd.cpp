// Autograd state tch does not reach: a leaf tensor's accumulated gradient, which PyTorch code
// sets with `param.grad = ...` and releases with `zero_grad(set_to_none=True)`. Tensors cross
// the boundary as tch's `at::Tensor*`; the Rust side checks shapes, kinds and devices first.
#include <ATen/core/Tensor.h>

#include <exception>

extern "C" {

// Drops `tensor`'s gradient (a no-op when it has none); the next backward pass allocates a new
// one. Cannot throw: `mutable_grad()` only reads the tensor's autograd metadata.
void tsr_clear_grad(const at::Tensor* tensor) {
  if (tensor->defined()) tensor->mutable_grad().reset();
}

// Adds `grad` into `param`'s gradient in place, or makes `grad` (detached, sharing its storage)
// the gradient when there is none. Returns 0, or 1 when libtorch threw.
int tsr_accumulate_grad(const at::Tensor* param, const at::Tensor* grad) {
  try {
    at::Tensor& current = param->mutable_grad();
    if (current.defined()) {
      current.add_(*grad);
    } else {
      current = grad->detach();
    }
    return 0;
  } catch (const std::exception&) {
    return 1;
  } catch (...) {
    return 1;
  }
}

}  // extern "C"
