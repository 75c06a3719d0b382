// AVX2+FMA GEMM micro-kernels: a 6x16 register tile for packed panels and a dot-product form for thin C.
#include "gemm_kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <array>
#include <utility>

namespace bidora::cpu::kernels {

namespace {

constexpr int kMr = 6;
constexpr int kNr = 16;
// How many k steps ahead B is prefetched: far enough to cover an L2 hit, and a strided (unpacked) B a memory miss.
constexpr int kPrefetchSteps = 8;

enum class Cols { Full, PaddedEdge, Edge };

// Lane i is all ones when i < count: the mask form vmaskmovps wants.
inline __m256i lane_mask(int count) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
}

template <int Rows, Cols Shape>
void tile_avx2(const Tile& t) {
  __m256 acc0[Rows], acc1[Rows];
  for (int r = 0; r < Rows; ++r) {
    acc0[r] = _mm256_setzero_ps();
    acc1[r] = _mm256_setzero_ps();
  }
  const __m256i mask0 = lane_mask(t.cols);
  const __m256i mask1 = lane_mask(t.cols - 8);
  float* c = t.c;
  const int64_t ldc = t.c_row_stride;
  // C is needed only after the k loop: start fetching it now so the stores do not wait on memory.
  for (int r = 0; r < Rows; ++r) {
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
    __m256 b0, b1;
    if constexpr (Shape == Cols::Edge) {
      b0 = _mm256_maskload_ps(b, mask0);
      b1 = _mm256_maskload_ps(b + 8, mask1);
    } else {
      b0 = _mm256_loadu_ps(b);
      b1 = _mm256_loadu_ps(b + 8);
    }
    for (int r = 0; r < Rows; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r);
      acc0[r] = _mm256_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(ar, b1, acc1[r]);
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
  const __m256 alpha = _mm256_set1_ps(t.alpha);
  const __m256 beta = _mm256_set1_ps(t.beta);
  const bool read_c = t.beta != 0.0f;
  for (int r = 0; r < Rows; ++r) {
    float* row = c + r * ldc;
    if constexpr (Shape == Cols::Full) {
      if (read_c) {
        _mm256_storeu_ps(row, _mm256_fmadd_ps(acc0[r], alpha, _mm256_mul_ps(_mm256_loadu_ps(row), beta)));
        _mm256_storeu_ps(row + 8, _mm256_fmadd_ps(acc1[r], alpha, _mm256_mul_ps(_mm256_loadu_ps(row + 8), beta)));
      } else {
        _mm256_storeu_ps(row, _mm256_mul_ps(acc0[r], alpha));
        _mm256_storeu_ps(row + 8, _mm256_mul_ps(acc1[r], alpha));
      }
    } else {
      if (read_c) {
        const __m256 c0 = _mm256_maskload_ps(row, mask0);
        const __m256 c1 = _mm256_maskload_ps(row + 8, mask1);
        _mm256_maskstore_ps(row, mask0, _mm256_fmadd_ps(acc0[r], alpha, _mm256_mul_ps(c0, beta)));
        _mm256_maskstore_ps(row + 8, mask1, _mm256_fmadd_ps(acc1[r], alpha, _mm256_mul_ps(c1, beta)));
      } else {
        _mm256_maskstore_ps(row, mask0, _mm256_mul_ps(acc0[r], alpha));
        _mm256_maskstore_ps(row + 8, mask1, _mm256_mul_ps(acc1[r], alpha));
      }
    }
  }
}

template <Cols Shape, int... RowsMinusOne>
constexpr std::array<TileKernel, kMr> make_tile_table(std::integer_sequence<int, RowsMinusOne...>) {
  return {&tile_avx2<RowsMinusOne + 1, Shape>...};
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

// A fixed pairwise tree, so a sum depends only on its inputs; runs once per C element.
inline float horizontal_sum(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  for (int width = 4; width >= 1; width /= 2) {
    for (int i = 0; i < width; ++i) lanes[i] += lanes[i + width];
  }
  return lanes[0];
}

// Thin C: 2 rows of A against up to 4 rows of Bt, 8 k at a time, within the 16 ymm registers.
constexpr int kDotRows = 2;
constexpr int kDotCols = 4;

template <int Rows, int ColCount>
void dot_group(const DotBlock& d, int64_t i0, int64_t j0) {
  __m256 acc[Rows][ColCount];
  const float* a[Rows];
  const float* bt[ColCount];
  for (int r = 0; r < Rows; ++r) {
    a[r] = d.a + (i0 + r) * d.a_row_stride;
    for (int j = 0; j < ColCount; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  for (int j = 0; j < ColCount; ++j) bt[j] = d.bt + (j0 + j) * d.bt_row_stride;
  int64_t p = 0;
  for (; p + 8 <= d.k; p += 8) {
    __m256 av[Rows];
    for (int r = 0; r < Rows; ++r) av[r] = _mm256_loadu_ps(a[r] + p);
    for (int j = 0; j < ColCount; ++j) {
      const __m256 bv = _mm256_loadu_ps(bt[j] + p);
      for (int r = 0; r < Rows; ++r) acc[r][j] = _mm256_fmadd_ps(av[r], bv, acc[r][j]);
    }
  }
  if (p < d.k) {
    const __m256i tail = lane_mask(static_cast<int>(d.k - p));
    __m256 av[Rows];
    for (int r = 0; r < Rows; ++r) av[r] = _mm256_maskload_ps(a[r] + p, tail);
    for (int j = 0; j < ColCount; ++j) {
      const __m256 bv = _mm256_maskload_ps(bt[j] + p, tail);
      for (int r = 0; r < Rows; ++r) acc[r][j] = _mm256_fmadd_ps(av[r], bv, acc[r][j]);
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
};

}  // namespace

TileKernelInfo tile_kernel_avx2() {
  return {kMr, kNr, &run_tile, &pack_a_panels<kMr>, &pack_b_panels<kNr>, &pack_b_panels<kNr, uint16_t>};
}

void dot_block_avx2(const DotBlock& d) {
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
