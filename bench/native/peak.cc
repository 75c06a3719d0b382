// This machine's arithmetic peaks, for bench/bf16.mjs: register-only loops of vdpbf16ps (AVX512-BF16: 32 multiply-adds
// per instruction) and of vfmadd231ps (AVX-512 float32: 16), on as many threads as asked, in GFLOP/s. Twenty-four
// independent accumulators cover either instruction's latency; nothing touches memory.
// Build: g++ -O3 -mavx512f -mavx512bf16 -pthread bench/native/peak.cc -o peak     Run: ./peak threads
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

constexpr long kIterations = 25'000'000;
constexpr int kChains = 24;

// Twenty-four independent accumulators (zmm0-23) against two fixed sources, in assembly so that the compiler can
// neither fold the loop nor spill an accumulator; the assembler repeats the instruction once per accumulator.
// clang-format off
#define BIDORA_ON_EACH_ACCUMULATOR(op) \
  ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23\n " op " %%zmm30, %%zmm31, %%zmm\\n\n .endr\n"
// clang-format on

// One thread's loop of `op` over the accumulators, zeroed sources (the values do not change the rate).
#define BIDORA_PEAK_LOOP(name, op)                                                                                    \
  float name() {                                                                                                      \
    long count = kIterations;                                                                                         \
    __asm__ volatile(                                                                                                 \
        "vpxord %%zmm30, %%zmm30, %%zmm30\n vpxord %%zmm31, %%zmm31, %%zmm31\n"                                       \
        "1:\n" BIDORA_ON_EACH_ACCUMULATOR(op) "dec %0\n jnz 1b\n"                                                     \
        : "+r"(count)                                                                                                 \
        :                                                                                                             \
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",  \
          "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm30", \
          "xmm31", "cc");                                                                                             \
    return static_cast<float>(count);                                                                                 \
  }

BIDORA_PEAK_LOOP(dot_bf16_loop, "vdpbf16ps")
BIDORA_PEAK_LOOP(fma_loop, "vfmadd231ps")

// GFLOP/s of `loop` on `threads` threads, each running it once: flops_per_instruction counts multiply and add.
template <typename Loop>
double gflops(Loop loop, int threads, double flops_per_instruction) {
  std::vector<std::thread> workers;
  std::vector<float> sinks(threads);
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) workers.emplace_back([&, t] { sinks[t] = loop(); });
  for (auto& worker : workers) worker.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return threads * static_cast<double>(kIterations) * kChains * flops_per_instruction / seconds / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const double bf16 = gflops(dot_bf16_loop, threads, 2.0 * 32);
  const double fp32 = gflops(fma_loop, threads, 2.0 * 16);
  std::printf("{\"threads\":%d,\"bf16Gflops\":%.1f,\"fp32Gflops\":%.1f}\n", threads, bf16, fp32);
  return 0;
}
