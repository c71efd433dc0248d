// bf16 weights packed for oneDNN's products on the CPU (`mkldnn::_reorder_linear_weight` and
// `mkldnn::_linear_pointwise`, the ops PyTorch's CPU inductor uses for linear layers), which tch
// does not expose. Packing lays a weight out once in the blocked format oneDNN's kernels read, so a
// product no longer reorders the weight at every call. The ops are reached through libtorch's
// dispatcher by name, boxed. Each function returns null or an error message (shim.h).
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include "shim.h"

using tsr_shim::guarded;

namespace {

c10::OperatorHandle op(const char* name) {
  // The registered schemas have no overload name.
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

}  // namespace

extern "C" {

char* tsr_mkldnn_pack_linear(const at::Tensor* weight, at::Tensor** out) {
  return guarded([&] {
    static const c10::OperatorHandle reorder = op("mkldnn::_reorder_linear_weight");
    torch::jit::Stack stack{*weight, c10::IValue()};
    reorder.callBoxed(&stack);
    *out = new at::Tensor(stack.at(0).toTensor());
  });
}

char* tsr_mkldnn_linear(const at::Tensor* input, const at::Tensor* packed, at::Tensor** out) {
  return guarded([&] {
    static const c10::OperatorHandle linear = op("mkldnn::_linear_pointwise");
    torch::jit::Stack stack{*input,
                            *packed,
                            c10::IValue(),
                            std::string("none"),
                            c10::List<std::optional<c10::Scalar>>(),
                            c10::IValue()};
    linear.callBoxed(&stack);
    *out = new at::Tensor(stack.at(0).toTensor());
  });
}

}  // extern "C"
