// GEMM driver: operand orientation, thread partitioning, cache blocking and packing, plus the portable kernel and
// the reference product every fast path is tested against.
#include "gemm.h"

#include <algorithm>
#include <array>
#include <string>
#include <utility>

#include "../core/errors.h"
#include "../core/memory.h"
#include "../core/threadpool.h"
#include "gemm_kernels.h"

namespace bidora::cpu {

namespace {

using kernels::DotBlock;
using kernels::Tile;
using kernels::TileKernelInfo;

// Workspace slots (thread_workspace) this file owns: packed A block, packed B block, transposed thin B.
constexpr int kSlotPackedA = 0;
constexpr int kSlotPackedB = 1;
constexpr int kSlotThinB = 2;

// ---- Portable micro-kernel -------------------------------------------------------------------------------------

constexpr int kGenericMr = 4;
constexpr int kGenericNr = 8;

// Plain loops the compiler can vectorize with whatever baseline SIMD the target has (SSE2, NEON).
template <int Rows, bool FullCols>
void tile_generic(const Tile& t) {
  float acc[Rows][kGenericNr] = {};
  const float* a = t.a;
  const float* b = t.b;
  const bool whole_b = FullCols || t.b_padded;
  for (int64_t p = 0; p < t.k; ++p) {
    float bv[kGenericNr] = {};
    if (whole_b) {
      for (int j = 0; j < kGenericNr; ++j) bv[j] = b[j];
    } else {
      for (int j = 0; j < t.cols; ++j) bv[j] = b[j];
    }
    for (int r = 0; r < Rows; ++r) {
      const float av = a[r];
      for (int j = 0; j < kGenericNr; ++j) acc[r][j] += av * bv[j];
    }
    a += t.a_k_stride;
    b += t.b_k_stride;
  }
  const int cols = FullCols ? kGenericNr : t.cols;
  for (int r = 0; r < Rows; ++r) {
    float* row = t.c + r * t.c_row_stride;
    if (t.beta == 0.0f) {
      for (int j = 0; j < cols; ++j) row[j] = t.alpha * acc[r][j];
    } else {
      for (int j = 0; j < cols; ++j) row[j] = t.alpha * acc[r][j] + t.beta * row[j];
    }
  }
}

template <bool FullCols, int... RowsMinusOne>
constexpr std::array<kernels::TileKernel, kGenericMr> generic_table(std::integer_sequence<int, RowsMinusOne...>) {
  return {&tile_generic<RowsMinusOne + 1, FullCols>...};
}

void run_tile_generic(const Tile& t) {
  static const auto full = generic_table<true>(std::make_integer_sequence<int, kGenericMr>());
  static const auto edge = generic_table<false>(std::make_integer_sequence<int, kGenericMr>());
  (t.cols == kGenericNr ? full : edge)[t.rows - 1](t);
}

// ---- Problem orientation ---------------------------------------------------------------------------------------

// The product with explicit element strides; `transposed` describes C^T = B^T A^T over the same memory.
struct Problem {
  float* c;
  int64_t crs, ccs;
  const float* a;
  int64_t ars, acs;
  const float* b;
  int64_t brs, bcs;
  int64_t m, n, k;
  float alpha, beta;

