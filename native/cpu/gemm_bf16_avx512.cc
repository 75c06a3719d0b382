// The AVX512-BF16 GEMM micro-kernel for bfloat16 weights: a 12x32 register tile over pair panels (gemm_kernels.h),
// where each vdpbf16ps adds two products per float32 lane, twice the multiply-adds of an FMA. A is rounded to
// bfloat16 as it is packed (vcvtne2ps2bf16: nearest even); B arrives in bfloat16 and is only rearranged. Compiled with
// the AVX-512 flags like every *_avx512.cc file, plus AVX512-BF16 for this file alone; the driver calls it only where
// CPUID reports AVX512-BF16.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512bf16")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512bf16"))), apply_to = function)
#endif

#include "gemm_kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <array>
#include <cstring>
#include <utility>

#include "avx512_common.h"

namespace bidora::cpu::kernels {

namespace {

constexpr int kMr = 12;
constexpr int kNr = 32;
constexpr int kPrefetchSteps = 8;
// A weight read for packing is cold (it streams from memory once per product), and the transposed form reads 16 rows
// at once, more streams than the hardware prefetchers follow: each row's line 4 ahead (each even/odd row pair 8 ahead
// in the interleaving form) is asked for in advance. Measured in the BERT-base-sized step: a third off the packing.
constexpr int kPackPrefetchLines = 4;
constexpr int kPackPrefetchRows = 8;

// One A element rounded as vcvtne2ps2bf16 rounds it (nearest even, subnormals to zero), for the odd tails the vector
// conversion does not reach, so an element's bits do not depend on where it sits in a row.
inline uint32_t round_like_hardware(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof word);
  if ((word & 0x7f800000u) == 0) return (word & 0x80000000u) >> 16;  // ±0 for zero and subnormals
  return float_to_bf16(value);
}

// A (float32) into pair panels of kMr rows: word (q, r) = bf16(A(r, 2q)) | bf16(A(r, 2q + 1)) << 16. A row-major
// panel converts 32 floats of each row at once and transposes the 16 words of its 12 rows in registers.
void pack_a_pairs(const float* a, int64_t ars, int64_t acs, int64_t rows, int64_t kc, float* out) {
  const int64_t pairs = (kc + 1) / 2;
  uint32_t* words = reinterpret_cast<uint32_t*>(out);
  for (int64_t i0 = 0; i0 < rows; i0 += kMr) {
    const int64_t count = rows - i0 < kMr ? rows - i0 : kMr;
    uint32_t* panel = words + i0 * pairs;
    int64_t done = 0;  // pairs packed by the vector form
    if (acs == 1 && count == kMr) {
      for (; 2 * done + 32 <= kc; done += 16) {
        __m512 v[16];
        for (int r = 0; r < kMr; ++r) {
          const float* at = a + (i0 + r) * ars + 2 * done;
          const __m512bh pairs_of_row = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(at + 16), _mm512_loadu_ps(at));
          v[r] = reinterpret_cast<__m512>(pairs_of_row);
        }
        for (int r = kMr; r < 16; ++r) v[r] = _mm512_setzero_ps();
        transpose16(v);
        for (int q = 0; q < 16; ++q) {
          _mm512_mask_storeu_ps(panel + (done + q) * kMr, (1u << kMr) - 1, v[q]);
        }
      }
    }
    for (int64_t r = 0; r < count; ++r) {
      const float* row = a + (i0 + r) * ars;
      for (int64_t q = done; q < pairs; ++q) {
        const uint32_t even = round_like_hardware(row[2 * q * acs]);
        const uint32_t odd = 2 * q + 1 < kc ? round_like_hardware(row[(2 * q + 1) * acs]) : 0u;
        panel[q * kMr + r] = even | odd << 16;
      }
    }
  }
}

