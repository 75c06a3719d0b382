// DoRA's elementwise passes: the generic bodies and the choice of path.
#include "dora_passes.h"

namespace bidora::cpu {

namespace generic {
#include "dora_passes_body.inc"
const DoraPasses& dora_passes() { return passes; }
}  // namespace generic

#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 {
const DoraPasses& dora_passes();
}
namespace avx512 {
const DoraPasses& dora_passes();
}
#endif

const DoraPasses& dora_passes(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::Avx512) return avx512::dora_passes();
  if (isa == Isa::Avx2) return avx2::dora_passes();
#endif
  (void)isa;
  return generic::dora_passes();
}

}  // namespace bidora::cpu
