// The GPU check of the CUDA backend, standalone (no Node on the GPU machine): every op of the CUDA backend table
// (native/cuda/backend.h), called with the same argument structs the binding fills (native/common/ops.h), and the raw
// GEMM, against a plain CPU reference in double on fresh random inputs, a determinism check, then fused DoRA forward +
// backward timed against LoRA and against the plain frozen-layer GEMMs at the sizes of bench/gpu/run.sh. Prints a
// table; with $OUT set, writes $OUT/cuda_check.json. Exit status 1 when a check fails. Tolerances (max |diff| / max
// |ref|): float32 paths 1e-5, TF32 5e-3, BF16 2e-2.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "cuda_ops.h"
#include "random_math.cuh"

namespace {

namespace cu = bidora::cuda;
namespace ops = bidora::ops;
using Vector = std::vector<float>;
using Doubles = std::vector<double>;
using bidora::Bf16, bidora::bf16_to_float, bidora::float_to_bf16;

#define CHECK_CUDA(call)                                                                               \
  do {                                                                                                 \
    const cudaError_t status_ = (call);                                                                \
    if (status_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(status_)); \
      std::exit(2);                                                                                    \
    }                                                                                                  \
  } while (0)

constexpr double kFloat32Tolerance = 1e-5, kTf32Tolerance = 5e-3, kBf16Tolerance = 2e-2;

std::mt19937_64 rng(std::random_device{}());
int failures = 0;
std::string json_checks, json_timings;

// ---- helpers
// ----------------------------------------------------------------------------------------------------------

Vector random_vector(size_t count, float spread = 1.0f) {
  std::normal_distribution<float> normal(0.0f, spread);
  Vector values(count);
  for (float& value : values) value = normal(rng);
  return values;
}

// A frozen weight in bfloat16: its bits, and the float32 values they widen to (what the references read).
std::vector<Bf16> bits_of(const Vector& values) {
  std::vector<Bf16> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = float_to_bf16(values[i]);
  return bits;
}
Vector rounded(const Vector& values) {
  Vector out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = bf16_to_float(float_to_bf16(values[i]));
  return out;
}

// A device copy that frees itself; upload() and download() copy whole arrays.
template <typename T>
struct Device {
  T* ptr = nullptr;
  size_t count = 0;
  explicit Device(size_t n) : count(n) { CHECK_CUDA(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T))); }
  explicit Device(const std::vector<T>& host) : Device(host.size()) { upload(host); }
  Device(const Device&) = delete;
  ~Device() { cudaFree(ptr); }
  void upload(const std::vector<T>& host) {
    CHECK_CUDA(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count);
    CHECK_CUDA(cudaDeviceSynchronize());
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaMemcpy(host.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

// `count` floats of device memory at `ptr`, copied to the host after every queued kernel finished.
Vector download(const float* ptr, int64_t count) {
  Vector host(static_cast<size_t>(count));
  CHECK_CUDA(cudaDeviceSynchronize());
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaMemcpy(host.data(), ptr, host.size() * sizeof(float), cudaMemcpyDeviceToHost));
  return host;
}

double relative_error(const Vector& actual, const Doubles& expected) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double diff = std::fabs(actual[i] - expected[i]);
    max_diff = std::isnan(diff) ? INFINITY : std::max(max_diff, diff);
    max_ref = std::max(max_ref, std::fabs(expected[i]));
  }
  return max_ref == 0 ? max_diff : max_diff / max_ref;
}

void report(const std::string& name, double error, double tolerance) {
  const bool pass = error <= tolerance;
  if (!pass) ++failures;
  std::printf("  %-58s %10.3g  (< %.0e)  %s\n", name.c_str(), error, tolerance, pass ? "ok" : "FAIL");
  char line[256];
  std::snprintf(line, sizeof line, "%s{\"name\":\"%s\",\"error\":%.6g,\"tolerance\":%g,\"pass\":%s}",
                json_checks.empty() ? "" : ",", name.c_str(), error, tolerance, pass ? "true" : "false");
  json_checks += line;
}

void check(const std::string& name, const Vector& actual, const Doubles& expected, double tolerance) {
  report(name, relative_error(actual, expected), tolerance);
}

// The CUDA backend, as the binding sees it.
const ops::Backend& gpu() { return cu::backend(); }

const char* precision_name(cu::GemmPrecision precision) {
  return precision == cu::GemmPrecision::kFloat32 ? "fp32" : precision == cu::GemmPrecision::kTf32 ? "tf32" : "bf16";
}

double tolerance_of(cu::GemmPrecision precision) {
  return precision == cu::GemmPrecision::kFloat32 ? kFloat32Tolerance
         : precision == cu::GemmPrecision::kTf32  ? kTf32Tolerance
                                                  : kBf16Tolerance;
}

// ---- GEMM
// -------------------------------------------------------------------------------------------------------------

struct GemmShape {
  int64_t m, n, k;
};

// op(A) op(B) in double, A stored [m,k] (or [k,m] when ta), B stored [k,n] (or [n,k] when tb), row-major.
Doubles product_reference(const Vector& a, bool ta, const Vector& b, bool tb, const GemmShape& s) {
  Doubles out(s.m * s.n);
  for (int64_t i = 0; i < s.m; ++i) {
    for (int64_t j = 0; j < s.n; ++j) {
      double total = 0;
      for (int64_t p = 0; p < s.k; ++p) {
        total += static_cast<double>(a[ta ? p * s.m + i : i * s.k + p]) * b[tb ? j * s.k + p : p * s.n + j];
      }
      out[i * s.n + j] = total;
    }
  }
  return out;
}

void check_gemm() {
  // Edges on every side, a single row, an empty K, and a skinny long-K product (split-K).
  const GemmShape shapes[] = {{1, 1, 1}, {130, 67, 45}, {257, 300, 129}, {16, 64, 3000}, {7, 9, 0}, {200, 1, 77}};
  Device<float> scratch(1 << 22);
  for (const GemmShape& s : shapes) {
    for (int transposes = 0; transposes < 4; ++transposes) {
      const bool ta = transposes & 1, tb = transposes & 2;
      const Vector a = random_vector(s.m * s.k), b = random_vector(s.k * s.n), c0 = random_vector(s.m * s.n);
      const float alpha = 0.75f, beta = transposes == 3 ? 0.0f : -0.5f;
      Doubles expected = product_reference(a, ta, b, tb, s);
      for (size_t i = 0; i < expected.size(); ++i) expected[i] = alpha * expected[i] + (beta == 0 ? 0.0 : beta * c0[i]);
      for (auto precision : {cu::GemmPrecision::kFloat32, cu::GemmPrecision::kTf32, cu::GemmPrecision::kBf16}) {
        Device<float> da(a), db(b), dc(c0);
        if (beta == 0) CHECK_CUDA(cudaMemset(dc.ptr, 0xff, dc.count * sizeof(float)));  // NaN: must not be read
        cu::gemm(dc.ptr, da.ptr, ta, db.ptr, tb, s.m, s.n, s.k, alpha, beta, precision, {scratch.ptr, scratch.count},
                 nullptr);
        char name[128];
        std::snprintf(name, sizeof name, "gemm %s %lldx%lldx%lld a%s b%s", precision_name(precision),
                      static_cast<long long>(s.m), static_cast<long long>(s.n), static_cast<long long>(s.k),
                      ta ? "T" : "", tb ? "T" : "");
        check(name, dc.download(), expected, tolerance_of(precision));
      }
    }
  }
}

// matmul (batched, a shared b) and linear (with a bias) through the backend table, as the binding calls them.
void check_products() {
  const int64_t batch = 3, m = 45, n = 37, k = 70;
  const Vector a = random_vector(batch * m * k), b = random_vector(k * n), bias = random_vector(n);
  Doubles product_ref(batch * m * n), linear_ref(batch * m * n);
  for (int64_t i = 0; i < batch * m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double total = 0, transposed = 0;
      for (int64_t p = 0; p < k; ++p) {
        total += static_cast<double>(a[i * k + p]) * b[p * n + j];
        transposed += static_cast<double>(a[i * k + p]) * b[j * k + p];  // b read as weight [n, k]
      }
      product_ref[i * n + j] = total;
      linear_ref[i * n + j] = transposed + bias[j];
    }
  }
  Device<float> da(a), db(b), dbias(bias), out(batch * m * n);
  gpu().matmul({out.ptr, da.ptr, db.ptr, batch, m, n, k, false, false, true, cu::GemmPrecision::kFloat32});
  check("matmul op (batched, shared b)", out.download(), product_ref, kFloat32Tolerance);
  gpu().linear({out.ptr, da.ptr, db.ptr, dbias.ptr, batch * m, n, k, cu::GemmPrecision::kFloat32});
  check("linear op (bias)", out.download(), linear_ref, kFloat32Tolerance);
}

