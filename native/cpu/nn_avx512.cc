// The nn bodies compiled with AVX-512.
#include <cmath>
#include <cstring>

#include "nn_kernels.h"

namespace bidora::cpu::avx512 {
#include "nn_body.inc"
const NnKernels& nn_kernels() { return kernels; }
}  // namespace bidora::cpu::avx512