// B (bfloat16) into pair panels of kNr columns, zero-padded past `cols` and past an odd kc. Columns contiguous along
// k (a weight read transposed, as x Wᵀ reads it) hold each pair as one word already: 16 columns x 16 words go
// through a register transpose. Rows contiguous (g W) interleave two rows: zero-extend the even row's 16 values to
// words and or in the odd row's shifted up.
void pack_b_pairs(const uint16_t* b, int64_t brs, int64_t bcs, int64_t kc, int64_t cols, float* out) {
  const int64_t pairs = (kc + 1) / 2;
  const int64_t whole = kc / 2;
  uint32_t* words = reinterpret_cast<uint32_t*>(out);
  for (int64_t j0 = 0; j0 < cols; j0 += kNr) {
    const int64_t count = cols - j0 < kNr ? cols - j0 : kNr;
    uint32_t* panel = words + j0 * pairs;
    const uint16_t* src = b + j0 * bcs;
    int64_t done = 0;  // pairs packed by the vector forms
    if (brs == 1 && count == kNr) {
      for (; done + 16 <= whole; done += 16) {
        for (int half = 0; half < kNr; half += 16) {
          __m512 v[16];
          for (int j = 0; j < 16; ++j) {
            const uint16_t* line = src + (half + j) * bcs + 2 * done;
            _mm_prefetch(reinterpret_cast<const char*>(line + 32 * kPackPrefetchLines), _MM_HINT_T0);
            v[j] = _mm512_loadu_ps(line);
          }
          transpose16(v);
          for (int q = 0; q < 16; ++q) _mm512_storeu_ps(panel + (done + q) * kNr + half, v[q]);
        }
      }
    } else if (bcs == 1 && count == kNr) {
      for (; done < whole; ++done) {
        const uint16_t* even = src + 2 * done * brs;
        const uint16_t* odd = even + brs;
        _mm_prefetch(reinterpret_cast<const char*>(even + 2 * kPackPrefetchRows * brs), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(odd + 2 * kPackPrefetchRows * brs), _MM_HINT_T0);
        for (int half = 0; half < kNr; half += 16) {
          // Zero-masked forms: the plain ones trip a false -Wmaybe-uninitialized in GCC 12's headers.
          const auto widen = [](const uint16_t* at) {
            return _mm512_maskz_cvtepu16_epi32(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at)));
          };
          const __m512i high = _mm512_maskz_slli_epi32(0xFFFF, widen(odd + half), 16);
          _mm512_storeu_si512(panel + done * kNr + half, _mm512_or_si512(widen(even + half), high));
        }
      }
    }
    for (int64_t j = 0; j < count; ++j) {
      const uint16_t* column = src + j * bcs;
      for (int64_t q = done; q < whole; ++q) {
        panel[q * kNr + j] = column[2 * q * brs] | static_cast<uint32_t>(column[(2 * q + 1) * brs]) << 16;
      }
      if (pairs > whole) panel[whole * kNr + j] = column[2 * whole * brs];
    }
    for (int64_t j = count; j < kNr; ++j) {
      for (int64_t q = 0; q < pairs; ++q) panel[q * kNr + j] = 0;
    }
  }
}

// B panels are always packed and padded, so every tile reads whole panels; only the stores are masked at an edge.
template <int Rows, bool FullCols>
void tile_bf16(const Tile& t) {
  __m512 acc0[Rows], acc1[Rows];
  for (int r = 0; r < Rows; ++r) {
    acc0[r] = _mm512_setzero_ps();
    acc1[r] = _mm512_setzero_ps();
  }
  const uint32_t* a = reinterpret_cast<const uint32_t*>(t.a);
  const uint32_t* b = reinterpret_cast<const uint32_t*>(t.b);
  const int64_t as = t.a_k_stride;
  const int64_t bs = t.b_k_stride;
  const int64_t ahead = kPrefetchSteps * bs;
  const int64_t depth = t.k;
  const auto step = [&]() __attribute__((always_inline)) {
    _mm_prefetch(reinterpret_cast<const char*>(b + ahead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + ahead + 16), _MM_HINT_T0);
    const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b));
    const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 16));
    for (int r = 0; r < Rows; ++r) {
      const __m512bh ar = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a[r])));
      acc0[r] = _mm512_dpbf16_ps(acc0[r], ar, b0);
      acc1[r] = _mm512_dpbf16_ps(acc1[r], ar, b1);
    }
    a += as;
    b += bs;
  };
  int64_t p = 0;
  for (; p + 4 <= depth; p += 4) {
    step();
    step();
    step();
    step();
  }
  for (; p < depth; ++p) step();
  const __mmask16 mask0 = FullCols ? 0xFFFF : low_mask(t.cols);
  const __mmask16 mask1 = FullCols ? 0xFFFF : low_mask(t.cols - 16);
  const __m512 alpha = _mm512_set1_ps(t.alpha);
  const __m512 beta = _mm512_set1_ps(t.beta);
  const bool read_c = t.beta != 0.0f;
  for (int r = 0; r < Rows; ++r) {
    float* row = t.c + r * t.c_row_stride;
    const __m512 c0 = read_c ? _mm512_maskz_loadu_ps(mask0, row) : _mm512_setzero_ps();
    const __m512 c1 = read_c ? _mm512_maskz_loadu_ps(mask1, row + 16) : _mm512_setzero_ps();
    _mm512_mask_storeu_ps(row, mask0, _mm512_fmadd_ps(acc0[r], alpha, _mm512_mul_ps(c0, beta)));
    _mm512_mask_storeu_ps(row + 16, mask1, _mm512_fmadd_ps(acc1[r], alpha, _mm512_mul_ps(c1, beta)));
  }
}

template <bool FullCols, int... RowsMinusOne>
constexpr std::array<TileKernel, kMr> make_table(std::integer_sequence<int, RowsMinusOne...>) {
  return {&tile_bf16<RowsMinusOne + 1, FullCols>...};
}

const std::array<TileKernel, kMr> kFullTiles = make_table<true>(std::make_integer_sequence<int, kMr>());
const std::array<TileKernel, kMr> kEdgeTiles = make_table<false>(std::make_integer_sequence<int, kMr>());

void run_tile(const Tile& t) { (t.cols == kNr ? kFullTiles : kEdgeTiles)[t.rows - 1](t); }

}  // namespace

TileKernelInfo tile_kernel_avx512_bf16() { return {kMr, kNr, &run_tile, &pack_a_pairs, nullptr, &pack_b_pairs, true}; }

}  // namespace bidora::cpu::kernels

#endif

#if defined(__clang__)
#pragma clang attribute pop
#endif
