// AVX-512 GEMM micro-kernels: a 12x32 register tile for packed panels and a dot-product form for thin C.
#include "gemm_kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <array>
#include <utility>

#include "avx512_common.h"

namespace bidora::cpu::kernels {

namespace {

constexpr int kMr = 12;
constexpr int kNr = 32;
// How many k steps ahead B is prefetched: far enough to cover an L2 hit, and a strided (unpacked) B a memory miss.
constexpr int kPrefetchSteps = 8;
constexpr int kMinDepthForCPrefetch = 32;

enum class Cols { Full, PaddedEdge, Edge };

// A fixed pairwise tree, so a sum depends only on its inputs. (Scalar on purpose: the cast and shuffle intrinsics
// that would do this in registers trip a false -Wuninitialized in GCC 12 headers, and this runs once per C element.)
inline float horizontal_sum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  for (int width = 8; width >= 1; width /= 2) {
    for (int i = 0; i < width; ++i) lanes[i] += lanes[i + width];
  }
  return lanes[0];
}

template <int Rows, Cols Shape>
void tile_avx512(const Tile& t) {
  __m512 acc0[Rows], acc1[Rows];
  for (int r = 0; r < Rows; ++r) {
    acc0[r] = _mm512_setzero_ps();
    acc1[r] = _mm512_setzero_ps();
  }
  const __mmask16 mask0 = Shape == Cols::Full ? 0xFFFF : low_mask(t.cols);
  const __mmask16 mask1 = Shape == Cols::Full ? 0xFFFF : low_mask(t.cols - 16);
  float* c = t.c;
  const int64_t ldc = t.c_row_stride;
  // C is needed only after the k loop: start fetching it now so the stores do not wait on memory. (A short loop
  // leaves no time to hide anything.)
  for (int r = 0; r < (t.k >= kMinDepthForCPrefetch ? Rows : 0); ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + kNr - 1), _MM_HINT_T0);
  }
  const float* a = t.a;
  const float* b = t.b;
  const int64_t as = t.a_k_stride;
  const int64_t bs = t.b_k_stride;
  const int64_t ahead = kPrefetchSteps * bs;
  // A local depth and an explicit 4-step body keep the accumulators in registers (a pragma-unrolled loop with
  // early exits made GCC store them back every step).
  const int64_t depth = t.k;
  const auto step = [&]() __attribute__((always_inline)) {
    _mm_prefetch(reinterpret_cast<const char*>(b + ahead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + ahead + 16), _MM_HINT_T0);
    __m512 b0, b1;
    if constexpr (Shape == Cols::Edge) {
      b0 = _mm512_maskz_loadu_ps(mask0, b);
      b1 = _mm512_maskz_loadu_ps(mask1, b + 16);
    } else {
      b0 = _mm512_loadu_ps(b);
      b1 = _mm512_loadu_ps(b + 16);
    }
    for (int r = 0; r < Rows; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r]);
      acc0[r] = _mm512_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(ar, b1, acc1[r]);
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
  const __m512 alpha = _mm512_set1_ps(t.alpha);
  const __m512 beta = _mm512_set1_ps(t.beta);
  const bool read_c = t.beta != 0.0f;
  for (int r = 0; r < Rows; ++r) {
    float* row = c + r * ldc;
    if constexpr (Shape == Cols::Full) {
      if (read_c) {
        _mm512_storeu_ps(row, _mm512_fmadd_ps(acc0[r], alpha, _mm512_mul_ps(_mm512_loadu_ps(row), beta)));
        _mm512_storeu_ps(row + 16, _mm512_fmadd_ps(acc1[r], alpha, _mm512_mul_ps(_mm512_loadu_ps(row + 16), beta)));
      } else {
        _mm512_storeu_ps(row, _mm512_mul_ps(acc0[r], alpha));
        _mm512_storeu_ps(row + 16, _mm512_mul_ps(acc1[r], alpha));
      }
    } else {
      if (read_c) {
        const __m512 c0 = _mm512_maskz_loadu_ps(mask0, row);
        const __m512 c1 = _mm512_maskz_loadu_ps(mask1, row + 16);
        _mm512_mask_storeu_ps(row, mask0, _mm512_fmadd_ps(acc0[r], alpha, _mm512_mul_ps(c0, beta)));
        _mm512_mask_storeu_ps(row + 16, mask1, _mm512_fmadd_ps(acc1[r], alpha, _mm512_mul_ps(c1, beta)));
      } else {
        _mm512_mask_storeu_ps(row, mask0, _mm512_mul_ps(acc0[r], alpha));
        _mm512_mask_storeu_ps(row + 16, mask1, _mm512_mul_ps(acc1[r], alpha));
      }
    }
  }
}

