// Optimizer bodies compiled with AVX-512.
#include <cmath>

#include "optim.h"

namespace bidora::cpu::avx512 {
#include "optim_body.inc"
const OptimKernels& optim_kernels() { return kernels; }
}  // namespace bidora::cpu::avx512
