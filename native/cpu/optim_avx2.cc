// Optimizer bodies compiled with AVX2+FMA.
#include <cmath>

#include "optim.h"

namespace bidora::cpu::avx2 {
#include "optim_body.inc"
const OptimKernels& optim_kernels() { return kernels; }
}  // namespace bidora::cpu::avx2
