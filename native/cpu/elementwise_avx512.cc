// Elementwise bodies compiled with AVX-512.
#include "elementwise.h"

namespace bidora::cpu::avx512 {
#include "elementwise_body.inc"
const ElementwiseKernels& elementwise_kernels() { return kernels; }
}  // namespace bidora::cpu::avx512