  Problem transposed() const { return {c, ccs, crs, b, bcs, brs, a, acs, ars, n, m, k, alpha, beta}; }
};

Problem from_operands(const GemmOperands& o) {
  return {o.c,
          o.c_row_stride,
          o.c_col_stride,
          o.a,
          o.a_row_stride,
          o.a_col_stride,
          o.b,
          o.b_row_stride,
          o.b_col_stride,
          o.m,
          o.n,
          o.k,
          o.alpha,
          o.beta};
}

// ---- Blocking and per-ISA choices ------------------------------------------------------------------------------

struct Blocking {
  int64_t kc;  // depth of one packed block: an A micro-panel (MR x KC) stays in L1 while B panels stream by
  int64_t mc;  // rows of A packed at once (kept in L2/L3); B is repacked once per MC rows
  int64_t nc;  // columns of a packed B block (KC x NC), sized to stay in L2
};

struct Path {
  TileKernelInfo tile;
  Blocking blocking;
  void (*dot)(const DotBlock&);  // null where the path has no thin-C form
  int dot_grain;
};

Blocking tuned_blocking[3] = {
    {256, 256, 512},  // generic
    {256, 960, 768},  // avx2, 6x16 tiles
    {384, 960, 512},  // avx512, 12x32 tiles
};

Path path_for(Isa isa) {
  const Blocking blocking = tuned_blocking[static_cast<int>(isa)];
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::Avx512) return {kernels::tile_kernel_avx512(), blocking, &kernels::dot_block_avx512, 6};
  if (isa == Isa::Avx2) return {kernels::tile_kernel_avx2(), blocking, &kernels::dot_block_avx2, 6};
#endif
  return {{kGenericMr, kGenericNr, &run_tile_generic, &kernels::pack_a_panels<kGenericMr>,
           &kernels::pack_b_panels<kGenericNr>},
          blocking,
          nullptr,
          1};
}

// Below this many flops a second thread costs more to wake than it saves.
constexpr double kParallelFlops = 1 << 21;
// The thin-C (dot) form streams A without packing; it needs a contiguous k, few columns and enough depth.
constexpr int64_t kDotMaxCols = 16;
constexpr int64_t kDotMinDepth = 64;
constexpr int64_t kRowGrain = 4;
constexpr int64_t kColumnGrain = 16;

int threads_for(const Problem& p) {
  const double flops = 2.0 * static_cast<double>(p.m) * static_cast<double>(p.n) * static_cast<double>(p.k);
  return flops < kParallelFlops ? 1 : num_threads();
}

bool fits_dot(const Problem& p) { return p.acs == 1 && p.n <= kDotMaxCols && p.k >= kDotMinDepth; }

int64_t round_up(int64_t value, int64_t step) { return (value + step - 1) / step * step; }

// C = beta * C, for alpha == 0 or k == 0, where A and B are never read.
void scale_c(const Problem& p) {
  for (int64_t i = 0; i < p.m; ++i) {
    float* row = p.c + i * p.crs;
    for (int64_t j = 0; j < p.n; ++j) {
      float& value = row[j * p.ccs];
      value = p.beta == 0.0f ? 0.0f : p.beta * value;
    }
  }
}

// ---- Thin C: dot-product form ----------------------------------------------------------------------------------

void run_dot(const Problem& p, const Path& path) {
  DotBlock block{p.m, p.n, p.k, p.a, p.ars, p.b, p.bcs, p.c, p.crs, p.ccs, p.alpha, p.beta};
  if (p.brs != 1) {
    // B is K x (few): transpose it once here (cheap) so every row of A meets contiguous columns of B.
    float* thin = thread_workspace(kSlotThinB, p.n * p.k);
    for (int64_t q = 0; q < p.k; ++q) {
      for (int64_t j = 0; j < p.n; ++j) thin[j * p.k + q] = p.b[q * p.brs + j * p.bcs];
    }
    block.bt = thin;
    block.bt_row_stride = p.k;
  }
  const int threads = threads_for(p);
  run_on_threads(threads, [&](int part, int parts) {
    int64_t begin, end;
    split_range(p.m, path.dot_grain, part, parts, &begin, &end);
    if (begin >= end) return;
    DotBlock mine = block;
    mine.m = end - begin;
    mine.a = p.a + begin * p.ars;
    mine.c = p.c + begin * p.crs;
    path.dot(mine);
  });
}

// ---- Packed, blocked form --------------------------------------------------------------------------------------

// One thread's share: C(m x n) = alpha A B + beta C, looping KC (depth) > MC (rows) > NC (columns) > MR > NR.
void run_blocked_part(const Problem& p, const Path& path) {
  const int mr = path.tile.mr;
  const int nr = path.tile.nr;
  const Blocking& blocking = path.blocking;
  // A B with contiguous rows that few row panels share is read in place: packing would cost more than it saves.
  const bool b_in_place = p.bcs == 1 && p.m <= 2 * mr;
  const bool c_in_place = p.ccs == 1;
  alignas(64) float staging[16 * 64];
  for (int64_t pc = 0; pc < p.k; pc += blocking.kc) {
    const int64_t kc = std::min(blocking.kc, p.k - pc);
    // Later depth blocks add onto what the first one wrote.
    const float beta = pc == 0 ? p.beta : 1.0f;
    for (int64_t ic = 0; ic < p.m; ic += blocking.mc) {
      const int64_t mc = std::min(blocking.mc, p.m - ic);
      float* packed_a = thread_workspace(kSlotPackedA, round_up(mc, mr) * kc);
      path.tile.pack_a(p.a + ic * p.ars + pc * p.acs, p.ars, p.acs, mc, kc, packed_a);
      for (int64_t jc = 0; jc < p.n; jc += blocking.nc) {
        const int64_t nc = std::min(blocking.nc, p.n - jc);
        float* packed_b = nullptr;
        if (!b_in_place) {
          packed_b = thread_workspace(kSlotPackedB, round_up(nc, nr) * kc);
          path.tile.pack_b(p.b + pc * p.brs + jc * p.bcs, p.brs, p.bcs, kc, nc, packed_b);
        }
        for (int64_t ir = 0; ir < mc; ir += mr) {
          Tile tile;
          tile.k = kc;
          tile.a = packed_a + ir * kc;
          tile.a_k_stride = mr;
          tile.rows = static_cast<int>(std::min<int64_t>(mr, mc - ir));
          tile.b_padded = !b_in_place;
          tile.b_k_stride = b_in_place ? p.brs : nr;
          for (int64_t jr = 0; jr < nc; jr += nr) {
            tile.b = b_in_place ? p.b + pc * p.brs + jc + jr : packed_b + jr * kc;
            tile.cols = static_cast<int>(std::min<int64_t>(nr, nc - jr));
            float* c = p.c + (ic + ir) * p.crs + (jc + jr) * p.ccs;
            if (c_in_place) {
              tile.c = c;
              tile.c_row_stride = p.crs;
              tile.alpha = p.alpha;
              tile.beta = beta;
              path.tile.run(tile);
              continue;
            }
            // Strided C columns: the kernel writes A B into a contiguous staging tile, then alpha/beta apply here.
            tile.c = staging;
            tile.c_row_stride = nr;
            tile.alpha = 1.0f;
            tile.beta = 0.0f;
            path.tile.run(tile);
            for (int r = 0; r < tile.rows; ++r) {
              float* row = c + r * p.crs;
              for (int j = 0; j < tile.cols; ++j) {
                const float value = staging[r * nr + j];
                float& out = row[j * p.ccs];
                out = beta == 0.0f ? p.alpha * value : p.alpha * value + beta * out;
              }
            }
          }
        }
      }
    }
  }
}

void run_blocked(const Problem& p, const Path& path) {
  const int mr = path.tile.mr;
  const int nr = path.tile.nr;
  const int64_t row_tiles = (p.m + mr - 1) / mr;
  const int64_t col_tiles = (p.n + nr - 1) / nr;
  const int threads = static_cast<int>(std::min<int64_t>(threads_for(p), std::max(row_tiles, col_tiles)));
  // Every kernel computes an element the same way wherever its tile starts, so the split may cut through tiles: rows
  // in steps of 4 (columns in whole vectors) keep both threads' shares equal to within a few rows.
  const bool split_rows = row_tiles >= 2 * threads || row_tiles >= col_tiles;
  run_on_threads(threads, [&](int part, int parts) {
    Problem mine = p;
    int64_t begin, end;
    if (split_rows) {
      split_range(p.m, kRowGrain, part, parts, &begin, &end);
      mine.m = end - begin;
      mine.a = p.a + begin * p.ars;
      mine.c = p.c + begin * p.crs;
    } else {
      split_range(p.n, kColumnGrain, part, parts, &begin, &end);
      mine.n = end - begin;
      mine.b = p.b + begin * p.bcs;
      mine.c = p.c + begin * p.ccs;
    }
    if (begin < end) run_blocked_part(mine, path);
  });
}

void check_operands(const GemmOperands& o) {
  if (o.m < 0 || o.n < 0 || o.k < 0) {
    throw RangeError("gemm: negative size (m=" + std::to_string(o.m) + ", n=" + std::to_string(o.n) +
                     ", k=" + std::to_string(o.k) + ")");
  }
}

}  // namespace

