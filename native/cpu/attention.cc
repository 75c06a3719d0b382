// Fused scaled-dot-product attention on the CPU (FlashAttention-2's schedule). The forward walks a block of query
// rows over blocks of keys: scores by the GEMM micro-kernels, an online softmax that rescales what was accumulated
// when a row's running maximum grows, then P·V added by GEMM; only the per-row logsumexp is kept. The backward
// recomputes each block's probabilities from it. Nothing of size query × key is ever allocated. The per-row steps
// (mask, max, exp, sum, dropout, dS) are the per-ISA bodies of nn_body.inc, so they vectorise on every path.
//
// Work is split so that no two threads write one element: the forward by (batch, head, query block), the backward
// by (batch, kv head), which owns its key's and value's gradients and the query gradients of the heads that read it.
// Every element is accumulated in an order fixed by the block sizes alone, so results do not depend on the thread
// count. Beside it, the plain scalar loops in double the tests check it against.
#include "attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "../common/nn_math.h"
#include "../core/threadpool.h"
#include "../cuda/random_math.cuh"
#include "gemm.h"
#include "nn_kernels.h"

namespace bidora::cpu {

namespace {

// A block of scores is 128 x 256 floats (128 KiB): big enough that the GEMM calls' packing and the per-row softmax
// steps cost little beside the products (smaller blocks measured up to 1.3x slower at 1,024 tokens), small enough
// that the backward's three such buffers stay in a core's L2 cache.
constexpr int64_t kQueryBlock = 128;
constexpr int64_t kKeyBlock = 256;
constexpr float kNegativeInfinity = -std::numeric_limits<float>::infinity();

// What one (batch, query head) reads: its query rows, its kv head's keys and values, its batch entry's key mask.
struct HeadView {
  int64_t query_offset;  // of row 0 in query, out, grad_query (times head_size) and logsumexp
  int64_t kv_offset;     // of key 0 in key, value and their gradients (times head_size)
  const float* mask;     // [Lk] or null
};

HeadView head_view(const ops::AttentionDims& d, const float* key_mask, int64_t batch, int64_t head) {
  const int64_t kv_head = head / (d.heads / d.kv_heads);
  return {(batch * d.heads + head) * d.query_length, (batch * d.kv_heads + kv_head) * d.key_length,
          key_mask == nullptr ? nullptr : key_mask + batch * d.key_length};
}

// The dropout op's draw for element (row, key) of the flat [batch, heads, Lq, Lk] probabilities.
struct DropoutDraw {
  bool active;
  uint64_t key, threshold;
  float keep_scale;

