// DoRA's elementwise passes compiled with AVX2+FMA.
#include "dora_passes.h"

namespace bidora::cpu::avx2 {
#include "dora_passes_body.inc"
const DoraPasses& dora_passes() { return passes; }
}  // namespace bidora::cpu::avx2
