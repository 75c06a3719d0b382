// Private contract between the GEMM driver (gemm.cc) and its per-ISA micro-kernels (gemm_avx2.cc, gemm_avx512.cc).
#pragma once

#include <cstdint>

#include "../common/bf16.h"

namespace bidora::cpu::kernels {

// One register tile of C: C[rows x cols] = alpha * A B + beta * C, with A(r, p) = a[p * a_k_stride + r] and
// B(p, j) = b[p * b_k_stride + j]. Packed panels use a_k_stride = MR and b_k_stride = NR; an operand that is already
// laid out that way in the caller's memory is passed directly with its own stride. Every kernel accumulates each C
// element as one FMA chain over p in order from zero, then applies alpha and beta, so which kernel or tile computes an
// element never changes its value. beta == 0 means C is only written. C columns are contiguous (stride 1).
struct Tile {
  int64_t k;
  const float* a;
  int64_t a_k_stride;
  const float* b;
  int64_t b_k_stride;
  float* c;
  int64_t c_row_stride;
  int rows, cols;
  // True when B is a zero-padded packed panel, so reading all NR columns is safe even when cols < NR.
  bool b_padded;
  float alpha, beta;
};

using TileKernel = void (*)(const Tile& tile);
// Packs rows x kc of A (element (i, p) at a[i * row_stride + p * col_stride]) into MR-row panels, k-major.
using PackA = void (*)(const float* a, int64_t row_stride, int64_t col_stride, int64_t rows, int64_t kc, float* out);
// Packs kc x cols of B into NR-column panels, k-major, the last one zero-padded to NR columns.
using PackB = void (*)(const float* b, int64_t row_stride, int64_t col_stride, int64_t kc, int64_t cols, float* out);
// The same from a bfloat16 B: widened to float32 panels, or (pairs) into bfloat16 pair panels.
using PackB16 = void (*)(const uint16_t* b, int64_t row_stride, int64_t col_stride, int64_t kc, int64_t cols,
                         float* out);

// pairs: the bfloat16 dot-product kernel. Its packed panels hold k in pairs, two bfloat16 per 32-bit word (the lower
// half the even k): an A panel of depth kc is a float panel of depth ceil(kc / 2) (the odd tail paired with 0), and
// Tile::k, a_k_stride and b_k_stride count words. It packs A by rounding to bfloat16 and B only from bfloat16.
struct TileKernelInfo {
  int mr, nr;
  TileKernel run;
  PackA pack_a;
  PackB pack_b;
  PackB16 pack_b16;
  bool pairs = false;
};

namespace {

// Packing templates, instantiated by each kernel file with its own compiler flags (hence internal linkage: the
// AVX-512 instantiation must never be linked into the portable path). Fixed MR/NR let the copies vectorize.
template <int Mr>
void pack_a_panels(const float* a, int64_t ars, int64_t acs, int64_t rows, int64_t kc, float* out) {
  for (int64_t i0 = 0; i0 < rows; i0 += Mr) {
    const int64_t count = rows - i0 < Mr ? rows - i0 : Mr;
    float* dst = out + i0 * kc;
    const float* src = a + i0 * ars;
    if (count == Mr && acs == 1) {
      // Row-major A: walk all Mr rows together so each k step writes one contiguous group.
      const float* row[Mr];
      for (int r = 0; r < Mr; ++r) row[r] = src + r * ars;
      for (int64_t q = 0; q < kc; ++q) {
        for (int r = 0; r < Mr; ++r) dst[q * Mr + r] = row[r][q];
      }
    } else if (count == Mr && ars == 1) {
      for (int64_t q = 0; q < kc; ++q) {
        for (int r = 0; r < Mr; ++r) dst[q * Mr + r] = src[q * acs + r];
      }
    } else {
      for (int64_t q = 0; q < kc; ++q) {
        for (int64_t r = 0; r < count; ++r) dst[q * Mr + r] = src[r * ars + q * acs];
      }
    }
  }
}

// An element of B as float32: itself, or a bfloat16 one widened (exact).
inline float widened(float value) { return value; }
inline float widened(uint16_t bits) { return bf16_to_float(bits); }

// B (float32, or bfloat16 widened on the way: the float32 kernels of CPUs without AVX512-BF16) into NR-column panels.
template <int Nr, typename Element = float>
void pack_b_panels(const Element* b, int64_t brs, int64_t bcs, int64_t kc, int64_t cols, float* out) {
  for (int64_t j0 = 0; j0 < cols; j0 += Nr) {
    const int64_t count = cols - j0 < Nr ? cols - j0 : Nr;
    float* dst = out + j0 * kc;
    const Element* src = b + j0 * bcs;
    if (count == Nr && bcs == 1) {
      for (int64_t q = 0; q < kc; ++q) {
        for (int j = 0; j < Nr; ++j) dst[q * Nr + j] = widened(src[q * brs + j]);
      }
    } else if (count == Nr && brs == 1) {
      // Transposed B: read each column along k (contiguous), write across the panel.
      for (int64_t q0 = 0; q0 < kc; q0 += 16) {
        const int64_t q1 = q0 + 16 < kc ? q0 + 16 : kc;
        for (int j = 0; j < Nr; ++j) {
          for (int64_t q = q0; q < q1; ++q) dst[q * Nr + j] = widened(src[j * bcs + q]);
        }
      }
    } else {
      for (int64_t q = 0; q < kc; ++q) {
        for (int64_t j = 0; j < Nr; ++j) dst[q * Nr + j] = j < count ? widened(src[q * brs + j * bcs]) : 0.0f;
      }
    }
  }
}

}  // namespace

// Dot-product form for a thin C (few columns): C(i, j) = alpha * sum_p A(i, p) Bt(j, p) + beta * C(i, j) with rows of
// A and of Bt contiguous along p, so A streams from memory once without packing.
struct DotBlock {
  int64_t m, n, k;
  const float* a;
  int64_t a_row_stride;
  const float* bt;
  int64_t bt_row_stride;
  float* c;
  int64_t c_row_stride, c_col_stride;
  float alpha, beta;
};

// Tuning hook (bench/native/gemm_tune.cc): replaces the KC/MC/NC block sizes of one path for this process.
void override_blocking(int isa, int64_t kc, int64_t mc, int64_t nc);

#if defined(__x86_64__) || defined(_M_X64)
TileKernelInfo tile_kernel_avx2();
TileKernelInfo tile_kernel_avx512();
TileKernelInfo tile_kernel_avx512_bf16();  // the pairs kernel (gemm_bf16_avx512.cc)
void dot_block_avx2(const DotBlock& block);
void dot_block_avx512(const DotBlock& block);
#endif

}  // namespace bidora::cpu::kernels