// ---- DoRA and LoRA
// ----------------------------------------------------------------------------------------------------

struct Layer {
  cu::AdapterDims dims;
  float scale, eps;
  ops::BranchDropout dropout;
  Vector input, lora_input, dropout_scale, weight, bias, lora_a, lora_b, magnitude, grad_output;
};

// With dropout, the branch's mask is the one both backends draw from (p, seed): random_math.cuh's.
Layer random_layer(int64_t n, int64_t k, int64_t m, int64_t r, bool dropout) {
  Layer layer{{n, k, m, r}, 2.0f / static_cast<float>(r), 1e-6f, {dropout ? 0.1f : 0.0f, 4242}};
  layer.input = random_vector(n * k);
  layer.lora_input = layer.input;
  if (dropout) {
    layer.dropout_scale.resize(n * k);
    const uint64_t key = cu::dropout_key(layer.dropout.seed), threshold = cu::dropout_threshold(layer.dropout.p);
    for (int64_t i = 0; i < n * k; ++i) {
      const bool keep = cu::dropout_keeps(key, i, threshold);
      layer.dropout_scale[i] = keep ? 1.0f / (1.0f - layer.dropout.p) : 0.0f;
      layer.lora_input[i] = keep ? layer.input[i] / (1.0f - layer.dropout.p) : 0.0f;
    }
  }
  layer.weight = random_vector(m * k, 0.05f);
  layer.bias = random_vector(m);
  layer.lora_a = random_vector(r * k, 0.05f);
  layer.lora_b = random_vector(m * r, 0.05f);
  layer.magnitude = random_vector(m);
  layer.grad_output = random_vector(n * m);
  return layer;
}

struct Reference {
  Doubles output, grad_input, grad_lora_a, grad_lora_b, grad_magnitude, grad_bias;
};

// Plain loops in double that form V = W0 + s B A explicitly (dora false: LoRA).
Reference adapter_reference(const Layer& L, bool dora, bool detach_norm) {
  const auto [n, k, m, r] = L.dims;
  const double s = L.scale;
  Doubles direction(m * k), norm(m), hidden(n * r, 0.0), combined(n * m, 0.0);
  for (int64_t j = 0; j < m; ++j) {
    double sq = 0;
    for (int64_t c = 0; c < k; ++c) {
      double value = L.weight[j * k + c];
      for (int64_t p = 0; p < r; ++p) value += s * L.lora_b[j * r + p] * L.lora_a[p * k + c];
      direction[j * k + c] = value;
      sq += value * value;
    }
    norm[j] = std::max(std::sqrt(sq), static_cast<double>(L.eps));
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t p = 0; p < r; ++p) {
      for (int64_t c = 0; c < k; ++c)
        hidden[i * r + p] += static_cast<double>(L.lora_input[i * k + c]) * L.lora_a[p * k + c];
    }
    for (int64_t j = 0; j < m; ++j) {
      double total = 0;
      for (int64_t c = 0; c < k; ++c) total += static_cast<double>(L.input[i * k + c]) * L.weight[j * k + c];
      for (int64_t p = 0; p < r; ++p) total += s * hidden[i * r + p] * L.lora_b[j * r + p];
      combined[i * m + j] = total;
    }
  }
  Reference ref;
  ref.output.resize(n * m);
  Doubles grad_combined(n * m), grad_direction(m * k, 0.0);
  ref.grad_bias.assign(m, 0.0);
  ref.grad_magnitude.assign(m, 0.0);
  for (int64_t j = 0; j < m; ++j) {
    const double gain = dora ? L.magnitude[j] / norm[j] : 1.0;
    double dot = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref.output[i * m + j] = gain * combined[i * m + j] + L.bias[j];
      grad_combined[i * m + j] = gain * L.grad_output[i * m + j];
      dot += L.grad_output[i * m + j] * combined[i * m + j];
      ref.grad_bias[j] += L.grad_output[i * m + j];
    }
    if (!dora) continue;
    ref.grad_magnitude[j] = dot / norm[j];
    if (!detach_norm && norm[j] > L.eps) {
      const double coefficient = -L.magnitude[j] * dot / (norm[j] * norm[j] * norm[j]);
      for (int64_t c = 0; c < k; ++c) grad_direction[j * k + c] = coefficient * direction[j * k + c];
    }
  }
  Doubles grad_hidden(n * r, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t p = 0; p < r; ++p) {
      for (int64_t j = 0; j < m; ++j) grad_hidden[i * r + p] += s * grad_combined[i * m + j] * L.lora_b[j * r + p];
    }
  }
  ref.grad_lora_b.assign(m * r, 0.0);
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t p = 0; p < r; ++p) {
      double total = 0;
      for (int64_t i = 0; i < n; ++i) total += grad_combined[i * m + j] * hidden[i * r + p];
      for (int64_t c = 0; c < k; ++c) total += grad_direction[j * k + c] * L.lora_a[p * k + c];
      ref.grad_lora_b[j * r + p] = s * total;
    }
  }
  ref.grad_lora_a.assign(r * k, 0.0);
  for (int64_t p = 0; p < r; ++p) {
    for (int64_t c = 0; c < k; ++c) {
      double total = 0, through = 0;
      for (int64_t i = 0; i < n; ++i) total += grad_hidden[i * r + p] * L.lora_input[i * k + c];
      for (int64_t j = 0; j < m; ++j) through += L.lora_b[j * r + p] * grad_direction[j * k + c];
      ref.grad_lora_a[p * k + c] = total + s * through;
    }
  }
  ref.grad_input.assign(n * k, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < k; ++c) {
      double base = 0, branch = 0;
      for (int64_t j = 0; j < m; ++j) base += grad_combined[i * m + j] * L.weight[j * k + c];
      for (int64_t p = 0; p < r; ++p) branch += grad_hidden[i * r + p] * L.lora_a[p * k + c];
      if (!L.dropout_scale.empty()) branch *= L.dropout_scale[i * k + c];
      ref.grad_input[i * k + c] = base + branch;
    }
  }
  return ref;
}

// Device copies of one layer and the outputs of a forward + backward.
struct LayerOnDevice {
  Device<float> input, weight, weight_sq_norms, bias, lora_a, lora_b, magnitude, grad_output;
  Device<Bf16> weight_bits;  // W0 in bfloat16, for the layer(.., bf16 = true) form
  Device<float> output, combined, hidden, norm, weight_lora_a, lora_gram;
  Device<float> grad_input, grad_lora_a, grad_lora_b, grad_magnitude, grad_bias;
  explicit LayerOnDevice(const Layer& L)
      : input(L.input),
        weight(L.weight),
        weight_sq_norms(L.dims.m),
        bias(L.bias),
        lora_a(L.lora_a),
        lora_b(L.lora_b),
        magnitude(L.magnitude),
        grad_output(L.grad_output),
        output(L.dims.n * L.dims.m),
        combined(L.dims.n * L.dims.m),
        hidden(L.dims.n * L.dims.r),
        norm(L.dims.m),
        weight_lora_a(L.dims.m * L.dims.r),
        lora_gram(L.dims.r * L.dims.r),
        grad_input(L.dims.n * L.dims.k),
        grad_lora_a(L.dims.r * L.dims.k),
        grad_lora_b(L.dims.m * L.dims.r),
        grad_magnitude(L.dims.m),
        grad_bias(L.dims.m),
        weight_bits(bits_of(L.weight)) {
    gpu().row_sq_norms({weight_sq_norms.ptr, weight.ptr, L.dims.m, L.dims.k});
  }
  // The layer as the binding hands it to a backend.
  ops::AdapterLayer layer(const Layer& L, cu::GemmPrecision precision, bool bf16 = false) const {
    ops::AdapterLayer l{};
    l.input = input.ptr;
    l.weight = bf16 ? nullptr : weight.ptr;
    l.weight_bf16 = bf16 ? weight_bits.ptr : nullptr;
    l.weight_sq_norms = weight_sq_norms.ptr;
    l.bias = bias.ptr;
    l.lora_a = lora_a.ptr;
    l.lora_b = lora_b.ptr;
    l.magnitude = magnitude.ptr;
    l.dims = L.dims;
    l.scale = L.scale;
    l.eps = L.eps;
    l.dropout = L.dropout;
    l.precision = precision;
    return l;
  }
  cu::AdapterGrads grads() {
    cu::AdapterGrads g;
    g.input = grad_input.ptr;
    g.lora_a = grad_lora_a.ptr;
    g.lora_b = grad_lora_b.ptr;
    g.magnitude = grad_magnitude.ptr;
    g.bias = grad_bias.ptr;
    return g;
  }
};

