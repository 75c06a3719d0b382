// GEMM driver: operand orientation, thread partitioning, cache blocking and packing, plus the portable kernel and
// the reference product every fast path is tested against.
#include "gemm.h"

#include <algorithm>
#include <array>
#include <string>
#include <utility>
#include <vector>

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

// The product with explicit element strides; `transposed` describes C^T = B^T A^T over the same memory (never taken
// with a bfloat16 B, b16, which only the B role reads).
struct Problem {
  float* c;
  int64_t crs, ccs;
  const float* a;
  int64_t ars, acs;
  const float* b;
  int64_t brs, bcs;
  int64_t m, n, k;
  float alpha, beta;
  const uint16_t* b16;
  const float* bias;  // per column of C; never in a transposed problem (add_bias_first takes it out before)

  Problem transposed() const { return {c, ccs, crs, b, bcs, brs, a, acs, ars, n, m, k, alpha, beta, nullptr, nullptr}; }
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
          o.beta,
          o.b_bf16,
          o.bias};
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
  void (*dot)(const DotBlock&) = nullptr;  // null where the path has no thin-C form
  int dot_grain = 1;
};

// KC counts elements of k for every path; the pairs kernel's panels are half as deep in words, so the same bytes.
Blocking tuned_blocking[4] = {
    {256, 256, 512},  // generic
    {256, 960, 768},  // avx2, 6x16 tiles
    {384, 960, 512},  // avx512, 12x32 tiles
    {768, 960, 512},  // avx512 with bfloat16 B and AVX512-BF16, 12x32 pair tiles
};
constexpr int kBf16Blocking = 3;

