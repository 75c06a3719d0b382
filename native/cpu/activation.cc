// GELU (erf and tanh forms), SiLU, SwiGLU, ReLU and tanh: the per-ISA bodies over contiguous element ranges, one range
// per thread.
#include "../core/threadpool.h"
#include "nn.h"
#include "nn_kernels.h"

namespace bidora::cpu {

namespace {

constexpr int64_t kGrain = 1024;  // a multiple of every vector width, so ranges start cache-line aligned
// GELU costs an exp and a division per element: threads pay off on smaller tensors than plain arithmetic.
constexpr int64_t kParallelElements = 1 << 14;

using Unary = void (*)(float*, const float*, int64_t);
using Binary = void (*)(float*, const float*, const float*, int64_t);

void run_unary(Unary kernel, float* out, const float* x, int64_t n) {
  parallel_for(n, kGrain, kParallelElements,
               [&](int64_t begin, int64_t end) { kernel(out + begin, x + begin, end - begin); });
}

void run_binary(Binary kernel, float* out, const float* a, const float* b, int64_t n) {
  parallel_for(n, kGrain, kParallelElements,
               [&](int64_t begin, int64_t end) { kernel(out + begin, a + begin, b + begin, end - begin); });
}

}  // namespace

void gelu_forward(float* out, const float* x, int64_t n) {
  run_unary(nn_kernels(active_isa()).gelu_forward, out, x, n);
}
void gelu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n) {
  run_binary(nn_kernels(active_isa()).gelu_backward, grad_x, x, grad_out, n);
}

void relu_forward(float* out, const float* x, int64_t n) {
  run_unary(nn_kernels(active_isa()).relu_forward, out, x, n);
}
void relu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n) {
  run_binary(nn_kernels(active_isa()).relu_backward, grad_x, x, grad_out, n);
}

void tanh_forward(float* out, const float* x, int64_t n) {
  run_unary(nn_kernels(active_isa()).tanh_forward, out, x, n);
}
void tanh_backward(float* grad_x, const float* out, const float* grad_out, int64_t n) {
  run_binary(nn_kernels(active_isa()).tanh_backward, grad_x, out, grad_out, n);
}

void gelu_tanh_forward(float* out, const float* x, int64_t n) {
  run_unary(nn_kernels(active_isa()).gelu_tanh_forward, out, x, n);
}
void gelu_tanh_backward(float* grad_x, const float* x, const float* grad_out, int64_t n) {
  run_binary(nn_kernels(active_isa()).gelu_tanh_backward, grad_x, x, grad_out, n);
}

void silu_forward(float* out, const float* x, int64_t n) {
  run_unary(nn_kernels(active_isa()).silu_forward, out, x, n);
}
void silu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n) {
  run_binary(nn_kernels(active_isa()).silu_backward, grad_x, x, grad_out, n);
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  run_binary(nn_kernels(active_isa()).swiglu_forward, out, gate, up, n);
}
void swiglu_backward(float* grad_gate, float* grad_up, const float* gate, const float* up, const float* grad_out,
                     int64_t n) {
  const auto kernel = nn_kernels(active_isa()).swiglu_backward;
  parallel_for(n, kGrain, kParallelElements, [&](int64_t begin, int64_t end) {
    kernel(grad_gate + begin, grad_up + begin, gate + begin, up + begin, grad_out + begin, end - begin);
  });
}

}  // namespace bidora::cpu
