// CPUID/XGETBV probing and the process-wide active instruction-set path.
#include "cpu_features.h"

#include <atomic>
#include <cstdlib>

#include "errors.h"

#if defined(__x86_64__) || defined(_M_X64)
#define BIDORA_X86 1
#include <cpuid.h>
#endif

namespace bidora {

namespace {

#if BIDORA_X86
struct X86Features {
  bool avx2_fma = false;
  bool avx512 = false;
  bool avx512_bf16 = false;  // vdpbf16ps and vcvtne2ps2bf16
};

unsigned long long read_xcr0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

X86Features probe() {
  X86Features features;
  unsigned int eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return features;
  const bool osxsave = ecx & (1u << 27);
  const bool fma = ecx & (1u << 12);
  const bool avx = ecx & (1u << 28);
  if (!osxsave || !avx) return features;
  const unsigned long long xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;  // SSE, AVX, opmask, upper ZMM, high ZMM state
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return features;
  const bool avx2 = ebx & (1u << 5);
  const bool avx512f = ebx & (1u << 16);
  const bool avx512dq = ebx & (1u << 17);
  const bool avx512bw = ebx & (1u << 30);
  const bool avx512vl = ebx & (1u << 31);
  features.avx2_fma = os_ymm && avx2 && fma;
  features.avx512 = features.avx2_fma && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
  if (features.avx512 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) features.avx512_bf16 = eax & (1u << 5);
  return features;
}

const X86Features& cpu() {
  static const X86Features features = probe();
  return features;
}
#endif

Isa initial_isa() {
  const char* forced = std::getenv("BIDORA_ISA");
  if (forced != nullptr && *forced != '\0') {
    const Isa isa = parse_isa(forced, "BIDORA_ISA");
    if (!isa_supported(isa)) {
      throw RangeError(std::string("BIDORA_ISA=") + forced + " is not supported by this CPU or build");
    }
    return isa;
  }
  return best_isa();
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    default:
      return "generic";
  }
}

Isa parse_isa(const std::string& name, const char* argument) {
  if (name == "generic") return Isa::Generic;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx512") return Isa::Avx512;
  throw RangeError(std::string(argument) + ": expected 'generic', 'avx2' or 'avx512', got '" + name + "'");
}

bool isa_compiled(Isa isa) {
#if BIDORA_X86
  (void)isa;
  return true;
#else
  return isa == Isa::Generic;
#endif
}

bool isa_supported(Isa isa) {
  if (!isa_compiled(isa)) return false;
#if BIDORA_X86
  switch (isa) {
    case Isa::Avx512:
      return cpu().avx512;
    case Isa::Avx2:
      return cpu().avx2_fma;
    default:
      return true;
  }
#else
  return true;
#endif
}

bool cpu_has_avx512_bf16() {
#if BIDORA_X86
  return cpu().avx512_bf16;
#else
  return false;
#endif
}

Isa best_isa() {
  if (isa_supported(Isa::Avx512)) return Isa::Avx512;
  if (isa_supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Generic;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  if (!isa_supported(isa)) {
    throw RangeError(std::string("isa: '") + isa_name(isa) + "' is not supported by this CPU or build");
  }
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace bidora