void run_dora(LayerOnDevice& d, const Layer& L, bool detach_norm, cu::GemmPrecision precision, bool bf16 = false) {
  const ops::DoraSaved saved{d.combined.ptr, d.hidden.ptr, d.norm.ptr, d.weight_lora_a.ptr, d.lora_gram.ptr};
  gpu().dora_forward({d.output.ptr, saved, d.layer(L, precision, bf16)});
  gpu().dora_backward({d.grads(), d.grad_output.ptr, saved, d.layer(L, precision, bf16), detach_norm});
}

void run_lora(LayerOnDevice& d, const Layer& L, cu::GemmPrecision precision, bool bf16 = false) {
  gpu().lora_forward({d.output.ptr, d.hidden.ptr, d.layer(L, precision, bf16)});
  cu::AdapterGrads grads = d.grads();
  grads.magnitude = nullptr;
  gpu().lora_backward({grads, d.grad_output.ptr, d.hidden.ptr, d.layer(L, precision, bf16)});
}

// Every output and gradient of one forward + backward against the double reference.
void check_layer(const std::string& name, LayerOnDevice& d, const Reference& ref, double tolerance, bool dora) {
  check(name + " output", d.output.download(), ref.output, tolerance);
  check(name + " grad input", d.grad_input.download(), ref.grad_input, tolerance);
  check(name + " grad lora_a", d.grad_lora_a.download(), ref.grad_lora_a, tolerance);
  check(name + " grad lora_b", d.grad_lora_b.download(), ref.grad_lora_b, tolerance);
  if (dora) check(name + " grad magnitude", d.grad_magnitude.download(), ref.grad_magnitude, tolerance);
  check(name + " grad bias", d.grad_bias.download(), ref.grad_bias, tolerance);
}

// DoRA (both norm modes) and LoRA, with and without dropout, in float32, TF32, and over a bfloat16 W0 (a frozen
// weight loaded in bfloat16: BF16 tensor cores whatever the precision, the reference reading the widened values).
void check_adapters() {
  struct Variant {
    const char* label;
    cu::GemmPrecision precision;
    bool bf16_weight;
  };
  const Variant variants[] = {{"fp32", cu::GemmPrecision::kFloat32, false},
                              {"tf32", cu::GemmPrecision::kTf32, false},
                              {"bf16-W0", cu::GemmPrecision::kFloat32, true}};
  for (bool dropout : {false, true}) {
    for (const auto& [label, precision, bf16_weight] : variants) {
      Layer L = random_layer(67, 150, 90, 8, dropout);
      if (bf16_weight) L.weight = rounded(L.weight);
      const double tolerance = bf16_weight ? kBf16Tolerance : tolerance_of(precision);
      const std::string tag = std::string(label) + (dropout ? " dropout" : "");
      for (bool detach_norm : {true, false}) {
        LayerOnDevice d(L);
        run_dora(d, L, detach_norm, precision, bf16_weight);
        const std::string name = "dora " + tag + (detach_norm ? " detach" : " through-norm");
        check_layer(name, d, adapter_reference(L, true, detach_norm), tolerance, true);
      }
      LayerOnDevice d(L);
      run_lora(d, L, precision, bf16_weight);
      check_layer("lora " + tag, d, adapter_reference(L, false, true), tolerance, false);
    }
  }
  // doraWeightNorm: the factored row norm against ||W0 + s B A|| formed in double.
  const Layer N = random_layer(1, 300, 129, 8, false);
  LayerOnDevice dn(N);
  Device<float> norm(N.dims.m);
  gpu().dora_norm({norm.ptr, dn.layer(N, cu::GemmPrecision::kFloat32)});
  Doubles norm_ref(N.dims.m);
  for (int64_t j = 0; j < N.dims.m; ++j) {
    double sq = 0;
    for (int64_t c = 0; c < N.dims.k; ++c) {
      double value = N.weight[j * N.dims.k + c];
      for (int64_t p = 0; p < N.dims.r; ++p) value += N.scale * N.lora_b[j * N.dims.r + p] * N.lora_a[p * N.dims.k + c];
      sq += value * value;
    }
    norm_ref[j] = std::max(std::sqrt(sq), static_cast<double>(N.eps));
  }
  check("dora weight norm (factored)", norm.download(), norm_ref, kFloat32Tolerance);
  // Same inputs, same bits: every reduction has a fixed order (split-K included).
  const Layer L = random_layer(300, 2100, 260, 16, false);
  LayerOnDevice first(L), second(L);
  run_dora(first, L, false, cu::GemmPrecision::kTf32);
  run_dora(second, L, false, cu::GemmPrecision::kTf32);
  const Vector a = first.grad_lora_a.download(), b = second.grad_lora_a.download();
  const Vector c = first.grad_magnitude.download(), e = second.grad_magnitude.download();
  const bool same =
      std::memcmp(a.data(), b.data(), a.size() * 4) == 0 && std::memcmp(c.data(), e.data(), c.size() * 4) == 0;
  report("dora backward is bitwise deterministic (0 = same bits)", same ? 0.0 : 1.0, 0.0);
}

// Frozen bfloat16 weights (models loaded with dtype 'bfloat16'): products with a bfloat16 operand on either side (BF16
// tensor cores whatever the precision), row norms and embedding rows, against double references over the widened
// values (check_adapters covers the DoRA and LoRA layers over a bfloat16 W0).
void check_bf16_weights() {
  Device<float> scratch(1 << 22);
  for (const GemmShape& s : {GemmShape{130, 67, 45}, GemmShape{257, 300, 129}, GemmShape{16, 64, 3000}}) {
    for (int transposes = 0; transposes < 4; ++transposes) {
      const bool ta = transposes & 1, tb = transposes & 2;
      const Vector a = rounded(random_vector(s.m * s.k)), b = rounded(random_vector(s.k * s.n));
      const Doubles expected = product_reference(a, ta, b, tb, s);
      Device<float> da(a), db(b), dc(s.m * s.n);
      Device<Bf16> da16(bits_of(a)), db16(bits_of(b));
      char shape[64];
      std::snprintf(shape, sizeof shape, "%lldx%lldx%lld a%s b%s", static_cast<long long>(s.m),
                    static_cast<long long>(s.n), static_cast<long long>(s.k), ta ? "T" : "", tb ? "T" : "");
      cu::gemm(dc.ptr, cu::float32(da.ptr), ta, {nullptr, db16.ptr}, tb, s.m, s.n, s.k, 1.0f, 0.0f,
               cu::GemmPrecision::kFloat32, {scratch.ptr, scratch.count}, nullptr);
      check(std::string("gemm bf16-weight b ") + shape, dc.download(), expected, kBf16Tolerance);
      cu::gemm(dc.ptr, {nullptr, da16.ptr}, ta, cu::float32(db.ptr), tb, s.m, s.n, s.k, 1.0f, 0.0f,
               cu::GemmPrecision::kFloat32, {scratch.ptr, scratch.count}, nullptr);
      check(std::string("gemm bf16-weight a ") + shape, dc.download(), expected, kBf16Tolerance);
    }
  }
  // Row norms (in double, of exact inputs) and embedding rows (widened exactly).
  const int64_t rows = 37, cols = 300, vocab = 50, positions = 64;
  const Vector weight = rounded(random_vector(rows * cols)), table = rounded(random_vector(vocab * cols));
  Device<Bf16> dweight(bits_of(weight)), dtable(bits_of(table));
  Device<float> norms(rows), gathered(positions * cols);
  gpu().row_sq_norms({norms.ptr, nullptr, rows, cols, dweight.ptr});
  Doubles norms_ref(rows, 0.0), gathered_ref(positions * cols);
  for (int64_t i = 0; i < rows * cols; ++i) norms_ref[i / cols] += static_cast<double>(weight[i]) * weight[i];
  check("row sq norms bf16-weight", norms.download(), norms_ref, kFloat32Tolerance);
  std::vector<int32_t> ids(positions);
  for (int64_t p = 0; p < positions; ++p) {
    ids[p] = static_cast<int32_t>(rng() % vocab);
    for (int64_t j = 0; j < cols; ++j) gathered_ref[p * cols + j] = table[ids[p] * cols + j];
  }
  gpu().embedding({gathered.ptr, nullptr, ids.data(), positions, cols, dtable.ptr});
  check("embedding bf16-weight", gathered.download(), gathered_ref, 0.0);
}

