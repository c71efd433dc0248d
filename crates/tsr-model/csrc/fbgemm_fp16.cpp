// Packed fp16 weights for CPU decoding through libtorch's FBGEMM kernels, which tch does not
// expose. Each function returns null on success, or an error message owned by the caller
// (release it with tsr_fbgemm_free_message); tensors cross the boundary as tch's `at::Tensor*`.
#include <ATen/core/Tensor.h>
#include <ATen/ops/fbgemm_linear_fp16_weight_fp32_activation.h>
#include <ATen/ops/fbgemm_pack_gemm_matrix_fp16.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>

namespace {

// libtorch warns once per process that these kernels are deprecated; the warning would land on
// the user's terminal in the middle of a generation, so it is dropped here.
class Silent : public c10::WarningHandler {
 public:
  void process(const c10::Warning&) override {}
};

char* copy_message(const char* message) {
  char* out = static_cast<char*>(std::malloc(std::strlen(message) + 1));
  if (out != nullptr) std::strcpy(out, message);
  return out;
}

template <typename F>
char* guarded(F f) {
  try {
    Silent silent;
    c10::WarningUtils::WarningHandlerGuard guard(&silent);
    f();
    return nullptr;
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

}  // namespace

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

void tsr_fbgemm_free_message(char* message) { std::free(message); }

}  // extern "C"