void kernels::override_blocking(int isa, int64_t kc, int64_t mc, int64_t nc) {
  if (isa < 0 || isa > 2 || kc < 1 || mc < 1 || nc < 1) throw RangeError("override_blocking: bad arguments");
  tuned_blocking[isa] = {kc, mc, nc};
}

void gemm(const GemmOperands& operands) { gemm(operands, active_isa()); }

void gemm(const GemmOperands& operands, Isa isa) {
  check_operands(operands);
  if (!isa_supported(isa)) {
    throw RangeError(std::string("gemm: isa '") + isa_name(isa) + "' is not supported by this CPU or build");
  }
  if (operands.m == 0 || operands.n == 0) return;
  Problem p = from_operands(operands);
  if (p.k == 0 || p.alpha == 0.0f) {
    scale_c(p);
    return;
  }
  const Path path = path_for(isa);
  // Every choice below depends only on shapes and strides, never on timing or the thread count.
  if (path.dot != nullptr) {
    if (fits_dot(p)) return run_dot(p, path);
    if (fits_dot(p.transposed())) return run_dot(p.transposed(), path);
  }
  const int nr = path.tile.nr;
  // A tile row is NR columns wide: with fewer columns than that, most of it would be padding.
  const auto wastes_columns = [nr](int64_t m, int64_t n) { return n < nr && m > n; };
  if (wastes_columns(p.m, p.n) || (!wastes_columns(p.n, p.m) && p.ccs != 1 && p.crs == 1)) p = p.transposed();
  run_blocked(p, path);
}

void gemm_reference(const GemmOperands& o) {
  check_operands(o);
  for (int64_t i = 0; i < o.m; ++i) {
    for (int64_t j = 0; j < o.n; ++j) {
      double sum = 0.0;
      for (int64_t q = 0; q < o.k; ++q) {
        sum += static_cast<double>(o.a[i * o.a_row_stride + q * o.a_col_stride]) *
               static_cast<double>(o.b[q * o.b_row_stride + j * o.b_col_stride]);
      }
      float& out = o.c[i * o.c_row_stride + j * o.c_col_stride];
      const double scaled = static_cast<double>(o.alpha) * sum;
      out = static_cast<float>(o.beta == 0.0f ? scaled : scaled + static_cast<double>(o.beta) * out);
    }
  }
}

}  // namespace bidora::cpu