// ---- elementwise, nn, optimizer
// ---------------------------------------------------------------------------------------

void check_elementwise() {
  const int64_t n = 100003, period = 37;
  const Vector a = random_vector(n), b = random_vector(n), bias = random_vector(period);
  Device<float> da(a), db(b), dbias(bias), out(n);
  Doubles add_ref(n), mul_ref(n), scale_ref(n), axpy_ref(n);
  for (int64_t i = 0; i < n; ++i) {
    add_ref[i] = static_cast<double>(a[i]) + bias[i % period];
    mul_ref[i] = static_cast<double>(a[i]) * b[i];
    scale_ref[i] = 1.5 * a[i];
    axpy_ref[i] = a[i] - 0.25 * static_cast<double>(b[i]);
  }
  gpu().binary({ops::BinaryOp::kAdd, out.ptr, da.ptr, dbias.ptr, n, period});
  check("add (broadcast period 37)", out.download(), add_ref, kFloat32Tolerance);
  gpu().binary({ops::BinaryOp::kMul, out.ptr, da.ptr, db.ptr, n, n});
  check("mul", out.download(), mul_ref, kFloat32Tolerance);
  gpu().scale({out.ptr, da.ptr, n, 1.5f});
  check("scale", out.download(), scale_ref, kFloat32Tolerance);
  gpu().axpy({da.ptr, db.ptr, n, -0.25f});
  check("axpy", da.download(), axpy_ref, kFloat32Tolerance);
}

// sub, ReLU and tanh with their gradients, dropout against the CPU's mask, the axis sums and their broadcast, narrow
// and its gradient, the head permute and the mean squared error.
void check_layout() {
  const int64_t outer = 37, axis = 129, inner = 23, n = outer * axis * inner;
  const Vector a = random_vector(n), b = random_vector(n), grad = random_vector(n);
  Device<float> da(a), db(b), dgrad(grad), out(n), out2(n);
  Doubles sub_ref(n), relu_ref(n), relu_grad_ref(n), tanh_ref(n), dropout_ref(n);
  const float p = 0.3f;
  const uint64_t seed = 12345, key = cu::dropout_key(seed), threshold = cu::dropout_threshold(p);
  for (int64_t i = 0; i < n; ++i) {
    sub_ref[i] = static_cast<double>(a[i]) - b[i];
    relu_ref[i] = a[i] > 0 ? a[i] : 0.0;
    relu_grad_ref[i] = a[i] > 0 ? grad[i] : 0.0;
    tanh_ref[i] = std::tanh(static_cast<double>(a[i]));
    dropout_ref[i] = cu::dropout_keeps(key, i, threshold) ? a[i] / (1.0 - p) : 0.0;
  }
  gpu().binary({ops::BinaryOp::kSub, out.ptr, da.ptr, db.ptr, n, n});
  check("sub", out.download(), sub_ref, kFloat32Tolerance);
  gpu().unary({ops::Activation::kRelu, out.ptr, da.ptr, n});
  check("relu", out.download(), relu_ref, kFloat32Tolerance);
  gpu().unary_backward({ops::Activation::kRelu, out.ptr, da.ptr, dgrad.ptr, n});
  check("relu backward", out.download(), relu_grad_ref, kFloat32Tolerance);
  gpu().unary({ops::Activation::kTanh, out.ptr, da.ptr, n});
  const Vector tanh_out = out.download();
  check("tanh", tanh_out, tanh_ref, kFloat32Tolerance);
  Doubles tanh_grad_ref(n);
  for (int64_t i = 0; i < n; ++i) tanh_grad_ref[i] = grad[i] * (1.0 - static_cast<double>(tanh_out[i]) * tanh_out[i]);
  gpu().unary_backward({ops::Activation::kTanh, out2.ptr, out.ptr, dgrad.ptr, n});
  check("tanh backward", out2.download(), tanh_grad_ref, kFloat32Tolerance);
  gpu().dropout({out.ptr, da.ptr, n, p, seed});
  check("dropout (the CPU's mask)", out.download(), dropout_ref, kFloat32Tolerance);

  // Sums over the middle axis (inner > 1) and over rows (inner = 1), and the broadcast back.
  Doubles column_sums(outer * inner, 0.0), row_sums(outer * axis, 0.0), broadcast_ref(n);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < axis; ++j) {
      for (int64_t i = 0; i < inner; ++i) {
        const float value = a[(o * axis + j) * inner + i];
        column_sums[o * inner + i] += value;
        row_sums[o * axis + j] += value;
      }
    }
  }
  Device<float> sums(outer * axis);
  gpu().sum_axis({sums.ptr, da.ptr, outer, axis, inner});
  const Vector inner_sums = sums.download();  // one copy: the first outer × inner entries are the column sums
  check("sum over an inner axis", Vector(inner_sums.begin(), inner_sums.begin() + outer * inner), column_sums,
        kFloat32Tolerance);
  gpu().sum_axis({sums.ptr, da.ptr, outer * axis, inner, 1});
  check("sum over rows", sums.download(), row_sums, kFloat32Tolerance);
  for (int64_t index = 0; index < n; ++index) {
    broadcast_ref[index] = b[(index / (axis * inner)) * inner + index % inner];
  }
  gpu().broadcast_axis({out.ptr, db.ptr, outer, axis, inner});
  check("broadcast over an axis", out.download(), broadcast_ref, 0.0);

  const int64_t start = 17, length = 61;
  Doubles narrow_ref(outer * length * inner), narrow_grad_ref(n, 0.0);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < length; ++j) {
      for (int64_t i = 0; i < inner; ++i) {
        narrow_ref[(o * length + j) * inner + i] = a[(o * axis + start + j) * inner + i];
        narrow_grad_ref[(o * axis + start + j) * inner + i] = grad[(o * length + j) * inner + i];
      }
    }
  }
  Device<float> narrowed(outer * length * inner);
  gpu().narrow({narrowed.ptr, da.ptr, outer, axis, inner, start, length});
  check("narrow", narrowed.download(), narrow_ref, 0.0);
  gpu().narrow_backward({out.ptr, dgrad.ptr, outer, axis, inner, start, length});
  check("narrow backward", out.download(), narrow_grad_ref, 0.0);

  // [a, b, c, d] = [4, 128, 12, 64]: a batch of sequences split into heads.
  const int64_t pa = 4, pb = 128, pc = 12, pd = 64;
  const Vector x = random_vector(pa * pb * pc * pd);
  Device<float> dx(x), permuted(x.size());
  Doubles permute_ref(x.size());
  for (int64_t ai = 0; ai < pa; ++ai)
    for (int64_t bi = 0; bi < pb; ++bi)
      for (int64_t ci = 0; ci < pc; ++ci)
        for (int64_t di = 0; di < pd; ++di)
          permute_ref[((ai * pc + ci) * pb + bi) * pd + di] = x[((ai * pb + bi) * pc + ci) * pd + di];
  gpu().permute0213({permuted.ptr, dx.ptr, pa, pb, pc, pd});
  check("permute [a,b,c,d] -> [a,c,b,d]", permuted.download(), permute_ref, 0.0);

  double squares = 0;
  Doubles mse_grad_ref(n);
  for (int64_t i = 0; i < n; ++i) {
    const double difference = static_cast<double>(a[i]) - b[i];
    squares += difference * difference;
    mse_grad_ref[i] = 2.0 * 0.5 * difference / static_cast<double>(n);
  }
  Device<float> loss(1);
  gpu().mse_loss({loss.ptr, da.ptr, db.ptr, n});
  check("mse loss", loss.download(), Doubles{squares / static_cast<double>(n)}, kFloat32Tolerance);
  gpu().mse_loss_backward({out.ptr, da.ptr, db.ptr, n, 0.5f});
  check("mse loss backward", out.download(), mse_grad_ref, kFloat32Tolerance);

  // BCE with logits: b read as targets in [0, 1] (its values squashed), the logits spread wide.
  Vector targets(n), wide(n);
  for (int64_t i = 0; i < n; ++i) {
    targets[i] = 1.0f / (1.0f + std::exp(-b[i]));
    wide[i] = 6.0f * a[i];
  }
  Device<float> dtargets(targets), dwide(wide);
  double bce = 0;
  Doubles bce_grad_ref(n);
  for (int64_t i = 0; i < n; ++i) {
    const double z = wide[i], y = targets[i];
    bce += std::max(z, 0.0) - z * y + std::log1p(std::exp(-std::fabs(z)));
    bce_grad_ref[i] = 0.5 * (1.0 / (1.0 + std::exp(-z)) - y) / static_cast<double>(n);
  }
  gpu().bce_with_logits({loss.ptr, dwide.ptr, dtargets.ptr, n});
  check("bce with logits", loss.download(), Doubles{bce / static_cast<double>(n)}, kFloat32Tolerance);
  gpu().bce_with_logits_backward({out.ptr, dwide.ptr, dtargets.ptr, n, 0.5f});
  check("bce with logits backward", out.download(), bce_grad_ref, kFloat32Tolerance);

  // Rotary embeddings on [2, 12, 128, 64] with positions offset per sequence, forward and inverse.
  const int64_t rb = 2, rh = 12, rs = 128, rd = 64;
  const Vector rx = random_vector(rb * rh * rs * rd);
  std::vector<int32_t> positions(rb * rs);
  for (int64_t i = 0; i < rb * rs; ++i) positions[i] = static_cast<int32_t>(i % rs + 7 * (i / rs));
  Device<float> drx(rx), rotated(rx.size()), restored(rx.size());
  Doubles rotary_ref(rx.size());
  for (int64_t bi = 0; bi < rb; ++bi)
    for (int64_t hi = 0; hi < rh; ++hi)
      for (int64_t si = 0; si < rs; ++si)
        for (int64_t pair = 0; pair < rd / 2; ++pair) {
          const int64_t row = ((bi * rh + hi) * rs + si) * rd;
          const double angle = positions[bi * rs + si] / std::pow(10000.0, 2.0 * pair / rd);
          const double low = rx[row + pair], high = rx[row + pair + rd / 2];
          rotary_ref[row + pair] = low * std::cos(angle) - high * std::sin(angle);
          rotary_ref[row + pair + rd / 2] = high * std::cos(angle) + low * std::sin(angle);
        }
  // Host positions, as the binding passes them (the backend copies them to the device).
  gpu().rotary({rotated.ptr, drx.ptr, positions.data(), rb, rh, rs, rd, 10000.0f, false});
  check("rotary embeddings", rotated.download(), rotary_ref, 1e-4);
  gpu().rotary({restored.ptr, rotated.ptr, positions.data(), rb, rh, rs, rd, 10000.0f, true});
  check("rotary inverse restores x", restored.download(), Doubles(rx.begin(), rx.end()), 1e-5);
}