  explicit DropoutDraw(const ops::BranchDropout& dropout)
      : active(dropout.p > 0),
        key(cuda::dropout_key(dropout.seed)),
        threshold(cuda::dropout_threshold(dropout.p)),
        keep_scale(cuda::dropout_keep_scale(dropout.p)) {}
  float factor(int64_t index) const { return cuda::dropout_keeps(key, index, threshold) ? keep_scale : 0.0f; }
  AttentionDropout row_draw() const { return {key, threshold, keep_scale}; }
};

// C[m x n] = alpha A B + beta C, row-major C with row stride ldc; A(i, p) = a[i * ars + p * acs], B likewise.
void product(float* c, int64_t ldc, const float* a, int64_t ars, int64_t acs, const float* b, int64_t brs, int64_t bcs,
             int64_t m, int64_t n, int64_t k, float alpha, float beta) {
  gemm({c, ldc, 1, a, ars, acs, b, brs, bcs, m, n, k, alpha, beta});
}

// Runs task(index, scratch) for every index below n on the pool's threads, each taking the next index as it finishes
// one (a thread slowed by a busy machine takes fewer instead of holding the rest back); one Scratch per thread. Every
// task writes its own outputs whatever thread runs it, so results do not depend on who took what.
template <typename Scratch, typename Task>
void run_tasks(int64_t n, const Scratch& prototype, Task task) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  run_on_threads(static_cast<int>(std::min<int64_t>(n, num_threads())), [&](int, int) {
    Scratch scratch = prototype;
    for (int64_t index = next.fetch_add(1); index < n; index = next.fetch_add(1)) task(index, scratch);
  });
}

// Keys [j0, j0 + cols) as 1 (attend) or 0 (masked).
void key_block_valid(float* valid, const float* mask, int64_t j0, int64_t cols) {
  for (int64_t c = 0; c < cols; ++c) valid[c] = mask == nullptr || mask[j0 + c] != 0.0f ? 1.0f : 0.0f;
}

// ---- blocked forward ----

struct ForwardScratch {
  std::vector<float> scores, accumulator, row_max, row_sum, valid;
  ForwardScratch(int64_t head_size)
      : scores(kQueryBlock * kKeyBlock),
        accumulator(kQueryBlock * head_size),
        row_max(kQueryBlock),
        row_sum(kQueryBlock),
        valid(kKeyBlock) {}
};

void forward_block(const ops::Attention& args, int64_t batch, int64_t head, int64_t i0, ForwardScratch& s) {
  const ops::AttentionDims& d = args.dims;
  const int64_t hd = d.head_size, lq = d.query_length, lk = d.key_length;
  const int64_t rows = std::min(kQueryBlock, lq - i0);
  const HeadView view = head_view(d, args.key_mask, batch, head);
  const float* q = args.query + (view.query_offset + i0) * hd;
  const DropoutDraw draw(d.dropout);
  const AttentionDropout row_draw = draw.row_draw();
  const NnKernels& kernels = nn_kernels(active_isa());
  std::fill(s.accumulator.begin(), s.accumulator.begin() + rows * hd, 0.0f);
  std::fill(s.row_max.begin(), s.row_max.end(), kNegativeInfinity);
  std::fill(s.row_sum.begin(), s.row_sum.end(), 0.0f);
  const int64_t key_end = math::attention_visible_keys(i0 + rows - 1, lq, lk, d.causal);
  for (int64_t j0 = 0; j0 < key_end; j0 += kKeyBlock) {
    const int64_t cols = std::min(kKeyBlock, key_end - j0);
    const float* k = args.key + (view.kv_offset + j0) * hd;
    const float* v = args.value + (view.kv_offset + j0) * hd;
    key_block_valid(s.valid.data(), view.mask, j0, cols);
    product(s.scores.data(), kKeyBlock, q, hd, 1, k, 1, hd, rows, cols, hd, d.scale, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      float* p = s.scores.data() + r * kKeyBlock;
      const int64_t seen = std::clamp<int64_t>(math::attention_visible_keys(i0 + r, lq, lk, d.causal) - j0, 0, cols);
      float correction;
      kernels.attention_softmax_step(p, s.valid.data(), seen, cols, &s.row_max[r], &s.row_sum[r], &correction);
      if (correction != 1.0f) {
        float* acc = s.accumulator.data() + r * hd;
        for (int64_t e = 0; e < hd; ++e) acc[e] *= correction;
      }
      if (draw.active && seen > 0)
        kernels.attention_dropout_row(p, seen, (view.query_offset + i0 + r) * lk + j0, row_draw);
    }
    product(s.accumulator.data(), hd, s.scores.data(), kKeyBlock, 1, v, hd, 1, rows, hd, cols, 1.0f, 1.0f);
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* out = args.out + (view.query_offset + i0 + r) * hd;
    const float* acc = s.accumulator.data() + r * hd;
    const float sum = s.row_sum[r];
    const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int64_t e = 0; e < hd; ++e) out[e] = acc[e] * inverse;
    args.logsumexp[view.query_offset + i0 + r] = sum > 0.0f ? s.row_max[r] + std::log(sum) : kNegativeInfinity;
  }
}

// ---- blocked backward ----

struct BackwardScratch {
  std::vector<float> probabilities, grad_probabilities, dropped, grad_key, grad_value, valid;
  explicit BackwardScratch(int64_t head_size)
      : probabilities(kQueryBlock * kKeyBlock),
        grad_probabilities(kQueryBlock * kKeyBlock),
        dropped(kQueryBlock * kKeyBlock),
        grad_key(kKeyBlock * head_size),
        grad_value(kKeyBlock * head_size),
        valid(kKeyBlock) {}
};

