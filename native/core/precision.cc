#include "precision.h"

#include <atomic>

#include "errors.h"

namespace bidora {

namespace {
std::atomic<ops::Precision> current{ops::Precision::kFloat32};
const char* const kNames[] = {"highest", "high", "medium"};  // by ops::Precision
}  // namespace

ops::Precision gemm_precision() { return current.load(); }

const char* set_gemm_precision(const std::string& name, const std::string& where) {
  for (int index = 0; index < 3; ++index) {
    if (name == kNames[index]) return kNames[static_cast<int>(current.exchange(static_cast<ops::Precision>(index)))];
  }
  throw RangeError(where + " must be 'highest', 'high' or 'medium', got '" + name + "'");
}

}  // namespace bidora
