// The generic (reference) build of the nn bodies and the run-time choice between the ISA paths.
#include <cmath>
#include <cstring>

#include "nn_kernels.h"

namespace bidora::cpu {

namespace generic {
#include "nn_body.inc"
const NnKernels& nn_kernels() { return kernels; }
}  // namespace generic

#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 {
const NnKernels& nn_kernels();
}
namespace avx512 {
const NnKernels& nn_kernels();
}
#endif

const NnKernels& nn_kernels(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::Avx512) return avx512::nn_kernels();
  if (isa == Isa::Avx2) return avx2::nn_kernels();
#endif
  (void)isa;
  return generic::nn_kernels();
}

}  // namespace bidora::cpu