// What every schedule of the backward shares.
struct BackwardPlan {
  const ops::AttentionBackward& args;
  DropoutDraw draw;
  AttentionDropout row_draw;
  const NnKernels& kernels;
  const float* row_dots;  // D_i = dO_i · O_i for every query row [batch · heads · Lq]

  BackwardPlan(const ops::AttentionBackward& a, const float* dots)
      : args(a), draw(a.dims.dropout), row_draw(draw.row_draw()), kernels(nn_kernels(active_isa())), row_dots(dots) {}
};

// One head's query block [i0, i0 + rows) against its key block [j0, j0 + cols): recomputes the scores and dO·V by
// GEMM and leaves dS in s.probabilities and P ⊙ Z in s.dropped (row stride kKeyBlock). False, computing nothing,
// when no row of the block sees a key of it (causal).
bool block_gradients(const BackwardPlan& plan, const HeadView& view, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                     BackwardScratch& s) {
  const ops::AttentionBackward& args = plan.args;
  const ops::AttentionDims& d = args.dims;
  const int64_t hd = d.head_size, lq = d.query_length, lk = d.key_length;
  if (math::attention_visible_keys(i0 + rows - 1, lq, lk, d.causal) <= j0) return false;
  float* p = s.probabilities.data();
  float* dp = s.grad_probabilities.data();
  key_block_valid(s.valid.data(), view.mask, j0, cols);
  product(p, kKeyBlock, args.query + (view.query_offset + i0) * hd, hd, 1, args.key + (view.kv_offset + j0) * hd, 1, hd,
          rows, cols, hd, d.scale, 0.0f);
  product(dp, kKeyBlock, args.grad_out + (view.query_offset + i0) * hd, hd, 1, args.value + (view.kv_offset + j0) * hd,
          1, hd, rows, cols, hd, 1.0f, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = view.query_offset + i0 + r;
    const float lse = args.logsumexp[row];
    const int64_t seen =
        lse == kNegativeInfinity
            ? 0
            : std::clamp<int64_t>(math::attention_visible_keys(i0 + r, lq, lk, d.causal) - j0, 0, cols);
    plan.kernels.attention_grad_row(p + r * kKeyBlock, s.dropped.data() + r * kKeyBlock, dp + r * kKeyBlock,
                                    s.valid.data(), seen, cols, lse, plan.row_dots[row], row * lk + j0,
                                    plan.draw.active ? &plan.row_draw : nullptr);
  }
  return true;
}

// dV_j += (P ⊙ Z)ᵀ dO_i and dK_j += scale dSᵀ Q_i into the scratch accumulators, for the pair block_gradients left.
void add_key_block(const BackwardPlan& plan, const HeadView& view, int64_t i0, int64_t rows, int64_t cols,
                   BackwardScratch& s) {
  const ops::AttentionBackward& args = plan.args;
  const int64_t hd = args.dims.head_size;
  product(s.grad_value.data(), hd, s.dropped.data(), 1, kKeyBlock, args.grad_out + (view.query_offset + i0) * hd, hd, 1,
          cols, hd, rows, 1.0f, 1.0f);
  product(s.grad_key.data(), hd, s.probabilities.data(), 1, kKeyBlock, args.query + (view.query_offset + i0) * hd, hd,
          1, cols, hd, rows, args.dims.scale, 1.0f);
}

// dQ_i += scale dS K_j, for the pair block_gradients left.
void add_query_block(const BackwardPlan& plan, const HeadView& view, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                     BackwardScratch& s) {
  const ops::AttentionBackward& args = plan.args;
  const int64_t hd = args.dims.head_size;
  product(args.grad_query + (view.query_offset + i0) * hd, hd, s.probabilities.data(), kKeyBlock, 1,
          args.key + (view.kv_offset + j0) * hd, hd, 1, rows, hd, cols, args.dims.scale, 1.0f);
}