Path path_for(Isa isa, bool bf16_b = false) {
  const Blocking blocking = tuned_blocking[static_cast<int>(isa)];
#if defined(__x86_64__) || defined(_M_X64)
  if (bf16_b && bf16_dot_product(isa)) return {kernels::tile_kernel_avx512_bf16(), tuned_blocking[kBf16Blocking]};
  if (isa == Isa::Avx512) return {kernels::tile_kernel_avx512(), blocking, &kernels::dot_block_avx512, 6};
  if (isa == Isa::Avx2) return {kernels::tile_kernel_avx2(), blocking, &kernels::dot_block_avx2, 6};
#endif
  return {{kGenericMr, kGenericNr, &run_tile_generic, &kernels::pack_a_panels<kGenericMr>,
           &kernels::pack_b_panels<kGenericNr>, &kernels::pack_b_panels<kGenericNr, uint16_t>},
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

// C = beta * C (+ the bias row), for alpha == 0 or k == 0, where A and B are never read.
void scale_c(const Problem& p) {
  for (int64_t i = 0; i < p.m; ++i) {
    float* row = p.c + i * p.crs;
    for (int64_t j = 0; j < p.n; ++j) {
      float& value = row[j * p.ccs];
      value = (p.beta == 0.0f ? 0.0f : p.beta * value) + (p.bias != nullptr ? p.bias[j] : 0.0f);
    }
  }
}

// The forms without a bias epilogue (thin C, transposed): C = beta C + bias first, then the product onto it.
Problem add_bias_first(Problem p) {
  if (p.bias == nullptr) return p;
  scale_c(p);
  p.beta = 1.0f;
  p.bias = nullptr;
  return p;
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

// Rows of A and where their products land in C. A plain product is one block; a stacked one is several that share
// B, so that B is packed (and streamed from memory) once for all of them.
struct RowBlock {
  const float* a;
  int64_t ars, acs;
  float* c;
  int64_t crs, ccs;
  int64_t m;
  float alpha, beta;
  const float* bias;  // added to every row of C, indexed by C's column; or null
};

// The B (k x n) every block multiplies: float32 b, or bfloat16 b16.
struct SharedB {
  const float* b;
  int64_t brs, bcs;
  int64_t n, k;
  const uint16_t* b16;
};

RowBlock row_block_of(const Problem& p) { return {p.a, p.ars, p.acs, p.c, p.crs, p.ccs, p.m, p.alpha, p.beta, p.bias}; }
SharedB shared_b_of(const Problem& p) { return {p.b, p.brs, p.bcs, p.n, p.k, p.b16}; }

// Up to this many blocks live on the stack; more (rare) go to the heap.
constexpr int kInlineBlocks = 8;

// Storage for `count` items, on the stack when few.
template <typename T>
class SmallArray {
 public:
  explicit SmallArray(int count) {
    if (count > kInlineBlocks) heap_.resize(count);
  }
  T* data() { return heap_.empty() ? inline_ : heap_.data(); }

 private:
  T inline_[kInlineBlocks];
  std::vector<T> heap_;
};

// A run of one block's rows inside a packed A chunk; each piece starts on a fresh MR panel, so a register tile
// never straddles two blocks.
struct Piece {
  const RowBlock* block;
  int64_t row, rows;
  int64_t packed_offset;  // floats from the start of the packed chunk
};

// One thread's share: C = alpha A B + beta C for every block, looping KC (depth) > MC (rows of all blocks, in order)
// > NC (columns) > MR > NR. The MC chunk gathers rows across blocks, so a B block is packed once per chunk, not once
// per block.
void run_blocked_part(const RowBlock* blocks, int count, const SharedB& sb, const Path& path) {
  const int mr = path.tile.mr;
  const int nr = path.tile.nr;
  const Blocking& blocking = path.blocking;
  int64_t total_rows = 0;
  for (int i = 0; i < count; ++i) total_rows += blocks[i].m;
  // A B with contiguous rows that few row panels share is read in place: packing would cost more than it saves.
  // A bfloat16 B is always packed (widened, or into pairs).
  const bool b_in_place = sb.b16 == nullptr && sb.bcs == 1 && total_rows <= 2 * mr;
  SmallArray<Piece> piece_storage(count);
  Piece* pieces = piece_storage.data();
  alignas(64) float staging[16 * 64];
  for (int64_t pc = 0; pc < sb.k; pc += blocking.kc) {
    const int64_t kc = std::min(blocking.kc, sb.k - pc);
    const int64_t kw = path.tile.pairs ? (kc + 1) / 2 : kc;  // packed depth in 32-bit words
    int block_index = 0;
    int64_t block_row = 0;
    while (block_index < count) {
      // Gather the next chunk: up to MC rows, panel-padded, from consecutive blocks.
      int piece_count = 0;
      int64_t padded = 0;
      while (block_index < count && padded < blocking.mc) {
        const RowBlock& block = blocks[block_index];
        const int64_t rows = std::min(block.m - block_row, blocking.mc - padded);
        pieces[piece_count++] = {&block, block_row, rows, padded * kw};
        padded += round_up(rows, mr);
        block_row += rows;
        if (block_row == block.m) {
          ++block_index;
          block_row = 0;
        }
      }
      float* packed_a = thread_workspace(kSlotPackedA, padded * kw);
      for (int q = 0; q < piece_count; ++q) {
        const Piece& piece = pieces[q];
        const RowBlock& block = *piece.block;
        path.tile.pack_a(block.a + piece.row * block.ars + pc * block.acs, block.ars, block.acs, piece.rows, kc,
                         packed_a + piece.packed_offset);
      }
      for (int64_t jc = 0; jc < sb.n; jc += blocking.nc) {
        const int64_t nc = std::min(blocking.nc, sb.n - jc);
        float* packed_b = nullptr;
        if (!b_in_place) {
          packed_b = thread_workspace(kSlotPackedB, round_up(nc, nr) * kw);
          const int64_t origin = pc * sb.brs + jc * sb.bcs;
          if (sb.b16 != nullptr) {
            path.tile.pack_b16(sb.b16 + origin, sb.brs, sb.bcs, kc, nc, packed_b);
          } else {
            path.tile.pack_b(sb.b + origin, sb.brs, sb.bcs, kc, nc, packed_b);
          }
        }
        for (int q = 0; q < piece_count; ++q) {
          const Piece& piece = pieces[q];
          const RowBlock& block = *piece.block;
          // Later depth blocks add onto what the first one wrote; the first adds the bias.
          const float beta = pc == 0 ? block.beta : 1.0f;
          const float* bias = pc == 0 ? block.bias : nullptr;
          const bool c_in_place = block.ccs == 1;
          for (int64_t ir = 0; ir < piece.rows; ir += mr) {
            Tile tile;
            tile.k = kw;
            tile.a = packed_a + piece.packed_offset + ir * kw;
            tile.a_k_stride = mr;
            tile.rows = static_cast<int>(std::min<int64_t>(mr, piece.rows - ir));
            tile.b_padded = !b_in_place;
            tile.b_k_stride = b_in_place ? sb.brs : nr;
            for (int64_t jr = 0; jr < nc; jr += nr) {
              tile.b = b_in_place ? sb.b + pc * sb.brs + jc + jr : packed_b + jr * kw;
              tile.cols = static_cast<int>(std::min<int64_t>(nr, nc - jr));
              float* c = block.c + (piece.row + ir) * block.crs + (jc + jr) * block.ccs;
              if (c_in_place) {
                tile.c = c;
                tile.c_row_stride = block.crs;
                tile.alpha = block.alpha;
                tile.beta = beta;
                if (bias != nullptr) {
                  // beta C + bias into the tile's rows just before the kernel adds onto them, while they are in L1.
                  for (int r = 0; r < tile.rows; ++r) {
                    float* row = c + r * block.crs;
                    const float* add = bias + jc + jr;
                    for (int j = 0; j < tile.cols; ++j) row[j] = (beta == 0.0f ? 0.0f : beta * row[j]) + add[j];
                  }
                  tile.beta = 1.0f;
                }
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
                float* row = c + r * block.crs;
                for (int j = 0; j < tile.cols; ++j) {
                  const float value = staging[r * nr + j];
                  float& out = row[j * block.ccs];
                  out = beta == 0.0f ? block.alpha * value : block.alpha * value + beta * out;
                  if (bias != nullptr) out += bias[jc + jr + j];
                }
              }
            }
          }
        }
      }
    }
  }
}

void run_blocked(const RowBlock* blocks, int count, const SharedB& sb, const Path& path) {
  const int mr = path.tile.mr;
  const int nr = path.tile.nr;
  int64_t total_rows = 0, row_tiles = 0;
  for (int i = 0; i < count; ++i) {
    total_rows += blocks[i].m;
    row_tiles += (blocks[i].m + mr - 1) / mr;
  }
  const int64_t col_tiles = (sb.n + nr - 1) / nr;
  const double flops = 2.0 * static_cast<double>(total_rows) * static_cast<double>(sb.n) * static_cast<double>(sb.k);
  const int wanted = flops < kParallelFlops ? 1 : num_threads();
  const int threads = static_cast<int>(std::min<int64_t>(wanted, std::max(row_tiles, col_tiles)));
  // Every kernel computes an element the same way wherever its tile starts, so the split may cut through tiles: rows
  // in steps of 4 (columns in whole vectors) keep both threads' shares equal to within a few rows. Stacked blocks
  // split as one run of rows, block after block.
  const bool split_rows = row_tiles >= 2 * threads || row_tiles >= col_tiles;
  run_on_threads(threads, [&](int part, int parts) {
    SmallArray<RowBlock> storage(count);
    RowBlock* mine = storage.data();
    int mine_count = 0;
    SharedB my_b = sb;
    int64_t begin, end;
    if (split_rows) {
      split_range(total_rows, kRowGrain, part, parts, &begin, &end);
      int64_t first = 0;  // row of the stack where blocks[i] starts
      for (int i = 0; i < count; ++i) {
        const RowBlock& block = blocks[i];
        const int64_t lo = std::max(begin, first), hi = std::min(end, first + block.m);
        if (lo < hi) {
          RowBlock share = block;
          share.a = block.a + (lo - first) * block.ars;
          share.c = block.c + (lo - first) * block.crs;
          share.m = hi - lo;
          mine[mine_count++] = share;
        }
        first += block.m;
      }
    } else {
      split_range(sb.n, kColumnGrain, part, parts, &begin, &end);
      my_b.n = end - begin;
      if (sb.b16 != nullptr) {
        my_b.b16 = sb.b16 + begin * sb.bcs;
      } else {
        my_b.b = sb.b + begin * sb.bcs;
      }
      for (int i = 0; i < count; ++i) {
        mine[i] = blocks[i];
        mine[i].c = blocks[i].c + begin * blocks[i].ccs;
        if (blocks[i].bias != nullptr) mine[i].bias = blocks[i].bias + begin;
      }
      mine_count = count;
    }
    if (begin < end && mine_count > 0) run_blocked_part(mine, mine_count, my_b, path);
  });
}

void check_operands(const GemmOperands& o) {
  if (o.m < 0 || o.n < 0 || o.k < 0) {
    throw RangeError("gemm: negative size (m=" + std::to_string(o.m) + ", n=" + std::to_string(o.n) +
                     ", k=" + std::to_string(o.k) + ")");
  }
  if ((o.b == nullptr) == (o.b_bf16 == nullptr) && o.k > 0 && o.n > 0) {
    throw RangeError("gemm: exactly one of b (float32) and b_bf16 (bfloat16) must be given");
  }
}

}  // namespace

void kernels::override_blocking(int isa, int64_t kc, int64_t mc, int64_t nc) {
  if (isa < 0 || isa > kBf16Blocking || kc < 1 || mc < 1 || nc < 1) {
    throw RangeError("override_blocking: bad arguments");
  }
  tuned_blocking[isa] = {kc, mc, nc};
}

bool bf16_dot_product(Isa isa) { return isa == Isa::Avx512 && cpu_has_avx512_bf16(); }

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
  const Path path = path_for(isa, p.b16 != nullptr);
  if (p.b16 != nullptr) {  // kept as given: the bfloat16 operand stays B
    const RowBlock block = row_block_of(p);
    return run_blocked(&block, 1, shared_b_of(p), path);
  }
  // Every choice below depends only on shapes and strides, never on timing or the thread count.
  if (path.dot != nullptr) {
    if (fits_dot(p)) return run_dot(add_bias_first(p), path);
    if (fits_dot(p.transposed())) return run_dot(add_bias_first(p).transposed(), path);
  }
  const int nr = path.tile.nr;
  // A tile row is NR columns wide: with fewer columns than that, most of it would be padding.
  const auto wastes_columns = [nr](int64_t m, int64_t n) { return n < nr && m > n; };
  if (wastes_columns(p.m, p.n) || (!wastes_columns(p.n, p.m) && p.ccs != 1 && p.crs == 1)) {
    p = add_bias_first(p).transposed();
  }
  const RowBlock block = row_block_of(p);
  run_blocked(&block, 1, shared_b_of(p), path);
}

void gemm_stacked(const GemmOperands* blocks, int count) { gemm_stacked(blocks, count, active_isa()); }

void gemm_stacked(const GemmOperands* blocks, int count, Isa isa) {
  if (count < 0 || (count > 0 && blocks == nullptr)) throw RangeError("gemm_stacked: bad block list");
  for (int i = 0; i < count; ++i) {
    const GemmOperands& o = blocks[i];
    check_operands(o);
    const GemmOperands& first = blocks[0];
    if (o.b != first.b || o.b_bf16 != first.b_bf16 || o.b_row_stride != first.b_row_stride ||
        o.b_col_stride != first.b_col_stride || o.n != first.n || o.k != first.k) {
      throw RangeError("gemm_stacked: block " + std::to_string(i) + " does not share block 0's B, n and k");
    }
  }
  if (!isa_supported(isa)) {
    throw RangeError(std::string("gemm_stacked: isa '") + isa_name(isa) + "' is not supported by this CPU or build");
  }
  if (count == 0 || blocks[0].n == 0) return;
  SmallArray<RowBlock> storage(count);
  SmallArray<int> origin(count);
  RowBlock* active = storage.data();
  int active_count = 0;
  for (int i = 0; i < count; ++i) {
    if (blocks[i].m == 0) continue;
    const Problem p = from_operands(blocks[i]);
    if (p.k == 0 || p.alpha == 0.0f) {
      scale_c(p);
      continue;
    }
    origin.data()[active_count] = i;
    active[active_count++] = row_block_of(p);
  }
  if (active_count == 0) return;
  const GemmOperands& first = blocks[0];
  const Path path = path_for(isa, first.b_bf16 != nullptr);
  // With fewer columns than a register tile, B is small enough to stream once per block, and each block is better
  // off with the plain call's own orientation (thin-C dot form or transposed).
  if (active_count == 1 || first.n < path.tile.nr) {
    for (int i = 0; i < active_count; ++i) gemm(blocks[origin.data()[i]], isa);
    return;
  }
  const SharedB shared{first.b, first.b_row_stride, first.b_col_stride, first.n, first.k, first.b_bf16};
  run_blocked(active, active_count, shared, path);
}

void gemm_reference(const GemmOperands& o) {
  check_operands(o);
  for (int64_t i = 0; i < o.m; ++i) {
    for (int64_t j = 0; j < o.n; ++j) {
      double sum = 0.0;
      for (int64_t q = 0; q < o.k; ++q) {
        const int64_t at = q * o.b_row_stride + j * o.b_col_stride;
        const float b = o.b != nullptr ? o.b[at] : bf16_to_float(o.b_bf16[at]);
        sum += static_cast<double>(o.a[i * o.a_row_stride + q * o.a_col_stride]) * static_cast<double>(b);
      }
      float& out = o.c[i * o.c_row_stride + j * o.c_col_stride];
      const double scaled = static_cast<double>(o.alpha) * sum + (o.bias != nullptr ? o.bias[j] : 0.0);
      out = static_cast<float>(o.beta == 0.0f ? scaled : scaled + static_cast<double>(o.beta) * out);
    }
  }
}

}  // namespace bidora::cpu
