// Single-precision matrix products on the GPU: a tensor-core kernel (WMMA, TF32 or BF16 inputs, float32
// accumulation), a plain float32 tiled kernel, and split-K for products with few output tiles and a long K.
// Index math and edge rules live in gemm_tiles.cuh, where the host test replays them.
#include <cuda_bf16.h>
#include <mma.h>

#include <type_traits>

#include "cuda_ops.h"
#include "device_common.cuh"
#include "gemm_tiles.cuh"

namespace bidora::cuda {

namespace {

namespace wmma = nvcuda::wmma;

// What a kernel needs besides the pointers. depth_per_split: the K slice of one grid layer (blockIdx.z); with
// several layers each writes its partial product (alpha applied, no beta) to its own [M,N] slab of C.
struct GemmArgs {
  int64_t m, n, k, depth_per_split;
  bool a_transposed, b_transposed;
  float alpha, beta;
};

// C(row, col) = alpha acc + beta C, skipped outside C. beta == 0 never reads C (it may hold NaN).
__device__ __forceinline__ void store_output(float* c, int64_t row, int64_t col, float acc, const GemmArgs& args) {
  if (row >= args.m || col >= args.n) return;
  float* target = c + row * args.n + col;
  *target = args.beta == 0.0f ? args.alpha * acc : args.alpha * acc + args.beta * *target;
}

// ---- kernels --------------------------------------------------------------------------------------------------------

__global__ void __launch_bounds__(simt::kThreads)
    gemm_float32_kernel(float* c, const float* a, const float* b, GemmArgs args) {
  using namespace simt;
  // k-major tiles (one padding column keeps the transposing stores off a single bank).
  __shared__ float a_tile[kBlockDepth][kBlockRows + 1];
  __shared__ float b_tile[kBlockDepth][kBlockCols + 1];
  const int thread = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kBlockRows;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kBlockCols;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * args.depth_per_split;
  const int64_t k_end = min(args.k, k_begin + args.depth_per_split);
  float acc[kThreadTile][kThreadTile] = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBlockDepth) {
    for (int index = thread; index < kBlockRows * kBlockDepth; index += kThreads) {
      const TileCoord at = tile_load_coord(index, args.a_transposed, kBlockRows, kBlockDepth);
      const int64_t depth = k0 + at.col;
      a_tile[at.col][at.row] =
          depth < k_end ? load_or_zero(a, row0 + at.row, depth, args.m, args.k, args.a_transposed) : 0.0f;
    }
    for (int index = thread; index < kBlockDepth * kBlockCols; index += kThreads) {
      const TileCoord at = tile_load_coord(index, args.b_transposed, kBlockDepth, kBlockCols);
      const int64_t depth = k0 + at.row;
      b_tile[at.row][at.col] =
          depth < k_end ? load_or_zero(b, depth, col0 + at.col, args.k, args.n, args.b_transposed) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBlockDepth; ++kk) {
      float a_values[kThreadTile], b_values[kThreadTile];
#pragma unroll
      for (int i = 0; i < kThreadTile; ++i) a_values[i] = a_tile[kk][thread_out_row(thread, i)];
#pragma unroll
      for (int j = 0; j < kThreadTile; ++j) b_values[j] = b_tile[kk][thread_out_col(thread, j)];
#pragma unroll
      for (int i = 0; i < kThreadTile; ++i) {
#pragma unroll
        for (int j = 0; j < kThreadTile; ++j) acc[i][j] += a_values[i] * b_values[j];
      }
    }
    __syncthreads();
  }
  float* out = c + static_cast<int64_t>(blockIdx.z) * args.m * args.n;
#pragma unroll
  for (int i = 0; i < kThreadTile; ++i) {
#pragma unroll
    for (int j = 0; j < kThreadTile; ++j) {
      store_output(out, row0 + thread_out_row(thread, i), col0 + thread_out_col(thread, j), acc[i][j], args);
    }
  }
}

// Per input type: the WMMA shape's depth, the fragment element type, and how a float is stored in shared memory.
// The padding keeps every fragment pointer 32-byte aligned while shifting rows across banks.
template <typename Element>
struct WmmaTraits;

template <>
struct WmmaTraits<float> {  // TF32: float in shared memory, rounded to TF32 once in the fragment
  static constexpr int kDepth = 8, kPad = 4;
  using FragmentType = wmma::precision::tf32;
  __device__ static float from_float(float value) { return value; }
  template <typename Fragment>
  __device__ static void round(Fragment& fragment) {
    for (int t = 0; t < fragment.num_elements; ++t) fragment.x[t] = wmma::__float_to_tf32(fragment.x[t]);
  }
};

template <>
struct WmmaTraits<__nv_bfloat16> {  // BF16: rounded (to nearest even) when stored to shared memory
  static constexpr int kDepth = 16, kPad = 8;
  using FragmentType = __nv_bfloat16;
  __device__ static __nv_bfloat16 from_float(float value) { return __float2bfloat16_rn(value); }
  template <typename Fragment>
  __device__ static void round(Fragment&) {}
};

// Two blocks per SM (at most 128 registers a thread): the tile loads are not pipelined, so one block's loads hide
// behind the other's tensor-core work. Either operand may be stored in bfloat16 (AType, BType: float or Bf16), a
// frozen weight, which the BF16 form then takes as it is.
template <typename Element, typename AType = float, typename BType = float>
__global__ void __launch_bounds__(wmma_tile::kThreads, 2)
    gemm_wmma_kernel(float* c, const AType* a, const BType* b, GemmArgs args) {
  using namespace wmma_tile;
  using Traits = WmmaTraits<Element>;
  constexpr int kDepth = Traits::kDepth, kPad = Traits::kPad;
  using FragmentA =
      wmma::fragment<wmma::matrix_a, kFragment, kFragment, kDepth, typename Traits::FragmentType, wmma::row_major>;
  using FragmentB =
      wmma::fragment<wmma::matrix_b, kFragment, kFragment, kDepth, typename Traits::FragmentType, wmma::row_major>;
  using Accumulator = wmma::fragment<wmma::accumulator, kFragment, kFragment, kDepth, float>;

  __shared__ __align__(128) Element a_tile[kBlockRows][kBlockDepth + kPad];  // (row, depth)
  __shared__ __align__(128) Element b_tile[kBlockDepth][kBlockCols + kPad];  // (depth, col)
  __shared__ __align__(128) float staging[kWarps][kFragment * kFragment];

  const int thread = threadIdx.x, warp = thread / 32, lane = thread % 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kBlockRows;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kBlockCols;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * args.depth_per_split;
  const int64_t k_end = min(args.k, k_begin + args.depth_per_split);
  const int warp_row = warp_origin_row(warp), warp_col = warp_origin_col(warp);

  Accumulator acc[kFragmentsDown][kFragmentsAcross];
#pragma unroll
  for (int i = 0; i < kFragmentsDown; ++i) {
#pragma unroll
    for (int j = 0; j < kFragmentsAcross; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBlockDepth) {
    for (int index = thread; index < kBlockRows * kBlockDepth; index += kThreads) {
      const TileCoord at = tile_load_coord(index, args.a_transposed, kBlockRows, kBlockDepth);
      const int64_t depth = k0 + at.col;
      const float value =
          depth < k_end ? load_or_zero(a, row0 + at.row, depth, args.m, args.k, args.a_transposed) : 0.0f;
      a_tile[at.row][at.col] = Traits::from_float(value);
    }
    for (int index = thread; index < kBlockDepth * kBlockCols; index += kThreads) {
      const TileCoord at = tile_load_coord(index, args.b_transposed, kBlockDepth, kBlockCols);
      const int64_t depth = k0 + at.row;
      const float value =
          depth < k_end ? load_or_zero(b, depth, col0 + at.col, args.k, args.n, args.b_transposed) : 0.0f;
      b_tile[at.row][at.col] = Traits::from_float(value);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBlockDepth; kk += kDepth) {
      FragmentA a_fragments[kFragmentsDown];
      FragmentB b_fragments[kFragmentsAcross];
#pragma unroll
      for (int i = 0; i < kFragmentsDown; ++i) {
        wmma::load_matrix_sync(a_fragments[i], &a_tile[warp_row + i * kFragment][kk], kBlockDepth + kPad);
        Traits::round(a_fragments[i]);
      }
#pragma unroll
      for (int j = 0; j < kFragmentsAcross; ++j) {
        wmma::load_matrix_sync(b_fragments[j], &b_tile[kk][warp_col + j * kFragment], kBlockCols + kPad);
        Traits::round(b_fragments[j]);
      }
#pragma unroll
      for (int i = 0; i < kFragmentsDown; ++i) {
#pragma unroll
        for (int j = 0; j < kFragmentsAcross; ++j) wmma::mma_sync(acc[i][j], a_fragments[i], b_fragments[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  // Out through a per-warp staging square, so the edges of C get the same bounds checks as the float32 kernel.
  float* out = c + static_cast<int64_t>(blockIdx.z) * args.m * args.n;
#pragma unroll
  for (int i = 0; i < kFragmentsDown; ++i) {
#pragma unroll
    for (int j = 0; j < kFragmentsAcross; ++j) {
      wmma::store_matrix_sync(staging[warp], acc[i][j], kFragment, wmma::mem_row_major);
      __syncwarp();
      for (int element = lane; element < kFragment * kFragment; element += 32) {
        const TileCoord at = staging_coord(element);
        store_output(out, row0 + warp_row + i * kFragment + at.row, col0 + warp_col + j * kFragment + at.col,
                     staging[warp][element], args);
      }
      __syncwarp();
    }
  }
}

// C = Σ over layers of the partial slabs, in layer order, + beta C.
__global__ void split_k_reduce_kernel(float* c, const float* partials, int splits, int64_t elements, float beta) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < elements;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float total = 0.0f;
    for (int split = 0; split < splits; ++split) total += partials[split * elements + index];
    c[index] = beta == 0.0f ? total : total + beta * c[index];
  }
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------------------------------------

namespace {

// The tiling, split-K and kernel choice shared by every operand type. A bfloat16 operand always runs on BF16 tensor
// cores (the other operand rounded to bfloat16 in shared memory), as the CPU's vdpbf16ps path does.
template <typename AType, typename BType>
void launch_gemm(float* c, const AType* a, bool a_transposed, const BType* b, bool b_transposed, int64_t m, int64_t n,
                 int64_t k, float alpha, float beta, GemmPrecision precision, GemmScratch scratch,
                 cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  constexpr bool has_bf16_operand = !std::is_same_v<AType, float> || !std::is_same_v<BType, float>;
  if (has_bf16_operand) precision = GemmPrecision::kBf16;
  const bool tensor_cores = precision != GemmPrecision::kFloat32;
  const int block_rows = tensor_cores ? wmma_tile::kBlockRows : simt::kBlockRows;
  const int block_cols = tensor_cores ? wmma_tile::kBlockCols : simt::kBlockCols;
  const int block_depth = tensor_cores ? wmma_tile::kBlockDepth : simt::kBlockDepth;
  const int64_t tiles_down = ceil_div(m, block_rows), tiles_across = ceil_div(n, block_cols);
  int splits = split_k_count(tiles_down * tiles_across, k);
  if (scratch.data == nullptr || static_cast<size_t>(splits) * m * n > scratch.floats) splits = 1;
  const int64_t depth_per_split = splits == 1 ? (k > 0 ? k : 1) : split_k_depth(k, splits, block_depth);
  GemmArgs args{m, n, k, depth_per_split, a_transposed, b_transposed, alpha, beta};
  float* target = c;
  if (splits > 1) {  // the layers write partials; beta is applied once, by the reduction
    args.beta = 0.0f;
    target = scratch.data;
  }
  const dim3 grid(static_cast<unsigned>(tiles_across), static_cast<unsigned>(tiles_down), splits);
  if constexpr (has_bf16_operand) {
    gemm_wmma_kernel<__nv_bfloat16, AType, BType><<<grid, wmma_tile::kThreads, 0, stream>>>(target, a, b, args);
  } else {
    switch (precision) {
      case GemmPrecision::kFloat32:
        gemm_float32_kernel<<<grid, simt::kThreads, 0, stream>>>(target, a, b, args);
        break;
      case GemmPrecision::kTf32:
        gemm_wmma_kernel<float><<<grid, wmma_tile::kThreads, 0, stream>>>(target, a, b, args);
        break;
      case GemmPrecision::kBf16:
        gemm_wmma_kernel<__nv_bfloat16><<<grid, wmma_tile::kThreads, 0, stream>>>(target, a, b, args);
        break;
    }
  }
  if (splits > 1) {
    split_k_reduce_kernel<<<elementwise_blocks(m * n), kElementwiseThreads, 0, stream>>>(c, scratch.data, splits, m * n,
                                                                                         beta);
  }
}

}  // namespace

void gemm(float* c, const float* a, bool a_transposed, const float* b, bool b_transposed, int64_t m, int64_t n,
          int64_t k, float alpha, float beta, GemmPrecision precision, GemmScratch scratch, cudaStream_t stream) {
  launch_gemm(c, a, a_transposed, b, b_transposed, m, n, k, alpha, beta, precision, scratch, stream);
}

void gemm(float* c, WeightView a, bool a_transposed, WeightView b, bool b_transposed, int64_t m, int64_t n, int64_t k,
          float alpha, float beta, GemmPrecision precision, GemmScratch scratch, cudaStream_t stream) {
  const auto with_b = [&](auto a_operand) {
    if (b.bf16 != nullptr) {
      launch_gemm(c, a_operand, a_transposed, b.bf16, b_transposed, m, n, k, alpha, beta, precision, scratch, stream);
    } else {
      launch_gemm(c, a_operand, a_transposed, b.f32, b_transposed, m, n, k, alpha, beta, precision, scratch, stream);
    }
  };
  if (a.bf16 != nullptr) {
    with_b(a.bf16);
  } else {
    with_b(a.f32);
  }
}

}  // namespace bidora::cuda