// Adds one head's accumulated key block (s.grad_key, s.grad_value) into the gradients, then clears the accumulators.
void flush_key_block(const BackwardPlan& plan, const HeadView& view, int64_t j0, int64_t cols, BackwardScratch& s) {
  const int64_t hd = plan.args.dims.head_size;
  float* grad_key = plan.args.grad_key + (view.kv_offset + j0) * hd;
  float* grad_value = plan.args.grad_value + (view.kv_offset + j0) * hd;
  for (int64_t e = 0; e < cols * hd; ++e) {
    grad_key[e] += s.grad_key[e];
    grad_value[e] += s.grad_value[e];
  }
  std::fill(s.grad_key.begin(), s.grad_key.end(), 0.0f);
  std::fill(s.grad_value.begin(), s.grad_value.end(), 0.0f);
}

// The three gradients are sums over (query block, key block) pairs, each accumulated in one fixed order: dK_j and dV_j
// over the group's heads, then query blocks, ascending; dQ_i over key blocks ascending. Two schedules keep those
// orders, so they give the same bits. With a task per (batch, kv head) for every thread, each task owns its key and
// value gradients and its heads' query gradients and computes every pair once. With fewer (one long sequence), key
// blocks and query blocks become tasks of their own: dK, dV per (batch, kv head, key block), then dQ per (batch, head,
// query block), recomputing each pair's dS once more for the parallelism.

void kv_head_gradients(const BackwardPlan& plan, int64_t batch, int64_t kv_head, BackwardScratch& s) {
  const ops::AttentionDims& d = plan.args.dims;
  const int64_t hd = d.head_size, lq = d.query_length, lk = d.key_length, group = d.heads / d.kv_heads;
  const int64_t kv_offset = (batch * d.kv_heads + kv_head) * lk;
  std::fill(plan.args.grad_key + kv_offset * hd, plan.args.grad_key + (kv_offset + lk) * hd, 0.0f);
  std::fill(plan.args.grad_value + kv_offset * hd, plan.args.grad_value + (kv_offset + lk) * hd, 0.0f);
  for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    const HeadView view = head_view(d, plan.args.key_mask, batch, head);
    std::fill(plan.args.grad_query + view.query_offset * hd, plan.args.grad_query + (view.query_offset + lq) * hd,
              0.0f);
    for (int64_t j0 = 0; j0 < lk; j0 += kKeyBlock) {
      const int64_t cols = std::min(kKeyBlock, lk - j0);
      for (int64_t i0 = 0; i0 < lq; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, lq - i0);
        if (!block_gradients(plan, view, i0, rows, j0, cols, s)) continue;
        add_key_block(plan, view, i0, rows, cols, s);
        add_query_block(plan, view, i0, rows, j0, cols, s);
      }
      flush_key_block(plan, view, j0, cols, s);
    }
  }
}

void key_block_gradients(const BackwardPlan& plan, int64_t batch, int64_t kv_head, int64_t j0, BackwardScratch& s) {
  const ops::AttentionDims& d = plan.args.dims;
  const int64_t hd = d.head_size, lq = d.query_length, group = d.heads / d.kv_heads;
  const int64_t cols = std::min(kKeyBlock, d.key_length - j0);
  const int64_t first = ((batch * d.kv_heads + kv_head) * d.key_length + j0) * hd;
  std::fill(plan.args.grad_key + first, plan.args.grad_key + first + cols * hd, 0.0f);
  std::fill(plan.args.grad_value + first, plan.args.grad_value + first + cols * hd, 0.0f);
  for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    const HeadView view = head_view(d, plan.args.key_mask, batch, head);
    for (int64_t i0 = 0; i0 < lq; i0 += kQueryBlock) {
      const int64_t rows = std::min(kQueryBlock, lq - i0);
      if (block_gradients(plan, view, i0, rows, j0, cols, s)) add_key_block(plan, view, i0, rows, cols, s);
    }
    flush_key_block(plan, view, j0, cols, s);
  }
}

