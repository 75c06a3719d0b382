// Fused scaled-dot-product attention on the GPU (contract in ../common/ops.h): one warp per query row (forward, dQ)
// or per key row (dK, dV), the block's warps sharing tiles of 32 keys or queries in shared memory. Scores take one
// lane per key of a tile, the online softmax reduces across the warp, and each lane accumulates the head features
// e ≡ lane (mod 32). Every sum runs in a fixed order, so results repeat run to run. The masks, the visible-key rule
// and the dropout draw are the CPU's (../common/nn_math.h, random_math.cuh).
#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include "../core/errors.h"
#include "cuda_ops.h"
#include "device_common.cuh"
#include "nn_math.cuh"
#include "random_math.cuh"

namespace bidora::cuda {

namespace {

constexpr int kWarps = 4;  // rows per block
constexpr int kTile = kWarpSize;
constexpr float kNegativeInfinity = -INFINITY;

struct Draw {
  bool active;
  uint64_t key, threshold;
  float keep_scale;
};

Draw draw_of(const ops::BranchDropout& dropout) {
  return {dropout.p > 0, dropout_key(dropout.seed), dropout_threshold(dropout.p), dropout_keep_scale(dropout.p)};
}

__device__ __forceinline__ float dropout_factor(const Draw& draw, int64_t index) {
  if (!draw.active) return 1.0f;
  return dropout_keeps(draw.key, index, draw.threshold) ? draw.keep_scale : 0.0f;
}

// rows x hd of `source` (row stride hd) into `tile` with row stride hd + 1 (no bank conflicts down a column); the
// whole block helps.
__device__ void load_tile(float* tile, const float* source, int64_t rows, int64_t hd) {
  for (int64_t index = threadIdx.x; index < rows * hd; index += blockDim.x) {
    tile[(index / hd) * (hd + 1) + index % hd] = source[index];
  }
}

__device__ __forceinline__ float row_dot(const float* a, const float* b, int64_t hd) {
  float dot = 0.0f;
  for (int64_t e = 0; e < hd; ++e) dot += a[e] * b[e];
  return dot;
}

__device__ __forceinline__ bool key_attends(const float* mask, int64_t j) { return mask == nullptr || mask[j] != 0.0f; }

// Shared memory: the key tile, then per warp its query row, its accumulator and its tile of probabilities.
__global__ void attention_forward_kernel(float* out, float* logsumexp, const float* query, const float* key,
                                         const float* value, const float* key_mask, ops::AttentionDims d, Draw draw) {
  extern __shared__ float shared[];
  const int64_t hd = d.head_size, lq = d.query_length, lk = d.key_length;
  const int64_t row_blocks = ceil_div(lq, int64_t{kWarps});
  const int64_t head_index = blockIdx.x / row_blocks, first = (blockIdx.x % row_blocks) * kWarps;
  const int64_t b = head_index / d.heads, h = head_index % d.heads;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t i = first + warp, row = head_index * lq + i;
  const bool active = i < lq;
  float* key_tile = shared;
  float* q_row = key_tile + kTile * (hd + 1) + warp * hd;
  float* acc = key_tile + kTile * (hd + 1) + kWarps * hd + warp * hd;
  float* p_tile = key_tile + kTile * (hd + 1) + 2 * kWarps * hd + warp * kTile;
  const int64_t kv = (b * d.kv_heads + h / (d.heads / d.kv_heads)) * lk;
  const float* mask = key_mask == nullptr ? nullptr : key_mask + b * lk;
  if (active) {
    for (int64_t e = lane; e < hd; e += kWarpSize) {
      q_row[e] = query[row * hd + e];
      acc[e] = 0.0f;
    }
  }
  const int64_t seen = active ? math::attention_visible_keys(i, lq, lk, d.causal) : 0;
  const int64_t key_end = math::attention_visible_keys(min(first + kWarps, lq) - 1, lq, lk, d.causal);
  float running_max = kNegativeInfinity, running_sum = 0.0f;
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    const int64_t cols = min(int64_t{kTile}, key_end - j0);
    __syncthreads();  // the previous tile is no longer read
    load_tile(key_tile, key + (kv + j0) * hd, cols, hd);
    __syncthreads();
    if (!active) continue;
    const int64_t j = j0 + lane;
    const bool valid = lane < cols && j < seen && key_attends(mask, j);
    const float score = valid ? row_dot(q_row, key_tile + lane * (hd + 1), hd) * d.scale : kNegativeInfinity;
    const float new_max = fmaxf(running_max, warp_max(score));
    if (new_max == kNegativeInfinity) continue;  // the whole warp agrees: nothing seen yet
    const float correction = running_max == kNegativeInfinity ? 0.0f : math::exp_approx(running_max - new_max);
    const float p = valid ? math::exp_approx(score - new_max) : 0.0f;
    running_sum = running_sum * correction + warp_sum(p);
    running_max = new_max;
    p_tile[lane] = valid ? p * dropout_factor(draw, row * lk + j) : 0.0f;
    __syncwarp();
    for (int64_t e = lane; e < hd; e += kWarpSize) {
      float sum = acc[e] * correction;
      for (int64_t c = 0; c < cols; ++c) sum += p_tile[c] * value[(kv + j0 + c) * hd + e];
      acc[e] = sum;
    }
    __syncwarp();
  }
  if (!active) return;
  const float inverse = running_sum > 0.0f ? 1.0f / running_sum : 0.0f;
  for (int64_t e = lane; e < hd; e += kWarpSize) out[row * hd + e] = acc[e] * inverse;
  if (lane == 0) logsumexp[row] = running_sum > 0.0f ? running_max + logf(running_sum) : kNegativeInfinity;
}

// D_i = dO_i · O_i per query row, one warp each.
__global__ void attention_row_dot_kernel(float* row_dots, const float* grad_out, const float* out, int64_t rows,
                                         int64_t hd) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  float dot = 0.0f;
  for (int64_t e = threadIdx.x % kWarpSize; e < hd; e += kWarpSize) dot += grad_out[row * hd + e] * out[row * hd + e];
  dot = warp_sum(dot);
  if (threadIdx.x % kWarpSize == 0) row_dots[row] = dot;
}