// Fused attention against explicit softmax attention in double: padding mask, causal with fewer queries than keys,
// grouped-query heads (4 on 2), a head size off the warp width, rows that see no key, and dropout with the dropout
// op's mask at the flat [batch, heads, Lq, Lk] index; output and the three gradients.
void check_attention() {
  const int64_t b = 2, h = 4, kvh = 2, lq = 37, lk = 75, hd = 40;
  const float scale = 0.2f, p = 0.2f;
  const uint64_t seed = 31;
  const Vector q = random_vector(b * h * lq * hd), k = random_vector(b * kvh * lk * hd),
               v = random_vector(b * kvh * lk * hd), g = random_vector(b * h * lq * hd);
  Vector mask(b * lk, 1.0f);
  for (int64_t j = 0; j < lk; j += 3) mask[j] = 0.0f;  // padding in entry 0
  std::fill(mask.begin() + lk, mask.end(), 0.0f);      // entry 1 sees nothing
  for (const bool causal : {false, true}) {
    for (const float drop : {0.0f, p}) {
      Doubles out(q.size(), 0.0), dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
      const uint64_t key = bidora::cuda::dropout_key(seed), threshold = bidora::cuda::dropout_threshold(drop);
      for (int64_t bi = 0; bi < b; ++bi)
        for (int64_t hi = 0; hi < h; ++hi)
          for (int64_t i = 0; i < lq; ++i) {
            const int64_t row = (bi * h + hi) * lq + i, kv = (bi * kvh + hi / (h / kvh)) * lk;
            Doubles s(lk, -INFINITY), z(lk, 1.0), dp(lk);
            double max = -INFINITY;
            for (int64_t j = 0; j < lk; ++j) {
              if ((causal && j > i + lk - lq) || mask[bi * lk + j] == 0.0f) continue;
              double dot = 0;
              for (int64_t e = 0; e < hd; ++e) dot += double(q[row * hd + e]) * k[(kv + j) * hd + e];
              s[j] = dot * scale;
              max = std::max(max, s[j]);
              if (drop > 0) z[j] = bidora::cuda::dropout_keeps(key, row * lk + j, threshold) ? 1.0 / (1.0 - drop) : 0.0;
            }
            if (max == -INFINITY) continue;
            double sum = 0, row_term = 0;
            for (double& x : s) sum += x = std::exp(x - max);
            for (int64_t j = 0; j < lk; ++j) {
              s[j] /= sum;
              double dot = 0;
              for (int64_t e = 0; e < hd; ++e) {
                out[row * hd + e] += s[j] * z[j] * v[(kv + j) * hd + e];
                dv[(kv + j) * hd + e] += s[j] * z[j] * g[row * hd + e];
                dot += double(g[row * hd + e]) * v[(kv + j) * hd + e];
              }
              dp[j] = z[j] * dot;
              row_term += s[j] * dp[j];
            }
            for (int64_t j = 0; j < lk; ++j) {
              const double ds = s[j] * (dp[j] - row_term) * scale;
              for (int64_t e = 0; e < hd; ++e) {
                dq[row * hd + e] += ds * k[(kv + j) * hd + e];
                dk[(kv + j) * hd + e] += ds * q[row * hd + e];
              }
            }
          }
      Device<float> dqd(q), dkd(k), dvd(v), dgd(g), dmask(mask), o(q.size()), lse(b * h * lq), gq(q.size()),
          gk(k.size()), gv(v.size());
      const ops::AttentionDims dims{b, h, kvh, lq, lk, hd, scale, causal, false, {drop, seed}};
      gpu().attention({o.ptr, lse.ptr, dqd.ptr, dkd.ptr, dvd.ptr, dmask.ptr, dims});
      gpu().attention_backward(
          {gq.ptr, gk.ptr, gv.ptr, dgd.ptr, dqd.ptr, dkd.ptr, dvd.ptr, dmask.ptr, o.ptr, lse.ptr, dims});
      const std::string name = std::string("attention") + (causal ? " causal" : "") + (drop > 0 ? " dropout" : "");
      check(name + " output", o.download(), out, kFloat32Tolerance);
      check(name + " grad query", gq.download(), dq, kFloat32Tolerance);
      check(name + " grad key", gk.download(), dk, kFloat32Tolerance);
      check(name + " grad value", gv.download(), dv, kFloat32Tolerance);
    }
  }
}

