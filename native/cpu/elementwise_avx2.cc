// Elementwise bodies compiled with AVX2+FMA.
#include "elementwise.h"

namespace bidora::cpu::avx2 {
#include "elementwise_body.inc"
const ElementwiseKernels& elementwise_kernels() { return kernels; }
}  // namespace bidora::cpu::avx2
