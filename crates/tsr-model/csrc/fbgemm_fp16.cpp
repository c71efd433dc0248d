// Packed fp16 weights for CPU decoding through libtorch's FBGEMM kernels, which tch does not
// expose. Each function returns null on success, or an error message owned by the caller
// (shim.h); tensors cross the boundary as tch's `at::Tensor*`.
#include <ATen/core/Tensor.h>
#include <ATen/ops/fbgemm_linear_fp16_weight_fp32_activation.h>
#include <ATen/ops/fbgemm_pack_gemm_matrix_fp16.h>

#include <optional>

#include "shim.h"

using tsr_shim::guarded;

extern "C" {

char* tsr_fbgemm_pack_fp16(const at::Tensor* weight, at::Tensor** out) {
  return guarded([&] { *out = new at::Tensor(at::fbgemm_pack_gemm_matrix_fp16(*weight)); });
}

char* tsr_fbgemm_linear_fp16(const at::Tensor* input, const at::Tensor* packed,
                             const at::Tensor* bias, at::Tensor** out) {
  return guarded([&] {
    std::optional<at::Tensor> b;
    if (bias != nullptr) b = *bias;
    *out = new at::Tensor(at::fbgemm_linear_fp16_weight_fp32_activation(*input, *packed, b));
  });
}

}  // extern "C"