template <Cols Shape, int... RowsMinusOne>
constexpr std::array<TileKernel, kMr> make_tile_table(std::integer_sequence<int, RowsMinusOne...>) {
  return {&tile_avx512<RowsMinusOne + 1, Shape>...};
}

const std::array<TileKernel, kMr> kFullTiles = make_tile_table<Cols::Full>(std::make_integer_sequence<int, kMr>());
const std::array<TileKernel, kMr> kPaddedTiles =
    make_tile_table<Cols::PaddedEdge>(std::make_integer_sequence<int, kMr>());
const std::array<TileKernel, kMr> kEdgeTiles = make_tile_table<Cols::Edge>(std::make_integer_sequence<int, kMr>());

void run_tile(const Tile& t) {
  if (t.cols == kNr) {
    kFullTiles[t.rows - 1](t);
  } else if (t.b_padded) {
    kPaddedTiles[t.rows - 1](t);
  } else {
    kEdgeTiles[t.rows - 1](t);
  }
}

// Thin C: a few rows of A against up to 8 rows of Bt, 16 k at a time; 3 x 8 accumulators leave room for the loads.
constexpr int kDotRows = 3;
constexpr int kDotCols = 8;

template <int Rows, int ColCount>
void dot_group(const DotBlock& d, int64_t i0, int64_t j0) {
  __m512 acc[Rows][ColCount];
  const float* a[Rows];
  const float* bt[ColCount];
  for (int r = 0; r < Rows; ++r) {
    a[r] = d.a + (i0 + r) * d.a_row_stride;
    for (int j = 0; j < ColCount; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  for (int j = 0; j < ColCount; ++j) bt[j] = d.bt + (j0 + j) * d.bt_row_stride;
  int64_t p = 0;
  for (; p + 16 <= d.k; p += 16) {
    __m512 av[Rows];
    for (int r = 0; r < Rows; ++r) av[r] = _mm512_loadu_ps(a[r] + p);
    for (int j = 0; j < ColCount; ++j) {
      const __m512 bv = _mm512_loadu_ps(bt[j] + p);
      for (int r = 0; r < Rows; ++r) acc[r][j] = _mm512_fmadd_ps(av[r], bv, acc[r][j]);
    }
  }
  if (p < d.k) {
    const __mmask16 tail = low_mask(static_cast<int>(d.k - p));
    __m512 av[Rows];
    for (int r = 0; r < Rows; ++r) av[r] = _mm512_maskz_loadu_ps(tail, a[r] + p);
    for (int j = 0; j < ColCount; ++j) {
      const __m512 bv = _mm512_maskz_loadu_ps(tail, bt[j] + p);
      for (int r = 0; r < Rows; ++r) acc[r][j] = _mm512_fmadd_ps(av[r], bv, acc[r][j]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    float* row = d.c + (i0 + r) * d.c_row_stride + j0 * d.c_col_stride;
    for (int j = 0; j < ColCount; ++j) {
      const float sum = horizontal_sum(acc[r][j]);
      float& out = row[j * d.c_col_stride];
      out = d.beta == 0.0f ? d.alpha * sum : d.alpha * sum + d.beta * out;
    }
  }
}

using DotGroup = void (*)(const DotBlock&, int64_t, int64_t);

template <int Rows, int... ColsMinusOne>
constexpr std::array<DotGroup, kDotCols> make_dot_row(std::integer_sequence<int, ColsMinusOne...>) {
  return {&dot_group<Rows, ColsMinusOne + 1>...};
}

const std::array<std::array<DotGroup, kDotCols>, kDotRows> kDotGroups = {
    make_dot_row<1>(std::make_integer_sequence<int, kDotCols>()),
    make_dot_row<2>(std::make_integer_sequence<int, kDotCols>()),
    make_dot_row<3>(std::make_integer_sequence<int, kDotCols>()),
};

// Row-major A (the common case) needs a transpose into k-major panels: do it 16 k at a time in registers.
void pack_a_avx512(const float* a, int64_t ars, int64_t acs, int64_t rows, int64_t kc, float* out) {
  if (acs != 1 || kc < 16) return pack_a_panels<kMr>(a, ars, acs, rows, kc, out);
  const int64_t full_rows = rows / kMr * kMr;
  const int64_t full_depth = kc / 16 * 16;
  for (int64_t i0 = 0; i0 < full_rows; i0 += kMr) {
    const float* src = a + i0 * ars;
    float* dst = out + i0 * kc;
    for (int64_t q0 = 0; q0 < full_depth; q0 += 16) {
      __m512 v[16];
      for (int r = 0; r < kMr; ++r) v[r] = _mm512_loadu_ps(src + r * ars + q0);
      for (int r = kMr; r < 16; ++r) v[r] = _mm512_setzero_ps();
      transpose16(v);
      for (int q = 0; q < 16; ++q) _mm512_mask_storeu_ps(dst + (q0 + q) * kMr, (1u << kMr) - 1, v[q]);
    }
    for (int64_t q = full_depth; q < kc; ++q) {
      for (int r = 0; r < kMr; ++r) dst[q * kMr + r] = src[r * ars + q];
    }
  }
  if (full_rows < rows) pack_a_panels<kMr>(a + full_rows * ars, ars, acs, rows - full_rows, kc, out + full_rows * kc);
}

// Transposed B (contiguous along k) likewise: 16 columns x 16 k per register transpose.
void pack_b_avx512(const float* b, int64_t brs, int64_t bcs, int64_t kc, int64_t cols, float* out) {
  if (brs != 1 || kc < 16) return pack_b_panels<kNr>(b, brs, bcs, kc, cols, out);
  const int64_t full_cols = cols / kNr * kNr;
  const int64_t full_depth = kc / 16 * 16;
  for (int64_t j0 = 0; j0 < full_cols; j0 += kNr) {
    float* dst = out + j0 * kc;
    for (int half = 0; half < kNr; half += 16) {
      const float* src = b + (j0 + half) * bcs;
      for (int64_t q0 = 0; q0 < full_depth; q0 += 16) {
        __m512 v[16];
        for (int j = 0; j < 16; ++j) v[j] = _mm512_loadu_ps(src + j * bcs + q0);
        transpose16(v);
        for (int q = 0; q < 16; ++q) _mm512_storeu_ps(dst + (q0 + q) * kNr + half, v[q]);
      }
      for (int64_t q = full_depth; q < kc; ++q) {
        for (int j = 0; j < 16; ++j) dst[q * kNr + half + j] = src[j * bcs + q];
      }
    }
  }
  if (full_cols < cols) pack_b_panels<kNr>(b + full_cols * bcs, brs, bcs, kc, cols - full_cols, out + full_cols * kc);
}

}  // namespace

TileKernelInfo tile_kernel_avx512() {
  return {kMr, kNr, &run_tile, &pack_a_avx512, &pack_b_avx512, &pack_b_panels<kNr, uint16_t>};
}

void dot_block_avx512(const DotBlock& d) {
  for (int64_t i = 0; i < d.m; i += kDotRows) {
    const int rows = static_cast<int>(d.m - i < kDotRows ? d.m - i : kDotRows);
    for (int64_t j = 0; j < d.n; j += kDotCols) {
      const int cols = static_cast<int>(d.n - j < kDotCols ? d.n - j : kDotCols);
      kDotGroups[rows - 1][cols - 1](d, i, j);
    }
  }
}

}  // namespace bidora::cpu::kernels

#endif