void query_block_gradients(const BackwardPlan& plan, int64_t batch, int64_t head, int64_t i0, BackwardScratch& s) {
  const ops::AttentionDims& d = plan.args.dims;
  const int64_t hd = d.head_size, rows = std::min(kQueryBlock, d.query_length - i0);
  const HeadView view = head_view(d, plan.args.key_mask, batch, head);
  float* grad_query = plan.args.grad_query + (view.query_offset + i0) * hd;
  std::fill(grad_query, grad_query + rows * hd, 0.0f);
  for (int64_t j0 = 0; j0 < d.key_length; j0 += kKeyBlock) {
    const int64_t cols = std::min(kKeyBlock, d.key_length - j0);
    if (block_gradients(plan, view, i0, rows, j0, cols, s)) add_query_block(plan, view, i0, rows, j0, cols, s);
  }
}

// ---- the scalar reference, in double ----

// Row i's probabilities (before dropout) into p [Lk]; returns the log of the softmax's denominator (−inf, p all
// zeros, when the row sees no key).
double reference_probabilities(const ops::AttentionDims& d, const float* query, const float* key, const HeadView& view,
                               int64_t i, std::vector<double>& p) {
  const int64_t hd = d.head_size;
  const int64_t seen = math::attention_visible_keys(i, d.query_length, d.key_length, d.causal);
  constexpr double kNone = -std::numeric_limits<double>::infinity();
  double max = kNone;
  for (int64_t j = 0; j < d.key_length; ++j) {
    p[j] = kNone;
    if (j >= seen || (view.mask != nullptr && view.mask[j] == 0.0f)) continue;
    double dot = 0.0;
    for (int64_t e = 0; e < hd; ++e) {
      dot += static_cast<double>(query[(view.query_offset + i) * hd + e]) * key[(view.kv_offset + j) * hd + e];
    }
    p[j] = dot * d.scale;
    max = std::max(max, p[j]);
  }
  if (max == kNone) {
    std::fill(p.begin(), p.end(), 0.0);
    return kNone;
  }
  double sum = 0.0;
  for (int64_t j = 0; j < d.key_length; ++j) sum += p[j] = std::exp(p[j] - max);
  for (int64_t j = 0; j < d.key_length; ++j) p[j] /= sum;
  return max + std::log(sum);
}

}  // namespace

void attention_forward(const ops::Attention& args) {
  const ops::AttentionDims& d = args.dims;
  const int64_t query_blocks = (d.query_length + kQueryBlock - 1) / kQueryBlock;
  run_tasks(d.batch * d.heads * query_blocks, ForwardScratch(d.head_size), [&](int64_t task, ForwardScratch& scratch) {
    const int64_t block = task % query_blocks, head = task / query_blocks % d.heads;
    forward_block(args, task / query_blocks / d.heads, head, block * kQueryBlock, scratch);
  });
}

void attention_backward(const ops::AttentionBackward& args) {
  const ops::AttentionDims& d = args.dims;
  const int64_t hd = d.head_size, rows = d.batch * d.heads * d.query_length;
  // D_i = dO_i · O_i = Σ_j P_ij Z_ij dO_i·V_j, the row term of softmax's backward (dropout included).
  std::vector<float> row_dots(rows);
  parallel_for(rows, 64, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float dot = 0.0f;
      for (int64_t e = 0; e < hd; ++e) dot += args.grad_out[row * hd + e] * args.out[row * hd + e];
      row_dots[row] = dot;
    }
  });
  const BackwardPlan plan(args, row_dots.data());
  if (d.batch * d.kv_heads >= num_threads()) {
    run_tasks(d.batch * d.kv_heads, BackwardScratch(hd), [&](int64_t task, BackwardScratch& scratch) {
      kv_head_gradients(plan, task / d.kv_heads, task % d.kv_heads, scratch);
    });
    return;
  }
  const int64_t key_blocks = (d.key_length + kKeyBlock - 1) / kKeyBlock;
  run_tasks(d.batch * d.kv_heads * key_blocks, BackwardScratch(hd), [&](int64_t task, BackwardScratch& scratch) {
    const int64_t kv_index = task / key_blocks;
    key_block_gradients(plan, kv_index / d.kv_heads, kv_index % d.kv_heads, task % key_blocks * kKeyBlock, scratch);
  });
  const int64_t query_blocks = (d.query_length + kQueryBlock - 1) / kQueryBlock;
  run_tasks(d.batch * d.heads * query_blocks, BackwardScratch(hd), [&](int64_t task, BackwardScratch& scratch) {
    const int64_t head_index = task / query_blocks;
    query_block_gradients(plan, head_index / d.heads, head_index % d.heads, task % query_blocks * kQueryBlock, scratch);
  });
}