// dQ: one warp per query row over tiles of keys and values. Shared: key and value tiles, then per warp its query
// and output-gradient rows, its dQ accumulator and its tile of dS.
__global__ void attention_grad_query_kernel(float* grad_query, const float* grad_out, const float* query,
                                            const float* key, const float* value, const float* key_mask,
                                            const float* logsumexp, const float* row_dots, ops::AttentionDims d,
                                            Draw draw) {
  extern __shared__ float shared[];
  const int64_t hd = d.head_size, lq = d.query_length, lk = d.key_length;
  const int64_t row_blocks = ceil_div(lq, int64_t{kWarps});
  const int64_t head_index = blockIdx.x / row_blocks, first = (blockIdx.x % row_blocks) * kWarps;
  const int64_t b = head_index / d.heads, h = head_index % d.heads;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t i = first + warp, row = head_index * lq + i;
  const bool active = i < lq;
  float* key_tile = shared;
  float* value_tile = key_tile + kTile * (hd + 1);
  float* per_warp = value_tile + kTile * (hd + 1) + warp * (3 * hd + kTile);
  float *q_row = per_warp, *g_row = per_warp + hd, *acc = per_warp + 2 * hd, *ds_tile = per_warp + 3 * hd;
  const int64_t kv = (b * d.kv_heads + h / (d.heads / d.kv_heads)) * lk;
  const float* mask = key_mask == nullptr ? nullptr : key_mask + b * lk;
  const float lse = active ? logsumexp[row] : kNegativeInfinity;
  const float row_term = active ? row_dots[row] : 0.0f;
  if (active) {
    for (int64_t e = lane; e < hd; e += kWarpSize) {
      q_row[e] = query[row * hd + e];
      g_row[e] = grad_out[row * hd + e];
      acc[e] = 0.0f;
    }
  }
  const int64_t seen = active && lse != kNegativeInfinity ? math::attention_visible_keys(i, lq, lk, d.causal) : 0;
  const int64_t key_end = math::attention_visible_keys(min(first + kWarps, lq) - 1, lq, lk, d.causal);
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    const int64_t cols = min(int64_t{kTile}, key_end - j0);
    __syncthreads();
    load_tile(key_tile, key + (kv + j0) * hd, cols, hd);
    load_tile(value_tile, value + (kv + j0) * hd, cols, hd);
    __syncthreads();
    if (!active) continue;
    const int64_t j = j0 + lane;
    float ds = 0.0f;
    if (lane < cols && j < seen && key_attends(mask, j)) {
      const float p = math::exp_approx(row_dot(q_row, key_tile + lane * (hd + 1), hd) * d.scale - lse);
      const float dp = row_dot(g_row, value_tile + lane * (hd + 1), hd);
      ds = p * (dropout_factor(draw, row * lk + j) * dp - row_term);
    }
    ds_tile[lane] = ds;
    __syncwarp();
    for (int64_t e = lane; e < hd; e += kWarpSize) {
      float sum = acc[e];
      for (int64_t c = 0; c < cols; ++c) sum += ds_tile[c] * key_tile[c * (hd + 1) + e];
      acc[e] = sum;
    }
    __syncwarp();
  }
  if (!active) return;
  for (int64_t e = lane; e < hd; e += kWarpSize) grad_query[row * hd + e] = acc[e] * d.scale;
}