void check_nn() {
  const int64_t rows = 193, d = 771;
  const Vector x = random_vector(rows * d, 2.0f), gamma = random_vector(d), beta = random_vector(d);
  const Vector grad_out = random_vector(rows * d);
  Device<float> dx(x), dgamma(gamma), dbeta(beta), dgrad(grad_out), out(rows * d), mean(rows), rstd(rows);
  Device<float> grad_x(rows * d), grad_gamma(d), grad_beta(d);

  // GELU
  Doubles gelu_ref(rows * d), gelu_grad_ref(rows * d);
  for (int64_t i = 0; i < rows * d; ++i) {
    const double v = x[i], cdf = 0.5 * std::erfc(-v / std::sqrt(2.0));
    gelu_ref[i] = v * cdf;
    gelu_grad_ref[i] = grad_out[i] * (cdf + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI));
  }
  gpu().unary({ops::Activation::kGelu, out.ptr, dx.ptr, rows * d});
  check("gelu forward", out.download(), gelu_ref, kFloat32Tolerance);
  gpu().unary_backward({ops::Activation::kGelu, grad_x.ptr, dx.ptr, dgrad.ptr, rows * d});
  check("gelu backward", grad_x.download(), gelu_grad_ref, kFloat32Tolerance);

  // Layer norm
  const float eps = 1e-5f;
  Doubles ln_ref(rows * d), ln_grad_ref(rows * d), gamma_ref(d, 0.0), beta_ref(d, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < d; ++j) mu += x[i * d + j];
    mu /= d;
    for (int64_t j = 0; j < d; ++j) var += (x[i * d + j] - mu) * (x[i * d + j] - mu);
    const double rs = 1.0 / std::sqrt(var / d + eps);
    double sum_g = 0, sum_gx = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double xhat = (x[i * d + j] - mu) * rs, g = static_cast<double>(grad_out[i * d + j]) * gamma[j];
      ln_ref[i * d + j] = xhat * gamma[j] + beta[j];
      sum_g += g;
      sum_gx += g * xhat;
      gamma_ref[j] += grad_out[i * d + j] * xhat;
      beta_ref[j] += grad_out[i * d + j];
    }
    for (int64_t j = 0; j < d; ++j) {
      const double xhat = (x[i * d + j] - mu) * rs;
      ln_grad_ref[i * d + j] =
          rs * (static_cast<double>(grad_out[i * d + j]) * gamma[j] - sum_g / d - xhat * sum_gx / d);
    }
  }
  gpu().layer_norm({out.ptr, mean.ptr, rstd.ptr, dx.ptr, dgamma.ptr, dbeta.ptr, rows, d, eps});
  check("layer norm forward", out.download(), ln_ref, kFloat32Tolerance);
  gpu().layer_norm_backward(
      {grad_x.ptr, grad_gamma.ptr, grad_beta.ptr, dgrad.ptr, dx.ptr, dgamma.ptr, mean.ptr, rstd.ptr, rows, d});
  check("layer norm backward input", grad_x.download(), ln_grad_ref, kFloat32Tolerance);
  check("layer norm backward gamma", grad_gamma.download(), gamma_ref, kFloat32Tolerance);
  check("layer norm backward beta", grad_beta.download(), beta_ref, kFloat32Tolerance);

  // Softmax with a [batch, D] mask over rows_per_batch rows each; the last batch entry fully masked.
  const int64_t batch = 4, per_batch = 3, keys = 129;
  const Vector logits = random_vector(batch * per_batch * keys, 3.0f), dy = random_vector(batch * per_batch * keys);
  Vector mask(batch * keys);
  for (int64_t i = 0; i < batch * keys; ++i) mask[i] = (i / keys == batch - 1 || rng() % 5 == 0) ? 0.0f : 1.0f;
  Doubles softmax_ref(logits.size(), 0.0), softmax_grad_ref(logits.size());
  for (int64_t row = 0; row < batch * per_batch; ++row) {
    const float* mrow = &mask[(row / per_batch) * keys];
    double mx = -INFINITY, total = 0, dot = 0;
    for (int64_t j = 0; j < keys; ++j)
      if (mrow[j] != 0) mx = std::max(mx, static_cast<double>(logits[row * keys + j]));
    for (int64_t j = 0; j < keys; ++j) {
      if (mrow[j] != 0) total += softmax_ref[row * keys + j] = std::exp(logits[row * keys + j] - mx);
    }
    for (int64_t j = 0; j < keys; ++j)
      softmax_ref[row * keys + j] = total > 0 ? softmax_ref[row * keys + j] / total : 0;
    for (int64_t j = 0; j < keys; ++j) dot += dy[row * keys + j] * softmax_ref[row * keys + j];
    for (int64_t j = 0; j < keys; ++j) {
      softmax_grad_ref[row * keys + j] = softmax_ref[row * keys + j] * (dy[row * keys + j] - dot);
    }
  }
  Device<float> dlogits(logits), dmask(mask), ddy(dy), probs(logits.size()), dgrad_logits(logits.size());
  gpu().softmax({probs.ptr, dlogits.ptr, dmask.ptr, batch, per_batch, keys});
  check("softmax forward (mask, a fully masked row)", probs.download(), softmax_ref, kFloat32Tolerance);
  gpu().softmax_backward({dgrad_logits.ptr, probs.ptr, ddy.ptr, batch * per_batch, keys});
  check("softmax backward", dgrad_logits.download(), softmax_grad_ref, kFloat32Tolerance);

  // Cross-entropy with ignored rows.
  const int64_t ce_rows = 300, classes = 1000;
  const int32_t ignore = -100;
  const Vector ce_logits = random_vector(ce_rows * classes, 2.0f);
  std::vector<int32_t> labels(ce_rows);
  for (int32_t& label : labels) label = rng() % 7 == 0 ? ignore : static_cast<int32_t>(rng() % classes);
  double loss_total = 0;
  int64_t counted = 0;
  Doubles ce_grad_ref(ce_rows * classes, 0.0);
  const float grad_loss = 1.3f;
  for (int64_t row = 0; row < ce_rows; ++row)
    if (labels[row] != ignore) ++counted;
  for (int64_t row = 0; row < ce_rows; ++row) {
    if (labels[row] == ignore) continue;
    double mx = -INFINITY, total = 0;
    for (int64_t j = 0; j < classes; ++j) mx = std::max(mx, static_cast<double>(ce_logits[row * classes + j]));
    for (int64_t j = 0; j < classes; ++j) total += std::exp(ce_logits[row * classes + j] - mx);
    loss_total += mx + std::log(total) - ce_logits[row * classes + labels[row]];
    for (int64_t j = 0; j < classes; ++j) {
      ce_grad_ref[row * classes + j] =
          grad_loss / counted * (std::exp(ce_logits[row * classes + j] - mx) / total - (j == labels[row]));
    }
  }
  // Labels stay in host memory, as the binding hands them over after checking them.
  Device<float> dce(ce_logits), loss(1), ce_grad(ce_rows * classes);
  gpu().cross_entropy({loss.ptr, dce.ptr, labels.data(), ce_rows, classes, ignore});
  check("cross-entropy forward", loss.download(), {loss_total / counted}, kFloat32Tolerance);
  gpu().cross_entropy_backward({ce_grad.ptr, dce.ptr, labels.data(), ce_rows, classes, ignore, grad_loss});
  check("cross-entropy backward", ce_grad.download(), ce_grad_ref, kFloat32Tolerance);

  // Embedding: repeated ids, deterministic backward.
  const int64_t vocab = 501, dim = 300, positions = 2000;
  const Vector table = random_vector(vocab * dim), grad_rows = random_vector(positions * dim);
  std::vector<int32_t> ids(positions);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % 97);  // most rows unused, used rows repeat
  Doubles emb_ref(positions * dim), emb_grad_ref(vocab * dim, 0.0);
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t j = 0; j < dim; ++j) {
      emb_ref[p * dim + j] = table[ids[p] * dim + j];
      emb_grad_ref[ids[p] * dim + j] += grad_rows[p * dim + j];
    }
  }
  Device<float> dtable(table), dgrad_rows(grad_rows), emb_out(positions * dim), emb_grad(vocab * dim);
  gpu().embedding({emb_out.ptr, dtable.ptr, ids.data(), positions, dim});
  check("embedding forward", emb_out.download(), emb_ref, 0.0);
  CHECK_CUDA(cudaMemset(emb_grad.ptr, 0xff, emb_grad.count * sizeof(float)));  // unused rows must be written (0)
  gpu().embedding_backward({emb_grad.ptr, dgrad_rows.ptr, ids.data(), positions, vocab, dim});
  check("embedding backward", emb_grad.download(), emb_grad_ref, kFloat32Tolerance);
}