void attention_forward_reference(const ops::Attention& args) {
  const ops::AttentionDims& d = args.dims;
  const int64_t hd = d.head_size;
  const DropoutDraw draw(d.dropout);
  std::vector<double> p(d.key_length), out(hd);
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < d.heads; ++h) {
      const HeadView view = head_view(d, args.key_mask, b, h);
      for (int64_t i = 0; i < d.query_length; ++i) {
        const int64_t row = view.query_offset + i;
        const double lse = reference_probabilities(d, args.query, args.key, view, i, p);
        std::fill(out.begin(), out.end(), 0.0);
        for (int64_t j = 0; j < d.key_length; ++j) {
          const double weight = p[j] * (draw.active ? draw.factor(row * d.key_length + j) : 1.0f);
          for (int64_t e = 0; e < hd; ++e) out[e] += weight * args.value[(view.kv_offset + j) * hd + e];
        }
        for (int64_t e = 0; e < hd; ++e) args.out[row * hd + e] = static_cast<float>(out[e]);
        args.logsumexp[row] = static_cast<float>(lse);
      }
    }
  }
}

void attention_backward_reference(const ops::AttentionBackward& args) {
  const ops::AttentionDims& d = args.dims;
  const int64_t hd = d.head_size, lk = d.key_length;
  const DropoutDraw draw(d.dropout);
  const int64_t kv_elements = d.batch * d.kv_heads * lk * hd;
  std::vector<double> grad_key(kv_elements, 0.0), grad_value(kv_elements, 0.0), p(lk), dp(lk), grad_query(hd);
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < d.heads; ++h) {
      const HeadView view = head_view(d, args.key_mask, b, h);
      for (int64_t i = 0; i < d.query_length; ++i) {
        const int64_t row = view.query_offset + i;
        reference_probabilities(d, args.query, args.key, view, i, p);
        double row_dot = 0.0;
        for (int64_t j = 0; j < lk; ++j) {
          double dot = 0.0;
          for (int64_t e = 0; e < hd; ++e)
            dot += double(args.grad_out[row * hd + e]) * args.value[(view.kv_offset + j) * hd + e];
          const double z = draw.active ? draw.factor(row * lk + j) : 1.0;
          dp[j] = z * dot;
          row_dot += p[j] * dp[j];
          for (int64_t e = 0; e < hd; ++e)
            grad_value[(view.kv_offset + j) * hd + e] += p[j] * z * args.grad_out[row * hd + e];
        }
        std::fill(grad_query.begin(), grad_query.end(), 0.0);
        for (int64_t j = 0; j < lk; ++j) {
          const double ds = p[j] * (dp[j] - row_dot) * d.scale;
          for (int64_t e = 0; e < hd; ++e) {
            grad_query[e] += ds * args.key[(view.kv_offset + j) * hd + e];
            grad_key[(view.kv_offset + j) * hd + e] += ds * args.query[row * hd + e];
          }
        }
        for (int64_t e = 0; e < hd; ++e) args.grad_query[row * hd + e] = static_cast<float>(grad_query[e]);
      }
    }
  }
  for (int64_t e = 0; e < kv_elements; ++e) {
    args.grad_key[e] = static_cast<float>(grad_key[e]);
    args.grad_value[e] = static_cast<float>(grad_value[e]);
  }
}

}  // namespace bidora::cpu
