// What the C++ shims share: tensors cross the boundary as tch's `at::Tensor*`; a call that can
// fail returns null on success or an error message the caller owns and releases with
// `tsr_free_message` (shim.cpp).
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>

namespace tsr_shim {

inline char* copy_message(const char* message) {
  char* out = static_cast<char*>(std::malloc(std::strlen(message) + 1));
  if (out != nullptr) std::strcpy(out, message);
  return out;
}

// Drops libtorch's warnings: a deprecation warning of a kernel would otherwise land on the user's
// terminal in the middle of a generation.
class Silent : public c10::WarningHandler {
 public:
  void process(const c10::Warning&) override {}
};

// Runs `f`, returning null, or the message of the C++ exception it threw.
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

}  // namespace tsr_shim