// dK and dV: one warp per key row of a kv head, over every query head that reads it and tiles of its queries.
// Shared: query and output-gradient tiles, then per warp its key and value rows, its two accumulators and its tiles
// of P ⊙ Z and dS.
__global__ void attention_grad_key_value_kernel(float* grad_key, float* grad_value, const float* grad_out,
                                                const float* query, const float* key, const float* value,
                                                const float* key_mask, const float* logsumexp, const float* row_dots,
                                                ops::AttentionDims d, Draw draw) {
  extern __shared__ float shared[];
  const int64_t hd = d.head_size, lq = d.query_length, lk = d.key_length, group = d.heads / d.kv_heads;
  const int64_t row_blocks = ceil_div(lk, int64_t{kWarps});
  const int64_t kv_index = blockIdx.x / row_blocks, first = (blockIdx.x % row_blocks) * kWarps;
  const int64_t b = kv_index / d.kv_heads, kv_head = kv_index % d.kv_heads;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t j = first + warp, kv_row = kv_index * lk + j;
  const bool active = j < lk && (key_mask == nullptr || key_mask[b * lk + j] != 0.0f);
  float* query_tile = shared;
  float* grad_tile = query_tile + kTile * (hd + 1);
  float* per_warp = grad_tile + kTile * (hd + 1) + warp * (4 * hd + 2 * kTile);
  float *k_row = per_warp, *v_row = per_warp + hd, *dk = per_warp + 2 * hd, *dv = per_warp + 3 * hd;
  float *pz_tile = per_warp + 4 * hd, *ds_tile = pz_tile + kTile;
  if (j < lk) {
    for (int64_t e = lane; e < hd; e += kWarpSize) {
      k_row[e] = key[kv_row * hd + e];
      v_row[e] = value[kv_row * hd + e];
      dk[e] = 0.0f;
      dv[e] = 0.0f;
    }
  }
  // The first query whose visible keys reach this block's first key (causal); earlier ones see none of it.
  int64_t query_start = 0;
  if (d.causal) query_start = max(int64_t{0}, first - (lk - lq));
  for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    const int64_t query_offset = (b * d.heads + head) * lq;
    for (int64_t i0 = query_start; i0 < lq; i0 += kTile) {
      const int64_t rows = min(int64_t{kTile}, lq - i0);
      __syncthreads();
      load_tile(query_tile, query + (query_offset + i0) * hd, rows, hd);
      load_tile(grad_tile, grad_out + (query_offset + i0) * hd, rows, hd);
      __syncthreads();
      if (!active) continue;
      const int64_t i = i0 + lane, row = query_offset + i;
      float pz = 0.0f, ds = 0.0f;
      if (lane < rows && j < math::attention_visible_keys(i, lq, lk, d.causal) && logsumexp[row] != kNegativeInfinity) {
        const float p = math::exp_approx(row_dot(query_tile + lane * (hd + 1), k_row, hd) * d.scale - logsumexp[row]);
        const float z = dropout_factor(draw, row * lk + j);
        pz = p * z;
        ds = p * (z * row_dot(grad_tile + lane * (hd + 1), v_row, hd) - row_dots[row]);
      }
      pz_tile[lane] = pz;
      ds_tile[lane] = ds;
      __syncwarp();
      for (int64_t e = lane; e < hd; e += kWarpSize) {
        float sum_v = dv[e], sum_k = dk[e];
        for (int64_t c = 0; c < rows; ++c) {
          sum_v += pz_tile[c] * grad_tile[c * (hd + 1) + e];
          sum_k += ds_tile[c] * query_tile[c * (hd + 1) + e];
        }
        dv[e] = sum_v;
        dk[e] = sum_k;
      }
      __syncwarp();
    }
  }
  if (j >= lk) return;
  for (int64_t e = lane; e < hd; e += kWarpSize) {
    grad_key[kv_row * hd + e] = active ? dk[e] * d.scale : 0.0f;
    grad_value[kv_row * hd + e] = active ? dv[e] : 0.0f;
  }
}