void check_optimizer() {
  // Three tensors of uneven sizes (one past a block's grid-stride, one tiny).
  const std::vector<int64_t> sizes = {100003, 7, 4096};
  std::vector<Vector> params, grads, plus, minus;
  std::vector<std::unique_ptr<Device<float>>> keep;
  std::vector<float*> p_ptrs, m_ptrs, v_ptrs, g_ptrs, plus_ptrs, minus_ptrs, out_ptrs;
  auto device = [&](const Vector& host) {
    keep.push_back(std::make_unique<Device<float>>(host));
    return keep.back()->ptr;
  };
  for (int64_t size : sizes) {
    params.push_back(random_vector(size));
    grads.push_back(random_vector(size));
    plus.push_back(random_vector(size));
    minus.push_back(random_vector(size));
    p_ptrs.push_back(device(params.back()));
    m_ptrs.push_back(device(Vector(size, 0.0f)));
    v_ptrs.push_back(device(Vector(size, 0.0f)));
    g_ptrs.push_back(device(grads.back()));
    plus_ptrs.push_back(device(plus.back()));
    minus_ptrs.push_back(device(minus.back()));
    out_ptrs.push_back(device(grads.back()));
  }
  const int count = static_cast<int>(sizes.size());

  const auto const_ptrs = [](const std::vector<float*>& ptrs) { return const_cast<const float* const*>(ptrs.data()); };

  // AdamW, one step from zero moments, through the op contract as the binding calls it.
  ops::AdamwStep adamw{};
  adamw.params = p_ptrs.data();
  adamw.exp_avgs = m_ptrs.data();
  adamw.exp_avg_sqs = v_ptrs.data();
  adamw.grads = const_ptrs(g_ptrs);
  adamw.lengths = sizes.data();
  adamw.count = count;
  adamw.lr = 1e-2;
  adamw.beta1 = 0.9;
  adamw.beta2 = 0.999;
  adamw.eps = 1e-8;
  adamw.weight_decay = 0.1;
  adamw.step = 1;
  gpu().adamw_step(adamw);
  for (int t = 0; t < count; ++t) {
    Doubles expected(sizes[t]);
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const double g = grads[t][i], b1 = adamw.beta1, b2 = adamw.beta2;
      const double m = (1 - b1) * g, v = (1 - b2) * g * g;
      expected[i] = params[t][i] * (1 - adamw.lr * adamw.weight_decay) -
                    adamw.lr / (1 - b1) * m / (std::sqrt(v) / std::sqrt(1 - b2) + adamw.eps);
    }
    check("adamw tensor " + std::to_string(t), download(p_ptrs[t], sizes[t]), expected, kFloat32Tolerance);
  }

  // Global norm of the (updated) params, ε = 0.01 / norm, θ + εv, and the hypergradient.
  double squares = 0;
  for (int t = 0; t < count; ++t) {
    for (float value : download(p_ptrs[t], sizes[t])) squares += static_cast<double>(value) * value;
  }
  double norm = 0;
  gpu().global_norm({&norm, const_ptrs(p_ptrs), sizes.data(), count});
  const double norm_ref = std::sqrt(squares);
  check("list global norm", {static_cast<float>(norm)}, {norm_ref}, kFloat32Tolerance);
  const float eps_value = static_cast<float>(0.01 / norm);
  gpu().axpy_list({m_ptrs.data(), const_ptrs(g_ptrs), sizes.data(), count, eps_value});  // m += εg
  for (int t = 0; t < count; ++t) {
    Doubles expected(sizes[t]);
    for (int64_t i = 0; i < sizes[t]; ++i) expected[i] = (1 - 0.9) * grads[t][i] + eps_value * grads[t][i];
    check("list axpy (theta + eps v) tensor " + std::to_string(t), download(m_ptrs[t], sizes[t]), expected,
          kFloat32Tolerance);
  }
  const float xi = 0.8f;
  // In place on copies of g (out_ptrs), with the factor both backends take: ξ / (2ε).
  gpu().combine_hypergradient(
      {out_ptrs.data(), const_ptrs(plus_ptrs), const_ptrs(minus_ptrs), sizes.data(), count, xi / (2.0f * eps_value)});
  for (int t = 0; t < count; ++t) {
    Doubles expected(sizes[t]);
    for (int64_t i = 0; i < sizes[t]; ++i) {
      expected[i] = grads[t][i] - xi * (static_cast<double>(plus[t][i]) - minus[t][i]) / (2.0 * eps_value);
    }
    check("hypergradient combine tensor " + std::to_string(t), download(out_ptrs[t], sizes[t]), expected,
          kFloat32Tolerance);
  }
  gpu().scale_list({out_ptrs.data(), sizes.data(), count, -0.5f});
  for (int t = 0; t < count; ++t) {
    Doubles expected(sizes[t]);
    for (int64_t i = 0; i < sizes[t]; ++i) {
      expected[i] = -0.5 * (grads[t][i] - xi * (static_cast<double>(plus[t][i]) - minus[t][i]) / (2.0 * eps_value));
    }
    check("scale list tensor " + std::to_string(t), download(out_ptrs[t], sizes[t]), expected, kFloat32Tolerance);
  }

  // SGD with Nesterov momentum and decay, from a random buffer (plus as the parameters, minus as the buffer).
  gpu().sgd_step({plus_ptrs.data(), minus_ptrs.data(), const_ptrs(g_ptrs), sizes.data(), count, 0.05, 0.9, 0.01, true});
  for (int t = 0; t < count; ++t) {
    Doubles expected(sizes[t]);
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const double direction = static_cast<double>(grads[t][i]) + 0.01 * plus[t][i];
      const double velocity = 0.9 * minus[t][i] + direction;
      expected[i] = plus[t][i] - 0.05 * (direction + 0.9 * velocity);
    }
    check("sgd (Nesterov, decay) tensor " + std::to_string(t), download(plus_ptrs[t], sizes[t]), expected,
          kFloat32Tolerance);
  }
}

// ---- timing
// -----------------------------------------------------------------------------------------------------------

template <typename Body>
double time_ms(Body body, int repeats) {
  body();  // warm-up
  body();
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  CHECK_CUDA(cudaEventRecord(start));
  for (int i = 0; i < repeats; ++i) body();
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  CHECK_CUDA(cudaGetLastError());
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / repeats;
}

void add_timing(const char* name, const cu::AdapterDims& dims, const char* precision, double ms, double flops) {
  std::printf("  %-34s %-5s %9.3f ms %8.1f TFLOP/s\n", name, precision, ms, flops / (ms * 1e-3) / 1e12);
  char line[320];
  std::snprintf(line, sizeof line,
                "%s{\"name\":\"%s\",\"n\":%lld,\"k\":%lld,\"m\":%lld,\"r\":%lld,\"precision\":\"%s\",\"ms\":%.4f}",
                json_timings.empty() ? "" : ",", name, static_cast<long long>(dims.n), static_cast<long long>(dims.k),
                static_cast<long long>(dims.m), static_cast<long long>(dims.r), precision, ms);
  json_timings += line;
}

