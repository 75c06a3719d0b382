// The shape relations of every op, as plain functions: each checks how its operands' shapes fit together and derives
// the sizes its kernel takes and the shape of its output, or throws RangeError naming the op (`fn`) and the
// arguments. The binding calls them on the shapes of the tensors it was given; nothing here touches memory.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../common/ops.h"
#include "shape.h"
#include "storage.h"

namespace bidora::rules {

constexpr int64_t kMaxSafeInteger = 9007199254740991;  // 2^53 − 1, the largest integer a double holds exactly
constexpr int64_t kMaxInt32 = 2147483647;

// A number's range, each end open or closed; numbers are finite whatever the bounds.
struct Bounds {
  double min = -std::numeric_limits<double>::infinity(), max = std::numeric_limits<double>::infinity();
  bool min_open = false, max_open = false;
};
constexpr Bounds kFinite{};
constexpr Bounds kPositive{0, std::numeric_limits<double>::infinity(), true, false};
constexpr Bounds kNonNegative{0, std::numeric_limits<double>::infinity(), false, false};
constexpr Bounds closed(double min, double max) { return {min, max, false, false}; }
constexpr Bounds half_open(double min, double max) { return {min, max, false, true}; }
// `value` when finite and within `bounds`, else "fn: name must be finite | positive | in [min, max), got value".
double number_in(const char* fn, const char* name, double value, const Bounds& bounds);
// "fn: name must be an integer from min to max, got value" unless value is one.
int64_t integer_in(const char* fn, const char* name, double value, int64_t min, int64_t max);
// The same within `bounds`, clamped to the integers a double holds exactly (for one declared without bounds).
int64_t integer_in(const char* fn, const char* name, double value, const Bounds& bounds);
// A number as a person writes it in a message: 1, 0.5, 1e-08, nan.
std::string format(double value);

void same_shape(const char* fn, const char* reference_name, const Shape& reference, const char* name,
                const Shape& shape);
// Creation and views: `length` values fill `shape` (fromFloat32Array); low < high (uniform); `shape` holds x's elements
// (reshape).
void length(const char* fn, const char* name, int64_t length, const Shape& shape);
void below(const char* fn, const char* low_name, double low, const char* high_name, double high);
void reshape(const char* fn, const Shape& x, const Shape& shape);
// shape is [length] (RangeError naming reference_name's shape beside it).
void vector_of(const char* fn, const char* name, const Shape& shape, int64_t length, const char* reference_name,
               const Shape& reference);
// The product of every dim but the last: the rows a [..., D] tensor is read as, even when D is 0.
int64_t leading_rows(const Shape& shape);
Shape matrix(int64_t rows, int64_t cols);
Shape vector(int64_t length);

// ---- where a call's tensors are ----

// One tensor argument as the dispatcher sees it (`index`: its position in a list argument, or -1).
struct Placed {
  const char* name;
  int64_t index;
  Device device;
  const float* data;
  int64_t numel;
  bool written;
};
// The one device every tensor is on (the CPU when there is none); TypeError naming two that differ, or one off the
// CPU for a CPU-only op.
Device one_device(const char* fn, bool cpu_only, const std::vector<Placed>& tensors);
// RangeError when a list element written in place shares storage with another list element.
void distinct_storage(const char* fn, const std::vector<Placed>& tensors);

// ---- elementwise ----

// b repeats over a when its shape equals a's or a's trailing dims (a bias over rows); returns b's size.
int64_t broadcast_period(const char* fn, const Shape& a, const Shape& b);

// `shape` read as [outer, length, inner] around `axis` (negative counts from the end).
struct AxisSplit {
  int axis;
  int64_t outer, length, inner;
};
AxisSplit split_axis(const char* fn, double axis, const Shape& shape);
// sum's output shape and split: over `axis`, or over everything when absent.
struct Reduction {
  AxisSplit split;
  Shape out;
};
Reduction reduction(const char* fn, const Shape& a, std::optional<double> axis, bool keep_dims);
// broadcastAxis: `shape` split around `axis` (or read as one run when absent), `a` holding it without that axis.
AxisSplit broadcast(const char* fn, const Shape& a, const Shape& shape, std::optional<double> axis);
// A range [start, start + length) along `axis` of `shape` (narrow) or of narrowBackward's `shape` from grad's.
struct Range {
  AxisSplit split;
  int64_t start, length;
  Shape narrowed;
};
Range narrow_range(const char* fn, const Shape& a, double axis, double start, double length);
Range narrow_backward_range(const char* fn, const Shape& grad, const Shape& shape, double axis, double start);
// Lists: `other` holds as many tensors as `first`, each shaped like its partner.
void paired(const char* fn, const char* first_name, const std::vector<Shape>& first, const char* other_name,
            const std::vector<Shape>& other);
// sgdStep: nesterov needs momentum; momentum needs buffers (null: absent), each list paired with params.
void sgd(const char* fn, double momentum, bool nesterov, const std::vector<Shape>& params,
         const std::vector<Shape>& grads, const std::vector<Shape>* buffers);

// ---- linear algebra ----

struct Product {
  int64_t batch, m, n, k;
  bool shared_b;
  Shape out;
};
Product matmul(const char* fn, const Shape& a, const Shape& b, bool transpose_a, bool transpose_b);
Product linear(const char* fn, const Shape& input, const Shape& weight, const Shape* bias);  // batch = rows

// ---- nn ----

// x [..., D] with D >= 1; gamma, beta (null: absent) [D]; with gradOutput, mean and rstd (layerNormBackward):
// gradOutput shaped like x, mean and rstd [rows]. Returns the rows and D.
struct Rows {
  int64_t rows, d;
};
Rows layer_norm(const char* fn, const Shape& x, const Shape& gamma, const Shape* beta, const Shape* grad_output,
                const Shape* mean, const Shape* rstd);
// RMS norm's: x of rank 1 to 4 with a non-empty last axis D, weight [D]; gradOutput (nullable) x's shape, rstd
// (nullable) [rows].
Rows rms_norm(const char* fn, const Shape& x, const Shape& weight, const Shape* grad_output, const Shape* rstd);
struct SoftmaxRows {
  int64_t batch, rows_per_batch, d;
};
SoftmaxRows softmax(const char* fn, const Shape& x, const Shape* mask);
Rows softmax_backward(const char* fn, const Shape& output, const Shape& grad_output);
// Every value in [0, limit), or equal to *ignored when given; `what` names the limit.
void indices(const char* fn, const char* name, const int32_t* values, int64_t count, int64_t limit, const char* what,
             const int32_t* ignored = nullptr);
// embedding: weight [V, D], every id in [0, V); embeddingBackward (vocab > 0): gradOutput [ids, ..., D], every id in
// [0, vocab). Returns D.
int64_t embedding(const char* fn, const Shape& table, const int32_t* ids, int64_t count, int64_t vocab);
// logits [rows, classes >= 1], one label per row, each a class or ignore_index.
void classification(const char* fn, const Shape& logits, const int32_t* labels, int64_t count, int32_t ignore_index);
Shape permute0213(const char* fn, const Shape& x);  // x [a, b, c, d] -> [a, c, b, d]
// rotary: x [batch, heads, seq, d] with d even, one non-negative position per token (batch · seq), base above 1.
void rotary(const char* fn, const Shape& x, const int32_t* positions, int64_t count, double base);

// attention: query [batch, heads, Lq, D], key and value [batch, kvHeads, Lk, D] with heads a multiple of kvHeads,
// keyMask [batch, Lk]; for the backward gradOutput and output shaped like query, logsumexp [batch, heads, Lq]
// (null: absent). Fills every field of dims but scale, causal, reference and dropout.
void attention(const char* fn, const Shape& query, const Shape& key, const Shape& value, const Shape* key_mask,
               const Shape* grad_output, const Shape* output, const Shape* logsumexp, ops::AttentionDims& dims);

// ---- adapters ----

// weight [M,K], loraA [R,K] with R >= 1, loraB [M,R], magnitude and bias [M], input [..., K] (rank 2 or 3) and
// gradOutput (the output's shape), whichever are given (null: absent). Derives N, K, M, R and the output's shape.
// Also the shapes of what a DoRA forward saves for its backward, named, in the order of ops::DoraSaved's members:
// combined [N,M], hidden [N,R], norm [M], weightLoraA [M,R], loraGram [R,R].
struct Layer {
  ops::AdapterDims dims;
  Shape output;
  struct Saved {
    const char* name;
    Shape shape;
  };
  std::array<Saved, 5> dora_saved;
};
Layer adapter(const char* fn, const Shape* input, const Shape& weight, const Shape* bias, const Shape& lora_a,
              const Shape& lora_b, const Shape* magnitude, const Shape* grad_output);
// A tensor saved by a forward: its size and last dim must be the expected shape's.
void saved(const char* fn, const char* name, const Shape* actual, const Shape& expected);
// adapterUnmerge: magnitude (host [m]; null: absent) and the norm go together (DoRA) or are both absent (LoRA), and no
// magnitude is 0, which would have erased its row's direction.
void unmerge(const char* fn, const float* magnitude, bool has_norm, int64_t m);
// orthogonalityPenalty: weight [M,K], weightGram [M,M], loraA [R,K] with R >= 1, loraB [M,R]. Returns {0, K, M, R}.
ops::AdapterDims penalty(const char* fn, const Shape& weight, const Shape& weight_gram, const Shape& lora_a,
                         const Shape& lora_b);

}  // namespace bidora::rules