// Dynamic shared memory past the default 48 KiB needs the kernel's opt-in; more than the device has is refused.
template <typename Kernel>
size_t shared_bytes(Kernel kernel, int64_t floats, const char* fn) {
  const size_t bytes = static_cast<size_t>(floats) * sizeof(float);
  if (bytes > 48 * 1024) {
    int device = 0, limit = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (bytes > static_cast<size_t>(limit)) {
      throw RangeError(std::string(fn) + ": headSize is too large for this GPU's shared memory (" +
                       std::to_string(bytes) + " bytes needed, " + std::to_string(limit) + " available)");
    }
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  }
  return bytes;
}

}  // namespace

void attention_forward(const ops::Attention& args, cudaStream_t stream) {
  const ops::AttentionDims& d = args.dims;
  const int64_t blocks = d.batch * d.heads * ceil_div(d.query_length, int64_t{kWarps});
  if (blocks == 0) return;
  const int64_t hd = d.head_size;
  const size_t bytes =
      shared_bytes(attention_forward_kernel, kTile * (hd + 1) + 2 * kWarps * hd + kWarps * kTile, "attention");
  attention_forward_kernel<<<static_cast<unsigned>(blocks), kWarps * kWarpSize, bytes, stream>>>(
      args.out, args.logsumexp, args.query, args.key, args.value, args.key_mask, d, draw_of(d.dropout));
}

void attention_backward(const ops::AttentionBackward& args, float* row_dots, cudaStream_t stream) {
  const ops::AttentionDims& d = args.dims;
  const int64_t hd = d.head_size, rows = d.batch * d.heads * d.query_length;
  const Draw draw = draw_of(d.dropout);
  const char* fn = "attentionBackward";
  if (rows > 0) {
    attention_row_dot_kernel<<<static_cast<unsigned>(ceil_div(rows, int64_t{kWarps})), kWarps * kWarpSize, 0, stream>>>(
        row_dots, args.grad_out, args.out, rows, hd);
    const int64_t blocks = d.batch * d.heads * ceil_div(d.query_length, int64_t{kWarps});
    const size_t bytes =
        shared_bytes(attention_grad_query_kernel, 2 * kTile * (hd + 1) + kWarps * (3 * hd + kTile), fn);
    attention_grad_query_kernel<<<static_cast<unsigned>(blocks), kWarps * kWarpSize, bytes, stream>>>(
        args.grad_query, args.grad_out, args.query, args.key, args.value, args.key_mask, args.logsumexp, row_dots, d,
        draw);
  }
  const int64_t kv_blocks = d.batch * d.kv_heads * ceil_div(d.key_length, int64_t{kWarps});
  if (kv_blocks == 0) return;
  const size_t bytes =
      shared_bytes(attention_grad_key_value_kernel, 2 * kTile * (hd + 1) + kWarps * (4 * hd + 2 * kTile), fn);
  attention_grad_key_value_kernel<<<static_cast<unsigned>(kv_blocks), kWarps * kWarpSize, bytes, stream>>>(
      args.grad_key, args.grad_value, args.grad_out, args.query, args.key, args.value, args.key_mask, args.logsumexp,
      row_dots, d, draw);
}

}  // namespace bidora::cuda
