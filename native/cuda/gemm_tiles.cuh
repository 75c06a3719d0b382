// Index math of the GEMM kernels, shared with the host test that replays each kernel's tiling on the CPU: where a
// block's threads load op(A) and op(B) tiles from, which outputs each thread or warp owns, and the edge rule (reads
// past a matrix give 0, writes past it are skipped), so any M, N, K works.
//
// Legend: C [M,N] = alpha op(A) [M,K] op(B) [K,N] + beta C, every matrix row-major and contiguous. op(A) = A stored
// [M,K], or Aᵀ with A stored [K,M] (a_transposed); op(B) = B stored [K,N], or Bᵀ with B stored [N,K].
#pragma once

#include "../common/bf16.h"
#include "host_device.h"

namespace bidora::cuda {

// Element (row, col) of op(X), a rows x cols matrix, stored row-major as itself or as its transpose.
BIDORA_HD int64_t operand_offset(int64_t row, int64_t col, int64_t rows, int64_t cols, bool transposed) {
  return transposed ? col * rows + row : row * cols + col;
}

BIDORA_HD float load_or_zero(const float* matrix, int64_t row, int64_t col, int64_t rows, int64_t cols,
                             bool transposed) {
  return row < rows && col < cols ? matrix[operand_offset(row, col, rows, cols, transposed)] : 0.0f;
}

// The same from a bfloat16 operand (a frozen weight), widened exactly.
BIDORA_HD float load_or_zero(const Bf16* matrix, int64_t row, int64_t col, int64_t rows, int64_t cols,
                             bool transposed) {
  return row < rows && col < cols ? bf16_to_float(matrix[operand_offset(row, col, rows, cols, transposed)]) : 0.0f;
}

struct TileCoord {
  int row, col;
};

// The linear-th element a block loads of a tile_rows x tile_cols tile of op(X). Consecutive threads walk along the
// stored rows (the tile's columns when X is stored as itself, its rows when transposed) so global reads coalesce.
BIDORA_HD TileCoord tile_load_coord(int linear, bool transposed, int tile_rows, int tile_cols) {
  if (transposed) return {linear % tile_rows, linear / tile_rows};
  return {linear / tile_cols, linear % tile_cols};
}

// ---- the float32 tiled kernel: 256 threads, a 64 x 64 block tile, 4 x 4 outputs per thread ----------------------
namespace simt {
constexpr int kBlockRows = 64, kBlockCols = 64, kBlockDepth = 16, kThreads = 256, kThreadTile = 4;
constexpr int kThreadsPerRow = kBlockCols / kThreadTile;  // 16
// A thread's outputs are strided by 16 rows and 16 columns, so a warp's shared-memory reads hit distinct banks.
BIDORA_HD int thread_out_row(int thread, int i) { return thread / kThreadsPerRow + i * (kBlockRows / kThreadTile); }
BIDORA_HD int thread_out_col(int thread, int j) { return thread % kThreadsPerRow + j * kThreadsPerRow; }
static_assert(kBlockRows * kBlockDepth % kThreads == 0 && kBlockCols * kBlockDepth % kThreads == 0);
}  // namespace simt

// ---- the tensor-core kernel: 8 warps in a 4 x 2 grid, a 128 x 128 block tile, 32 x 64 per warp -------------------
namespace wmma_tile {
constexpr int kBlockRows = 128, kBlockCols = 128, kBlockDepth = 32, kWarps = 8, kThreads = kWarps * 32;
constexpr int kWarpRows = 32, kWarpCols = 64, kFragment = 16;
constexpr int kFragmentsDown = kWarpRows / kFragment, kFragmentsAcross = kWarpCols / kFragment;  // 2 x 4
constexpr int kWarpGridCols = kBlockCols / kWarpCols;                                            // 2
BIDORA_HD int warp_origin_row(int warp) { return (warp / kWarpGridCols) * kWarpRows; }
BIDORA_HD int warp_origin_col(int warp) { return (warp % kWarpGridCols) * kWarpCols; }
// A 16 x 16 accumulator goes out through a per-warp staging square; each lane copies elements lane, lane + 32, ...
BIDORA_HD TileCoord staging_coord(int element) { return {element / kFragment, element % kFragment}; }
static_assert(kBlockRows / kWarpRows * kWarpGridCols == kWarps);
}  // namespace wmma_tile

// Split-K: a product with few output tiles and a long K is cut into `splits` slices of K, each a grid layer that
// writes its partial C; a second kernel adds the layers in order (so the result is deterministic) and applies beta.
// The count depends on the shape alone, never on the GPU, so the bits do not change between machines.
BIDORA_HD int split_k_count(int64_t output_tiles, int64_t k) {
  constexpr int64_t kTargetBlocks = 256, kMinSliceDepth = 512, kMaxSplits = 16;
  if (output_tiles >= kTargetBlocks / 2) return 1;
  int64_t splits = kTargetBlocks / (output_tiles > 0 ? output_tiles : 1);
  const int64_t by_depth = k / kMinSliceDepth;
  if (splits > by_depth) splits = by_depth;
  if (splits > kMaxSplits) splits = kMaxSplits;
  return splits < 1 ? 1 : static_cast<int>(splits);
}

// The K depth of each slice: whole block depths, so only the last non-empty slice has a ragged edge (slices past K
// are empty and write zero partials). Slice s covers [s · depth, min(K, (s + 1) · depth)).
BIDORA_HD int64_t split_k_depth(int64_t k, int splits, int64_t block_depth) {
  return ceil_div(ceil_div(k, block_depth), splits) * block_depth;
}

}  // namespace bidora::cuda
