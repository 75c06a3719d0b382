// DoRA's elementwise passes compiled with AVX-512.
#include "dora_passes.h"

namespace bidora::cpu::avx512 {
#include "dora_passes_body.inc"
const DoraPasses& dora_passes() { return passes; }
}  // namespace bidora::cpu::avx512
