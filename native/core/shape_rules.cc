// The shape relations of every op (shape_rules.h), with the messages the binding's callers see.
#include "shape_rules.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "errors.h"

namespace bidora::rules {

namespace {

[[noreturn]] void fail(const char* fn, const std::string& message) {
  throw RangeError(std::string(fn) + ": " + message);
}

std::string both(const char* first, const Shape& a, const char* second, const Shape& b) {
  return describe(first, a) + " and " + describe(second, b);
}

std::string name_of(const char* name, int64_t index) {
  return index < 0 ? std::string(name) : std::string(name) + "[" + std::to_string(index) + "]";
}

}  // namespace

Device one_device(const char* fn, bool cpu_only, const std::vector<Placed>& tensors) {
  if (tensors.empty()) return Device::kCpu;
  const Placed& first = tensors.front();
  for (const Placed& tensor : tensors) {
    if (cpu_only && tensor.device != Device::kCpu) {
      throw TypeError(std::string(fn) + ": " + name_of(tensor.name, tensor.index) + " is on '" +
                      device_name(tensor.device) + "', but this op runs on the CPU only; move it with .to('cpu')");
    }
    if (tensor.device != first.device) {
      throw TypeError(std::string(fn) + ": " + name_of(first.name, first.index) + " is on '" +
                      device_name(first.device) + "' but " + name_of(tensor.name, tensor.index) + " is on '" +
                      device_name(tensor.device) + "'; move one with .to() so both are on the same device");
    }
  }
  return first.device;
}

void distinct_storage(const char* fn, const std::vector<Placed>& tensors) {
  // An in-place update of one storage through two handles (the same tensor twice, or a view of it) would update it
  // twice, or read what it has just written.
  std::vector<const Placed*> elements;  // of lists
  for (const Placed& tensor : tensors) {
    if (tensor.index >= 0 && tensor.numel > 0) elements.push_back(&tensor);
  }
  std::stable_sort(elements.begin(), elements.end(), [](const Placed* a, const Placed* b) {
    return a->data != b->data ? a->data < b->data : a->written && !b->written;
  });
  for (size_t i = 1; i < elements.size(); ++i) {
    const Placed &a = *elements[i - 1], &b = *elements[i];
    if (a.data == b.data && (a.written || b.written)) {
      fail(fn, name_of(a.name, a.index) + " and " + name_of(b.name, b.index) +
                   " share storage, but an in-place update needs distinct tensors");
    }
  }
}

std::string format(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.10g", value);
  return text;
}

int64_t integer_in(const char* fn, const char* name, double value, int64_t min, int64_t max) {
  if (value != std::floor(value) || value < static_cast<double>(min) || value > static_cast<double>(max)) {
    fail(fn, std::string(name) + " must be an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                 ", got " + format(value));
  }
  return static_cast<int64_t>(value);
}

int64_t integer_in(const char* fn, const char* name, double value, const Bounds& bounds) {
  const double safe = static_cast<double>(kMaxSafeInteger);
  return integer_in(fn, name, value, static_cast<int64_t>(std::max(bounds.min, -safe)),
                    static_cast<int64_t>(std::min(bounds.max, safe)));
}

double number_in(const char* fn, const char* name, double value, const Bounds& bounds) {
  if (!std::isfinite(value)) fail(fn, std::string(name) + " must be finite, got " + format(value));
  const bool below = bounds.min_open ? value <= bounds.min : value < bounds.min;
  const bool above = bounds.max_open ? value >= bounds.max : value > bounds.max;
  if (!below && !above) return value;
  std::string wanted = bounds.min_open ? "positive" : "non-negative";
  if (bounds.min != 0 || std::isfinite(bounds.max)) {
    wanted = std::string("in ") + (bounds.min_open ? "(" : "[") + format(bounds.min) + ", " + format(bounds.max) +
             (bounds.max_open ? ")" : "]");
  }
  fail(fn, std::string(name) + " must be " + wanted + ", got " + format(value));
}

void same_shape(const char* fn, const char* reference_name, const Shape& reference, const char* name,
                const Shape& shape) {
  if (shape != reference) {
    fail(fn, std::string(name) + " must have the shape of " + reference_name + ", but " +
                 both(reference_name, reference, name, shape));
  }
}

void vector_of(const char* fn, const char* name, const Shape& shape, int64_t length, const char* reference_name,
               const Shape& reference) {
  if (shape.rank != 1 || shape[0] != length) {
    fail(fn, "expected " + std::string(name) + " of shape [" + std::to_string(length) + "], but " +
                 both(name, shape, reference_name, reference));
  }
}

int64_t leading_rows(const Shape& shape) {
  int64_t rows = 1;
  for (int axis = 0; axis + 1 < shape.rank; ++axis) rows *= shape[axis];
  return rows;
}

// Built directly (no vector, no checks): these take sizes already checked, and calls are on every op's path.
Shape matrix(int64_t rows, int64_t cols) {
  Shape shape;
  shape.rank = 2;
  shape.dims[0] = rows;
  shape.dims[1] = cols;
  return shape;
}

Shape vector(int64_t length) {
  Shape shape;
  shape.rank = 1;
  shape.dims[0] = length;
  return shape;
}

// ---- elementwise ----

void length(const char* fn, const char* name, int64_t length, const Shape& shape) {
  if (length != shape.numel()) {
    fail(fn, std::string(name) + " has " + std::to_string(length) + " elements but shape " + shape.str() + " needs " +
                 std::to_string(shape.numel()));
  }
}

void below(const char* fn, const char* low_name, double low, const char* high_name, double high) {
  if (!(low < high)) fail(fn, std::string(low_name) + " must be below " + high_name);
}

void reshape(const char* fn, const Shape& x, const Shape& shape) {
  if (shape.numel() != x.numel()) {
    fail(fn, describe("x", x) + " (" + std::to_string(x.numel()) + " elements), which shape " + shape.str() +
                 " cannot hold");
  }
}

int64_t broadcast_period(const char* fn, const Shape& a, const Shape& b) {
  bool fits = b.rank <= a.rank;
  for (int axis = 0; fits && axis < b.rank; ++axis) fits = b[b.rank - 1 - axis] == a[a.rank - 1 - axis];
  if (!fits) fail(fn, "b must have the shape of a or of its trailing dims, but " + both("a", a, "b", b));
  return b.numel();
}

AxisSplit split_axis(const char* fn, double requested, const Shape& shape) {
  const int64_t rank = std::max(shape.rank, 1);
  int64_t axis = integer_in(fn, "axis", requested, -rank, rank - 1);
  if (axis < 0) axis += rank;
  AxisSplit split{static_cast<int>(axis), 1, shape.rank == 0 ? 1 : shape[static_cast<int>(axis)], 1};
  for (int dim = 0; dim < axis; ++dim) split.outer *= shape[dim];
  for (int dim = split.axis + 1; dim < shape.rank; ++dim) split.inner *= shape[dim];
  return split;
}

Reduction reduction(const char* fn, const Shape& a, std::optional<double> axis, bool keep_dims) {
  Reduction result{{0, 1, a.numel(), 1}, Shape()};
  if (!axis) {
    result.out.rank = keep_dims ? a.rank : 0;
    for (int dim = 0; dim < result.out.rank; ++dim) result.out.dims[dim] = 1;
    return result;
  }
  result.split = split_axis(fn, *axis, a);
  for (int dim = 0; dim < a.rank; ++dim) {
    if (dim != result.split.axis) {
      result.out.dims[result.out.rank++] = a[dim];
    } else if (keep_dims) {
      result.out.dims[result.out.rank++] = 1;
    }
  }
  return result;
}

AxisSplit broadcast(const char* fn, const Shape& a, const Shape& shape, std::optional<double> axis) {
  const AxisSplit split = axis ? split_axis(fn, *axis, shape) : AxisSplit{0, 1, shape.numel(), 1};
  if (a.numel() != split.outer * split.inner) {
    fail(fn, describe("a", a) + " does not match " + shape.str() + " without the broadcast axis");
  }
  return split;
}

Range narrow_range(const char* fn, const Shape& a, double axis, double start, double length) {
  Range range{split_axis(fn, axis, a), 0, 0, a};
  if (a.rank == 0) fail(fn, "cannot take a range of a rank-0 tensor");
  range.start = integer_in(fn, "start", start, 0, range.split.length);
  range.length = integer_in(fn, "length", length, 0, range.split.length - range.start);
  range.narrowed.dims[range.split.axis] = range.length;
  return range;
}

Range narrow_backward_range(const char* fn, const Shape& grad, const Shape& shape, double axis, double start) {
  Range range{split_axis(fn, axis, shape), 0, 0, grad};
  if (shape.rank == 0) fail(fn, "cannot take a range of a rank-0 tensor");
  range.length = grad.rank == shape.rank ? grad[range.split.axis] : -1;
  range.start = integer_in(fn, "start", start, 0, range.split.length);
  if (range.length < 0 || range.start + range.length > range.split.length ||
      grad.numel() != range.split.outer * range.length * range.split.inner) {
    fail(fn, describe("grad", grad) + " is not a range of " + shape.str());
  }
  return range;
}

void paired(const char* fn, const char* first_name, const std::vector<Shape>& first, const char* other_name,
            const std::vector<Shape>& other) {
  if (other.size() != first.size()) {
    fail(fn, std::string(other_name) + " has " + std::to_string(other.size()) + " tensors but " + first_name + " has " +
                 std::to_string(first.size()));
  }
  for (size_t position = 0; position < first.size(); ++position) {
    if (other[position] == first[position]) continue;
    const std::string a = std::string(first_name) + "[" + std::to_string(position) + "]";
    const std::string b = std::string(other_name) + "[" + std::to_string(position) + "]";
    fail(fn,
         b + " must have the shape of " + a + ", but " + both(a.c_str(), first[position], b.c_str(), other[position]));
  }
}

void sgd(const char* fn, double momentum, bool nesterov, const std::vector<Shape>& params,
         const std::vector<Shape>& grads, const std::vector<Shape>* buffers) {
  if (nesterov && momentum == 0) fail(fn, "nesterov needs a non-zero momentum");
  if (momentum != 0 && buffers == nullptr) {
    throw TypeError(std::string(fn) + ": momentumBuffers must be an array of Tensors when momentum is " +
                    format(momentum));
  }
  paired(fn, "params", params, "grads", grads);
  if (buffers != nullptr) paired(fn, "params", params, "momentumBuffers", *buffers);
}

// ---- linear algebra ----

Product matmul(const char* fn, const Shape& a, const Shape& b, bool transpose_a, bool transpose_b) {
  if (a.rank < 2 || b.rank < 2) fail(fn, "expected a and b of rank 2 or more, but " + both("a", a, "b", b));
  Product product{1, 0, 0, 0, b.rank == 2, a};
  if (!product.shared_b && a.rank != b.rank) fail(fn, "batch dimensions differ: " + both("a", a, "b", b));
  for (int axis = 0; axis < a.rank - 2; ++axis) {
    if (!product.shared_b && a[axis] != b[axis]) fail(fn, "batch dimensions differ: " + both("a", a, "b", b));
    product.batch *= a[axis];
  }
  product.m = transpose_a ? a[a.rank - 1] : a[a.rank - 2];
  product.k = transpose_a ? a[a.rank - 2] : a[a.rank - 1];
  const int64_t kb = transpose_b ? b[b.rank - 1] : b[b.rank - 2];
  product.n = transpose_b ? b[b.rank - 2] : b[b.rank - 1];
  if (product.k != kb) {
    fail(fn, "inner dimensions differ (" + std::to_string(product.k) + " vs " + std::to_string(kb) + "): " +
                 both("a", a, "b", b) + (transpose_a ? ", transposeA" : "") + (transpose_b ? ", transposeB" : ""));
  }
  product.out.dims[a.rank - 2] = product.m;
  product.out.dims[a.rank - 1] = product.n;
  return product;
}

Product linear(const char* fn, const Shape& input, const Shape& weight, const Shape* bias) {
  if (input.rank < 1) fail(fn, "expected input of rank 1 or more, but " + describe("input", input));
  if (weight.rank != 2) fail(fn, "expected weight of rank 2 (out, in), but " + describe("weight", weight));
  Product product{input.rows(), weight[0], weight[0], input.last(), true, input};
  if (weight[1] != product.k) {
    fail(fn, "in-features differ (" + std::to_string(product.k) + " vs " + std::to_string(weight[1]) +
                 "): " + both("input", input, "weight", weight));
  }
  if (bias != nullptr && (bias->rank != 1 || (*bias)[0] != product.n)) {
    fail(fn, "expected bias of shape [" + std::to_string(product.n) + "], but " + describe("bias", *bias) + " (" +
                 describe("weight", weight) + ")");
  }
  product.out.dims[input.rank - 1] = product.n;
  return product;
}

// ---- nn ----

Rows layer_norm(const char* fn, const Shape& x, const Shape& gamma, const Shape* beta, const Shape* grad_output,
                const Shape* mean, const Shape* rstd) {
  if (x.rank < 1 || x.last() < 1) {
    fail(fn, "x must have rank 1 to 4 and a non-empty last axis, but " + describe("x", x));
  }
  const Rows rows{leading_rows(x), x.last()};
  if (grad_output != nullptr) same_shape(fn, "x", x, "gradOutput", *grad_output);
  vector_of(fn, "gamma", gamma, rows.d, "x", x);
  if (beta != nullptr) vector_of(fn, "beta", *beta, rows.d, "x", x);
  if (mean != nullptr) vector_of(fn, "mean", *mean, rows.rows, "x", x);
  if (rstd != nullptr) vector_of(fn, "rstd", *rstd, rows.rows, "x", x);
  return rows;
}

Rows rms_norm(const char* fn, const Shape& x, const Shape& weight, const Shape* grad_output, const Shape* rstd) {
  if (x.rank < 1 || x.last() < 1) {
    fail(fn, "x must have rank 1 to 4 and a non-empty last axis, but " + describe("x", x));
  }
  const Rows rows{leading_rows(x), x.last()};
  if (grad_output != nullptr) same_shape(fn, "x", x, "gradOutput", *grad_output);
  vector_of(fn, "weight", weight, rows.d, "x", x);
  if (rstd != nullptr) vector_of(fn, "rstd", *rstd, rows.rows, "x", x);
  return rows;
}

SoftmaxRows softmax(const char* fn, const Shape& x, const Shape* mask) {
  if (x.rank < 1) fail(fn, "x must have rank 1 to 4, but " + describe("x", x));
  SoftmaxRows rows{1, leading_rows(x), x.last()};
  if (mask == nullptr) return rows;
  if (x.rank < 2) fail(fn, "a mask needs x of rank 2 to 4 ([batch, ..., key]), but " + describe("x", x));
  rows.batch = x[0];
  if (mask->rank != 2 || (*mask)[0] != rows.batch || (*mask)[1] != rows.d) {
    fail(fn, "expected mask of shape [" + std::to_string(rows.batch) + ", " + std::to_string(rows.d) +
                 "] (x's first and last dims), but " + both("mask", *mask, "x", x));
  }
  rows.rows_per_batch = rows.batch == 0 ? 0 : leading_rows(x) / rows.batch;
  return rows;
}

Rows softmax_backward(const char* fn, const Shape& output, const Shape& grad_output) {
  same_shape(fn, "output", output, "gradOutput", grad_output);
  if (output.rank < 1) fail(fn, "output must have rank 1 to 4, but " + describe("output", output));
  return {leading_rows(output), output.last()};
}

void indices(const char* fn, const char* name, const int32_t* values, int64_t count, int64_t limit, const char* what,
             const int32_t* ignored) {
  for (int64_t position = 0; position < count; ++position) {
    const int32_t value = values[position];
    if (ignored != nullptr && value == *ignored) continue;
    if (value < 0 || value >= limit) {
      fail(fn, std::string(name) + "[" + std::to_string(position) + "] is " + std::to_string(value) + ", outside [0, " +
                   std::to_string(limit) + ") (" + what + ")" +
                   (ignored != nullptr ? " and not ignoreIndex " + std::to_string(*ignored) : ""));
    }
  }
}

int64_t embedding(const char* fn, const Shape& table, const int32_t* ids, int64_t count, int64_t vocab) {
  if (vocab == 0) {
    if (table.rank != 2) fail(fn, "expected weight of rank 2 [vocab, dim], but " + describe("weight", table));
    indices(fn, "ids", ids, count, table[0], "the vocabulary size, weight's first dim");
    return table[1];
  }
  if (table.rank < 2 || leading_rows(table) != count) {
    fail(fn, "expected gradOutput of shape [" + std::to_string(count) + ", dim] (one row per id), but " +
                 describe("gradOutput", table) + " and ids has length " + std::to_string(count));
  }
  indices(fn, "ids", ids, count, vocab, "vocabSize");
  return table.last();
}

void classification(const char* fn, const Shape& logits, const int32_t* labels, int64_t count, int32_t ignore_index) {
  if (logits.rank != 2 || logits[1] < 1) {
    fail(fn, "expected logits of shape [rows, classes] with classes >= 1, but " + describe("logits", logits));
  }
  if (count != logits[0]) {
    fail(fn, "labels must hold one label per row of logits, but labels has length " + std::to_string(count) + " and " +
                 describe("logits", logits));
  }
  indices(fn, "labels", labels, count, logits[1], "the number of classes", &ignore_index);
}

Shape permute0213(const char* fn, const Shape& x) {
  if (x.rank != 4) fail(fn, "expected x of rank 4, but " + describe("x", x));
  return Shape::from({x[0], x[2], x[1], x[3]}, "output");
}

void rotary(const char* fn, const Shape& x, const int32_t* positions, int64_t count, double base) {
  if (x.rank != 4 || x[3] % 2 != 0) {
    fail(fn, "x must be [batch, heads, seq, d] with an even d, but " + describe("x", x));
  }
  if (count != x[0] * x[2]) {
    fail(fn, "positions must hold one position per token (batch · seq = " + std::to_string(x[0] * x[2]) +
                 "), but has length " + std::to_string(count));
  }
  indices(fn, "positions", positions, count, std::numeric_limits<int32_t>::max(), "a non-negative position");
  if (!(base > 1.0)) fail(fn, "base must be above 1, got " + format(base));
}

void attention(const char* fn, const Shape& query, const Shape& key, const Shape& value, const Shape* key_mask,
               const Shape* grad_output, const Shape* output, const Shape* logsumexp, ops::AttentionDims& dims) {
  if (query.rank != 4)
    fail(fn, "expected query of rank 4 [batch, heads, queryLength, headSize], but " + describe("query", query));
  if (key.rank != 4 || key[0] != query[0] || key[3] != query[3] || key[1] < 1 || query[1] % key[1] != 0) {
    fail(fn,
         "expected key [batch, kvHeads, keyLength, headSize] with query's batch and headSize and kvHeads >= 1 "
         "dividing query's heads, but " +
             both("key", key, "query", query));
  }
  same_shape(fn, "key", key, "value", value);
  dims.batch = query[0];
  dims.heads = query[1];
  dims.kv_heads = key[1];
  dims.query_length = query[2];
  dims.key_length = key[2];
  dims.head_size = query[3];
  if (key_mask != nullptr && (key_mask->rank != 2 || (*key_mask)[0] != key[0] || (*key_mask)[1] != key[2])) {
    fail(fn, "expected keyMask of shape [" + std::to_string(key[0]) + ", " + std::to_string(key[2]) +
                 "] (batch, keyLength), but " + both("keyMask", *key_mask, "key", key));
  }
  if (grad_output != nullptr) same_shape(fn, "query", query, "gradOutput", *grad_output);
  if (output != nullptr) same_shape(fn, "query", query, "output", *output);
  if (logsumexp != nullptr && (logsumexp->rank != 3 || (*logsumexp)[0] != query[0] || (*logsumexp)[1] != query[1] ||
                               (*logsumexp)[2] != query[2])) {
    fail(fn, "expected logsumexp of shape [batch, heads, queryLength], but " +
                 both("logsumexp", *logsumexp, "query", query));
  }
}

// ---- adapters ----

Layer adapter(const char* fn, const Shape* input, const Shape& w, const Shape* bias, const Shape& a, const Shape& b,
              const Shape* magnitude, const Shape* grad_output) {
  if (w.rank != 2) fail(fn, "expected weight of rank 2 (out, in), but " + describe("weight", w));
  const int64_t m = w[0], k = w[1];
  if (a.rank != 2 || a[1] != k) {
    fail(fn, "expected loraA of shape [r, " + std::to_string(k) + "], but " + both("loraA", a, "weight", w));
  }
  const int64_t r = a[0];
  if (r < 1) fail(fn, "the rank r must be at least 1, but " + describe("loraA", a));
  if (b.rank != 2 || b[0] != m || b[1] != r) {
    fail(fn, "expected loraB of shape [" + std::to_string(m) + ", " + std::to_string(r) + "], but " +
                 both("loraB", b, "loraA", a) + " and " + describe("weight", w));
  }
  for (const auto& [name, shape] : {std::pair{"magnitude", magnitude}, std::pair{"bias", bias}}) {
    if (shape != nullptr && (shape->rank != 1 || (*shape)[0] != m)) {
      fail(fn, std::string("expected ") + name + " of shape [" + std::to_string(m) + "], but " +
                   both(name, *shape, "weight", w));
    }
  }
  Layer layer{{0, k, m, r}, Shape(), {}};
  if (input != nullptr) {
    const Shape& x = *input;
    if ((x.rank != 2 && x.rank != 3) || x.last() != k) {
      fail(fn, "expected input of shape [N, " + std::to_string(k) + "] or [batch, seq, " + std::to_string(k) +
                   "], but " + both("input", x, "weight", w));
    }
    layer.dims.n = x.rows();
    layer.output = x;
    layer.output.dims[x.rank - 1] = m;
  }
  if (grad_output != nullptr && *grad_output != layer.output) {
    fail(fn, "gradOutput must have the output's shape " + layer.output.str() + ", but " +
                 describe("gradOutput", *grad_output));
  }
  const int64_t n = layer.dims.n;
  layer.dora_saved = {{{"combined", matrix(n, m)},
                       {"hidden", matrix(n, r)},
                       {"norm", vector(m)},
                       {"weightLoraA", matrix(m, r)},
                       {"loraGram", matrix(r, r)}}};
  return layer;
}

void saved(const char* fn, const char* name, const Shape* actual, const Shape& expected) {
  if (actual == nullptr) return;
  if (actual->numel() != expected.numel() || actual->last() != expected.last()) {
    fail(fn, "expected " + std::string(name) + " of shape " + expected.str() + ", but " + describe(name, *actual));
  }
}

void unmerge(const char* fn, const float* magnitude, bool has_norm, int64_t m) {
  if ((magnitude == nullptr) == has_norm) {
    throw TypeError(std::string(fn) + ": magnitude and norm go together (DoRA) or are both absent (LoRA)");
  }
  for (int64_t j = 0; magnitude != nullptr && j < m; ++j) {
    if (magnitude[j] == 0.0f) {
      fail(fn,
           "magnitude[" + std::to_string(j) + "] is 0, so that row of the merged weight no longer holds its direction");
    }
  }
}

ops::AdapterDims penalty(const char* fn, const Shape& w, const Shape& gram, const Shape& a, const Shape& b) {
  if (w.rank != 2) fail(fn, "expected weight of rank 2 (out, in), but " + describe("weight", w));
  const int64_t m = w[0], k = w[1];
  if (a.rank != 2 || a[1] != k || a[0] < 1) {
    fail(fn, "expected loraA of shape [r, " + std::to_string(k) + "] with r >= 1, but " + describe("loraA", a) +
                 " and " + describe("weight", w));
  }
  const int64_t r = a[0];
  if (b != matrix(m, r)) {
    fail(fn, "expected loraB of shape " + matrix(m, r).str() + ", but " + describe("loraB", b) + " and " +
                 describe("loraA", a) + " and " + describe("weight", w));
  }
  if (gram != matrix(m, m)) {
    fail(fn, "expected weightGram (W0 W0ᵀ) of shape " + matrix(m, m).str() + ", but " + describe("weightGram", gram) +
                 " and " + describe("weight", w));
  }
  return {0, k, m, r};
}

}  // namespace bidora::rules
