// Run-time choice of the instruction-set path: every kernel family has a generic, an AVX2+FMA and an AVX-512 body.
#pragma once

#include <string>

namespace bidora {

enum class Isa : int { Generic = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(Isa isa);
// Parses "generic", "avx2" or "avx512"; throws RangeError naming `argument` otherwise.
Isa parse_isa(const std::string& name, const char* argument);

// Whether this build contains the path and this CPU (and OS) can run it.
bool isa_compiled(Isa isa);
bool isa_supported(Isa isa);
Isa best_isa();
// AVX512-BF16 (vdpbf16ps) on this CPU, with the AVX-512 path runnable: the bfloat16 weight products' fast form.
bool cpu_has_avx512_bf16();

// The path kernels use now: BIDORA_ISA if set (and runnable), else the best one. Process-wide.
Isa active_isa();
// Forces a path; throws RangeError if this CPU or build cannot run it.
void set_active_isa(Isa isa);

}  // namespace bidora
