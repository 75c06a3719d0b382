// The nn bodies compiled with AVX2+FMA.
#include <cmath>
#include <cstring>

#include "nn_kernels.h"

namespace bidora::cpu::avx2 {
#include "nn_body.inc"
const NnKernels& nn_kernels() { return kernels; }
}  // namespace bidora::cpu::avx2
