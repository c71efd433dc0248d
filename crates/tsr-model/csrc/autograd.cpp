// Autograd entry points tch does not reach: a leaf tensor's accumulated gradient, which PyTorch
// code sets with `param.grad = ...` and releases with `zero_grad(set_to_none=True)`, and a
// backward pass from several roots with given gradients (`torch.autograd.backward(tensors,
// grad_tensors)`). Tensors cross the boundary as tch's `at::Tensor*`; the Rust side checks shapes,
// kinds and devices first.
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/autograd.h>

#include <vector>

#include "shim.h"

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

// Back-propagates `grads[i]` (the gradient of some loss with respect to `roots[i]`) from all `n`
// roots in one pass, accumulating into the leaves' gradients and freeing the graph. Returns null
// or an error message (shim.h).
char* tsr_backward(const at::Tensor* const* roots, const at::Tensor* const* grads, size_t n) {
  return tsr_shim::guarded([&] {
    std::vector<at::Tensor> r;
    std::vector<at::Tensor> g;
    r.reserve(n);
    g.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      r.push_back(*roots[i]);
      g.push_back(*grads[i]);
    }
    torch::autograd::backward(r, g, /*retain_graph=*/false, /*create_graph=*/false);
  });
}

}  // extern "C"