void bench(int64_t n, int64_t k, int64_t m, int64_t r) {
  std::printf("\nN=%lld K=%lld M=%lld R=%lld (forward + backward; frozen W0: input, A, B, m and bias gradients)\n",
              static_cast<long long>(n), static_cast<long long>(k), static_cast<long long>(m),
              static_cast<long long>(r));
  const Layer L = random_layer(n, k, m, r, false);
  LayerOnDevice d(L);
  const double base_flops = 2.0 * 2.0 * n * k * m;  // y = x W0ᵀ and grad_x = gy W0
  Device<float> scratch(16 * std::max({n * r, m * r, r * k}));
  for (auto precision : {cu::GemmPrecision::kTf32, cu::GemmPrecision::kBf16, cu::GemmPrecision::kFloat32}) {
    const char* p = precision_name(precision);
    const int repeats = precision == cu::GemmPrecision::kFloat32 ? 2 : 10;
    const double gemm_ms = time_ms(
        [&] {
          cu::gemm(d.output.ptr, d.input.ptr, false, d.weight.ptr, true, n, m, k, 1.0f, 0.0f, precision, {}, nullptr);
          cu::gemm(d.grad_input.ptr, d.grad_output.ptr, false, d.weight.ptr, false, n, k, m, 1.0f, 0.0f, precision, {},
                   nullptr);
        },
        repeats);
    const double lora_ms = time_ms([&] { run_lora(d, L, precision); }, repeats);
    const double dora_detach_ms = time_ms([&] { run_dora(d, L, true, precision); }, repeats);
    const double dora_ms = time_ms([&] { run_dora(d, L, false, precision); }, repeats);
    add_timing("plain GEMM (x W0^T, gy W0)", L.dims, p, gemm_ms, base_flops);
    add_timing("LoRA fwd+bwd", L.dims, p, lora_ms, base_flops);
    add_timing("DoRA fwd+bwd (detach norm)", L.dims, p, dora_detach_ms, base_flops);
    add_timing("DoRA fwd+bwd (through norm)", L.dims, p, dora_ms, base_flops);
    std::printf("  %-5s DoRA/LoRA %.3f (detach %.3f), DoRA/GEMM %.3f, LoRA/GEMM %.3f\n", p, dora_ms / lora_ms,
                dora_detach_ms / lora_ms, dora_ms / gemm_ms, lora_ms / gemm_ms);
  }
  // W0 stored in bfloat16 (half the bytes it streams): BF16 tensor cores whatever the precision.
  const double gemm16_ms = time_ms(
      [&] {
        cu::gemm(d.output.ptr, cu::float32(d.input.ptr), false, {nullptr, d.weight_bits.ptr}, true, n, m, k, 1.0f, 0.0f,
                 cu::GemmPrecision::kBf16, {}, nullptr);
        cu::gemm(d.grad_input.ptr, cu::float32(d.grad_output.ptr), false, {nullptr, d.weight_bits.ptr}, false, n, k, m,
                 1.0f, 0.0f, cu::GemmPrecision::kBf16, {}, nullptr);
      },
      10);
  const double lora16_ms = time_ms([&] { run_lora(d, L, cu::GemmPrecision::kBf16, true); }, 10);
  const double dora16_ms = time_ms([&] { run_dora(d, L, false, cu::GemmPrecision::kBf16, true); }, 10);
  add_timing("plain GEMM, bf16 W0", L.dims, "bf16", gemm16_ms, base_flops);
  add_timing("LoRA fwd+bwd, bf16 W0", L.dims, "bf16", lora16_ms, base_flops);
  add_timing("DoRA fwd+bwd (through norm), bf16 W0", L.dims, "bf16", dora16_ms, base_flops);
}

}  // namespace

// The decoder ops: GELU's tanh form and SiLU (two more activation kinds), SwiGLU, and RMS norm at a Llama-like width.
void check_decoder() {
  const int64_t rows = 97, d = 1031, n = rows * d;
  const Vector x = random_vector(n, 3.0f), up = random_vector(n), grad_out = random_vector(n);
  const Vector weight = random_vector(d);
  Device<float> dx(x), dup(up), dgrad(grad_out), dweight(weight), out(n), grad_x(n), grad_up(n), rstd(rows),
      grad_weight(d);
  const double c = std::sqrt(2.0 / M_PI);
  Doubles gelu_ref(n), gelu_grad_ref(n), silu_ref(n), silu_grad_ref(n), swiglu_ref(n), gate_ref(n), up_ref(n);
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i], t = std::tanh(c * (v + 0.044715 * v * v * v));
    const double sigma = 1.0 / (1.0 + std::exp(-v)), silu_prime = sigma * (1.0 + v * (1.0 - sigma));
    gelu_ref[i] = 0.5 * v * (1.0 + t);
    gelu_grad_ref[i] = grad_out[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * v * v));
    silu_ref[i] = v * sigma;
    silu_grad_ref[i] = grad_out[i] * silu_prime;
    swiglu_ref[i] = v * sigma * up[i];
    gate_ref[i] = static_cast<double>(grad_out[i]) * up[i] * silu_prime;
    up_ref[i] = grad_out[i] * v * sigma;
  }
  gpu().unary({ops::Activation::kGeluTanh, out.ptr, dx.ptr, n});
  check("gelu tanh form forward", out.download(), gelu_ref, kFloat32Tolerance);
  gpu().unary_backward({ops::Activation::kGeluTanh, grad_x.ptr, dx.ptr, dgrad.ptr, n});
  check("gelu tanh form backward", grad_x.download(), gelu_grad_ref, kFloat32Tolerance);
  gpu().unary({ops::Activation::kSilu, out.ptr, dx.ptr, n});
  check("silu forward", out.download(), silu_ref, kFloat32Tolerance);
  gpu().unary_backward({ops::Activation::kSilu, grad_x.ptr, dx.ptr, dgrad.ptr, n});
  check("silu backward", grad_x.download(), silu_grad_ref, kFloat32Tolerance);
  gpu().swiglu({out.ptr, dx.ptr, dup.ptr, n});
  check("swiglu forward", out.download(), swiglu_ref, kFloat32Tolerance);
  gpu().swiglu_backward({grad_x.ptr, grad_up.ptr, dx.ptr, dup.ptr, dgrad.ptr, n});
  check("swiglu backward gate", grad_x.download(), gate_ref, kFloat32Tolerance);
  check("swiglu backward up", grad_up.download(), up_ref, kFloat32Tolerance);

  const float eps = 1e-6f;
  Doubles rms_ref(n), rms_grad_ref(n), weight_ref(d, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    double squares = 0, sum_gx = 0;
    for (int64_t j = 0; j < d; ++j) squares += static_cast<double>(x[i * d + j]) * x[i * d + j];
    const double rs = 1.0 / std::sqrt(squares / d + eps);
    for (int64_t j = 0; j < d; ++j) {
      const double xhat = x[i * d + j] * rs;
      rms_ref[i * d + j] = weight[j] * xhat;
      sum_gx += static_cast<double>(grad_out[i * d + j]) * weight[j] * xhat;
      weight_ref[j] += grad_out[i * d + j] * xhat;
    }
    for (int64_t j = 0; j < d; ++j) {
      rms_grad_ref[i * d + j] =
          rs * (static_cast<double>(grad_out[i * d + j]) * weight[j] - x[i * d + j] * rs * sum_gx / d);
    }
  }
  gpu().rms_norm({out.ptr, rstd.ptr, dx.ptr, dweight.ptr, rows, d, eps});
  check("rms norm forward", out.download(), rms_ref, kFloat32Tolerance);
  gpu().rms_norm_backward({grad_x.ptr, grad_weight.ptr, dgrad.ptr, dx.ptr, dweight.ptr, rstd.ptr, rows, d});
  check("rms norm backward input", grad_x.download(), rms_grad_ref, kFloat32Tolerance);
  check("rms norm backward weight", grad_weight.download(), weight_ref, kFloat32Tolerance);
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--checks-only") == 0;
  // Line by line even into a pipe: a check that aborts then shows where.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  int devices = cu::usable_device_count();
  if (devices == 0) {
    std::printf("no usable CUDA GPU (compute capability 8.0+): nothing to check\n");
    return 3;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs)\n\nchecks (max |diff| / max |ref| against double references)\n", prop.name,
              prop.major, prop.minor, prop.multiProcessorCount);
  check_gemm();
  check_products();
  check_adapters();
  check_elementwise();
  check_layout();
  check_nn();
  check_decoder();
  check_attention();
  check_optimizer();
  check_bf16_weights();
  std::printf("\n%d check(s) failed\n", failures);
  if (!quick) {
    bench(4096, 4096, 4096, 16);
    bench(8192, 4096, 4096, 64);
  }
  if (const char* out_dir = std::getenv("OUT"); out_dir != nullptr && *out_dir != '\0') {
    const std::string path = std::string(out_dir) + "/cuda_check.json";
    if (FILE* file = std::fopen(path.c_str(), "w")) {
      std::fprintf(file, "{\"device\":\"%s\",\"failures\":%d,\"checks\":[%s],\"timings\":[%s]}\n", prop.name, failures,
                   json_checks.c_str(), json_timings.c_str());
      std::fclose(file);
      std::printf("wrote %s\n", path.c_str());
    }
  }
  return failures == 0 ? 0 : 1;
}
