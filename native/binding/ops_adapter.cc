// The fused DoRA and LoRA layer, declared with op.h: every adapter op reads its subset of one argument struct, whose
// tensors one check relates (weight [M,K], loraA [R,K], loraB [M,R], magnitude and bias [M], input [..., K]). The
// forward, backward and norm ops run on their tensors' device; merge, unmerge and the references on the CPU.
#include <string>

#include "op.h"

namespace bidora::binding {

namespace {

// Which gradients a backward computes: { input, loraA, loraB, magnitude, bias } booleans, all true when absent.
struct Needs {
  bool input = true, lora_a = true, lora_b = true, magnitude = true, bias = true;
};

Needs read_needs(const char* fn, const char* name, Napi::Value value) {
  Needs needs;
  if (missing(value)) return needs;
  if (!value.IsObject()) throw bidora::TypeError(where(fn, name) + " must be an object of booleans");
  Napi::Object object = value.As<Napi::Object>();
  auto flag = [&](const char* key, bool& slot) {
    Napi::Value entry = object.Get(key);
    if (entry.IsUndefined()) return;
    if (!entry.IsBoolean()) throw bidora::TypeError(where(fn, name) + "." + key + " must be a boolean");
    slot = entry.As<Napi::Boolean>().Value();
  };
  flag("input", needs.input);
  flag("loraA", needs.lora_a);
  flag("loraB", needs.lora_b);
  flag("magnitude", needs.magnitude);
  flag("bias", needs.bias);
  return needs;
}

// Every argument any adapter op takes; each op declares the ones it reads. dims and output_shape come from check().
struct AdapterArgs {
  TensorHandle *grad_output, *input, *weight, *bias, *lora_a, *lora_b, *magnitude;
  TensorHandle *combined, *hidden, *norm, *weight_lora_a, *lora_gram;  // saved by a forward for its backward
  float scale, eps, dropout;
  uint64_t seed;
  bool detach_norm = true;
  Needs needs;
  ops::AdapterDims dims;
  Shape output_shape;

  ops::BranchDropout branch() const { return {dropout, seed}; }
  const float* data(TensorHandle* tensor) const { return tensor != nullptr ? tensor->data() : nullptr; }
};

using A = AdapterArgs;

std::string both(const char* first, const Shape& a, const char* second, const Shape& b) {
  return describe(first, a) + " and " + describe(second, b);
}

// weight [M,K], loraA [R,K] with R >= 1, loraB [M,R], magnitude [M], bias [M] and input [..., K] (rank 2 or 3),
// whichever are given; derives N, K, M, R and the output's shape.
void check(const Call& call, A& args) {
  const Shape& w = args.weight->shape();
  const Shape& a = args.lora_a->shape();
  const Shape& b = args.lora_b->shape();
  if (w.rank != 2) call.fail("expected weight of rank 2 (out, in), but " + describe("weight", w));
  const int64_t m = w[0], k = w[1];
  if (a.rank != 2 || a[1] != k) {
    call.fail("expected loraA of shape [r, " + std::to_string(k) + "], but " + both("loraA", a, "weight", w));
  }
  const int64_t r = a[0];
  if (r < 1) call.fail("the rank r must be at least 1, but " + describe("loraA", a));
  if (b.rank != 2 || b[0] != m || b[1] != r) {
    call.fail("expected loraB of shape [" + std::to_string(m) + ", " + std::to_string(r) + "], but " +
              both("loraB", b, "loraA", a) + " and " + describe("weight", w));
  }
  for (const auto& [name, vector] : {std::pair{"magnitude", args.magnitude}, std::pair{"bias", args.bias}}) {
    if (vector != nullptr && (vector->shape().rank != 1 || vector->shape()[0] != m)) {
      call.fail(std::string("expected ") + name + " of shape [" + std::to_string(m) + "], but " +
                both(name, vector->shape(), "weight", w));
    }
  }
  int64_t n = 0;
  if (args.input != nullptr) {
    const Shape& x = args.input->shape();
    if ((x.rank != 2 && x.rank != 3) || x.last() != k) {
      call.fail("expected input of shape [N, " + std::to_string(k) + "] or [batch, seq, " + std::to_string(k) +
                "], but " + both("input", x, "weight", w));
    }
    n = x.rows();
    args.output_shape = x;
    args.output_shape.dims[x.rank - 1] = m;
  }
  args.dims = {n, k, m, r};
  if (args.grad_output != nullptr && args.grad_output->shape() != args.output_shape) {
    call.fail("gradOutput must have the output's shape " + args.output_shape.str() + ", but " +
              describe("gradOutput", args.grad_output->shape()));
  }
}

Shape matrix(int64_t rows, int64_t cols) { return Shape::from({rows, cols}, "matrix"); }
Shape vector(int64_t length) { return Shape::from({length}, "vector"); }

void check_saved(const Call& call, const char* name, const TensorHandle* tensor, const Shape& expected) {
  if (tensor == nullptr) return;
  if (tensor->shape().numel() != expected.numel() || tensor->shape().last() != expected.last()) {
    call.fail("expected " + std::string(name) + " of shape " + expected.str() + ", but " +
              describe(name, tensor->shape()));
  }
}

// A backward's checks: the layer's, then the saved activations against its dims.
void check_backward(const Call& call, A& args) {
  check(call, args);
  const auto [n, k, m, r] = args.dims;
  check_saved(call, "combined", args.combined, matrix(n, m));
  check_saved(call, "hidden", args.hidden, matrix(n, r));
  check_saved(call, "norm", args.norm, vector(m));
  check_saved(call, "weightLoraA", args.weight_lora_a, matrix(m, r));
  check_saved(call, "loraGram", args.lora_gram, matrix(r, r));
}

// The requested gradients, allocated on the call's device and returned in one object beside the kernel's pointers.
struct Grads {
  Napi::Object object;
  ops::AdapterGrads pointers;
};

Grads allocate_grads(const Call& call, const A& args, const Needs& needs, bool dora) {
  Grads grads{Napi::Object::New(call.env), {}};
  const auto [n, k, m, r] = args.dims;
  auto add = [&](const char* key, bool wanted, const Shape& shape, float** slot) {
    if (wanted) grads.object.Set(key, call.output(shape, slot));
  };
  add("input", needs.input, args.input->shape(), &grads.pointers.input);
  add("loraA", needs.lora_a, matrix(r, k), &grads.pointers.lora_a);
  add("loraB", needs.lora_b, matrix(m, r), &grads.pointers.lora_b);
  add("magnitude", dora && needs.magnitude, vector(m), &grads.pointers.magnitude);
  add("bias", needs.bias && args.bias != nullptr, vector(m), &grads.pointers.bias);
  return grads;
}

// ---- the declarations every op shares ----

Field<A> grad_output() { return tensor<&A::grad_output>("gradOutput"); }
Field<A> input() { return tensor<&A::input>("input"); }
Field<A> weight() { return tensor<&A::weight>("weight"); }
Field<A> bias() { return optional_tensor<&A::bias>("bias"); }
Field<A> lora_a() { return tensor<&A::lora_a>("loraA"); }
Field<A> lora_b() { return tensor<&A::lora_b>("loraB"); }
Field<A> magnitude() { return tensor<&A::magnitude>("magnitude"); }
Field<A> optional_magnitude() { return optional_tensor<&A::magnitude>("magnitude"); }
Field<A> scale() { return number<&A::scale>("scale"); }
Field<A> eps() { return number<&A::eps>("eps", kPositive); }
Field<A> dropout() { return number<&A::dropout>("dropout", half_open(0, 1)); }
Field<A> seed() { return integer<&A::seed>("seed", 0, kMaxSafeInteger); }
Field<A> detach_norm() { return boolean<&A::detach_norm>("detachNorm"); }
Field<A> needs() { return field<&A::needs, read_needs>("needs", Kind::kFlags, true); }

// [sync] doraForward({ input, weight, bias?, loraA, loraB, magnitude, scale, eps, dropout, seed })
//   -> { output, combined, hidden, norm, weightLoraA, loraGram }
// combined (u = x W0ᵀ + s h Bᵀ, [N,M]), hidden (h, [N,R]), norm ([M]), weightLoraA (W0 Aᵀ, [M,R]) and loraGram
// (A Aᵀ, [R,R]) are what backward needs. Throws TypeError (not a live tensor, devices differ), RangeError (shapes,
// r = 0, scale not finite, eps not positive, dropout outside [0, 1)).
const OpSpec<A> kDoraForward{
    "doraForward",
    Runs::kAny,
    kernel<&ops::Backend::dora_forward>,
    {input(), weight(), bias(), lora_a(), lora_b(), magnitude(), scale(), eps(), dropout(), seed()},
    check,
    [](const Call& call, A& args) -> Napi::Value {
      const auto [n, k, m, r] = args.dims;
      float *output, *combined, *hidden, *norm, *weight_lora_a, *lora_gram;
      Napi::Object result = Napi::Object::New(call.env);
      result.Set("output", call.output(args.output_shape, &output));
      result.Set("combined", call.output(matrix(n, m), &combined));
      result.Set("hidden", call.output(matrix(n, r), &hidden));
      result.Set("norm", call.output(vector(m), &norm));
      result.Set("weightLoraA", call.output(matrix(m, r), &weight_lora_a));
      result.Set("loraGram", call.output(matrix(r, r), &lora_gram));
      call.backend.dora_forward({.output = output,
                                 .combined = combined,
                                 .hidden = hidden,
                                 .norm = norm,
                                 .weight_lora_a = weight_lora_a,
                                 .lora_gram = lora_gram,
                                 .input = args.input->data(),
                                 .weight = args.weight->data(),
                                 .weight_sq_norms = args.weight->row_sq_norms(),
                                 .bias = args.data(args.bias),
                                 .lora_a = args.lora_a->data(),
                                 .lora_b = args.lora_b->data(),
                                 .magnitude = args.magnitude->data(),
                                 .dims = args.dims,
                                 .scale = args.scale,
                                 .eps = args.eps,
                                 .dropout = args.branch(),
                                 .precision = gemm_precision()});
      return result;
    }};

// [sync] doraBackward({ gradOutput, input, weight, bias?, loraA, loraB, magnitude, combined, hidden, norm,
//   weightLoraA, loraGram, scale, eps, detachNorm?, dropout, seed, needs? }) -> { input?, loraA?, loraB?, magnitude?,
//   bias? }
// `combined` is consumed (overwritten). bias only tells whether a bias gradient exists. Throws TypeError, RangeError.
const OpSpec<A> kDoraBackward{
    "doraBackward",
    Runs::kAny,
    kernel<&ops::Backend::dora_backward>,
    {grad_output(), input(), weight(), bias(), lora_a(), lora_b(), magnitude(),
     written_tensor<&A::combined>("combined"), tensor<&A::hidden>("hidden"), tensor<&A::norm>("norm"),
     tensor<&A::weight_lora_a>("weightLoraA"), tensor<&A::lora_gram>("loraGram"), scale(), eps(), detach_norm(),
     dropout(), seed(), needs()},
    check_backward,
    [](const Call& call, A& args) -> Napi::Value {
      Grads grads = allocate_grads(call, args, args.needs, true);
      call.backend.dora_backward({.grads = grads.pointers,
                                  .combined = args.combined->data(),
                                  .grad_output = args.grad_output->data(),
                                  .input = args.input->data(),
                                  .weight = args.weight->data(),
                                  .lora_a = args.lora_a->data(),
                                  .lora_b = args.lora_b->data(),
                                  .magnitude = args.magnitude->data(),
                                  .norm = args.norm->data(),
                                  .hidden = args.hidden->data(),
                                  .weight_lora_a = args.weight_lora_a->data(),
                                  .lora_gram = args.lora_gram->data(),
                                  .dims = args.dims,
                                  .scale = args.scale,
                                  .eps = args.eps,
                                  .detach_norm = args.detach_norm,
                                  .dropout = args.branch(),
                                  .precision = gemm_precision()});
      return grads.object;
    }};

// [sync] loraForward({ input, weight, bias?, loraA, loraB, scale, dropout, seed }) -> { output, hidden }
const OpSpec<A> kLoraForward{"loraForward",
                             Runs::kAny,
                             kernel<&ops::Backend::lora_forward>,
                             {input(), weight(), bias(), lora_a(), lora_b(), scale(), dropout(), seed()},
                             check,
                             [](const Call& call, A& args) -> Napi::Value {
                               float *output, *hidden;
                               Napi::Object result = Napi::Object::New(call.env);
                               result.Set("output", call.output(args.output_shape, &output));
                               result.Set("hidden", call.output(matrix(args.dims.n, args.dims.r), &hidden));
                               call.backend.lora_forward({.output = output,
                                                          .hidden = hidden,
                                                          .input = args.input->data(),
                                                          .weight = args.weight->data(),
                                                          .bias = args.data(args.bias),
                                                          .lora_a = args.lora_a->data(),
                                                          .lora_b = args.lora_b->data(),
                                                          .dims = args.dims,
                                                          .scale = args.scale,
                                                          .dropout = args.branch(),
                                                          .precision = gemm_precision()});
                               return result;
                             }};

// [sync] loraBackward({ gradOutput, input, weight, bias?, loraA, loraB, hidden, scale, dropout, seed, needs? })
//   -> { input?, loraA?, loraB?, bias? }
const OpSpec<A> kLoraBackward{"loraBackward",
                              Runs::kAny,
                              kernel<&ops::Backend::lora_backward>,
                              {grad_output(), input(), weight(), bias(), lora_a(), lora_b(),
                               tensor<&A::hidden>("hidden"), scale(), dropout(), seed(), needs()},
                              check_backward,
                              [](const Call& call, A& args) -> Napi::Value {
                                Grads grads = allocate_grads(call, args, args.needs, false);
                                call.backend.lora_backward({.grads = grads.pointers,
                                                            .grad_output = args.grad_output->data(),
                                                            .input = args.input->data(),
                                                            .weight = args.weight->data(),
                                                            .lora_a = args.lora_a->data(),
                                                            .lora_b = args.lora_b->data(),
                                                            .hidden = args.hidden->data(),
                                                            .dims = args.dims,
                                                            .scale = args.scale,
                                                            .dropout = args.branch(),
                                                            .precision = gemm_precision()});
                                return grads.object;
                              }};

// [sync] doraWeightNorm({ weight, loraA, loraB, scale, eps }) -> norm [M] = max(||W0 + s B A||_row, eps)
const OpSpec<A> kDoraWeightNorm{"doraWeightNorm",
                                Runs::kAny,
                                kernel<&ops::Backend::dora_norm>,
                                {weight(), lora_a(), lora_b(), scale(), eps()},
                                check,
                                [](const Call& call, A& args) -> Napi::Value {
                                  float* norm;
                                  Napi::Object result = call.output(vector(args.dims.m), &norm);
                                  call.backend.dora_norm({.norm = norm,
                                                          .weight = args.weight->data(),
                                                          .weight_sq_norms = args.weight->row_sq_norms(),
                                                          .lora_a = args.lora_a->data(),
                                                          .lora_b = args.lora_b->data(),
                                                          .dims = args.dims,
                                                          .scale = args.scale,
                                                          .eps = args.eps});
                                  return result;
                                }};

// [sync] adapterMerge({ weight, loraA, loraB, magnitude?, scale, eps }) -> merged [M,K]: (m / n) ⊙ (W0 + s B A) with
// a magnitude (DoRA), W0 + s B A without (LoRA). CPU only.
const OpSpec<A> kAdapterMerge{
    "adapterMerge",
    Runs::kCpu,
    kernel<&ops::Backend::adapter_merge>,
    {weight(), lora_a(), lora_b(), optional_magnitude(), scale(), eps()},
    check,
    [](const Call& call, A& args) -> Napi::Value {
      float* merged;
      Napi::Object result = call.output(matrix(args.dims.m, args.dims.k), &merged);
      call.backend.adapter_merge({.merged = merged,
                                  .weight = args.weight->data(),
                                  .weight_sq_norms = args.magnitude != nullptr ? args.weight->row_sq_norms() : nullptr,
                                  .lora_a = args.lora_a->data(),
                                  .lora_b = args.lora_b->data(),
                                  .magnitude = args.data(args.magnitude),
                                  .dims = args.dims,
                                  .scale = args.scale,
                                  .eps = args.eps});
      return result;
    }};

// [sync] adapterUnmerge({ merged, loraA, loraB, magnitude?, norm?, scale }) -> weight [M,K]. DoRA needs the norm from
// before merging (doraWeightNorm) and non-zero magnitudes. CPU only. Throws RangeError for a zero magnitude.
const OpSpec<A> kAdapterUnmerge{
    "adapterUnmerge",
    Runs::kCpu,
    kernel<&ops::Backend::adapter_unmerge>,
    {tensor<&A::weight>("merged"), lora_a(), lora_b(), optional_magnitude(), optional_tensor<&A::norm>("norm"),
     scale()},
    [](const Call& call, A& args) {
      check(call, args);
      if ((args.magnitude == nullptr) != (args.norm == nullptr)) {
        throw bidora::TypeError(std::string(call.fn) +
                                ": magnitude and norm go together (DoRA) or are both absent (LoRA)");
      }
      check_saved(call, "norm", args.norm, vector(args.dims.m));
      for (int64_t j = 0; args.magnitude != nullptr && j < args.dims.m; ++j) {
        if (args.magnitude->data()[j] == 0.0f) {
          call.fail("magnitude[" + std::to_string(j) +
                    "] is 0, so that row of the merged weight no longer holds its direction");
        }
      }
    },
    [](const Call& call, A& args) -> Napi::Value {
      float* weight;
      Napi::Object result = call.output(matrix(args.dims.m, args.dims.k), &weight);
      call.backend.adapter_unmerge({.weight = weight,
                                    .merged = args.weight->data(),
                                    .lora_a = args.lora_a->data(),
                                    .lora_b = args.lora_b->data(),
                                    .magnitude = args.data(args.magnitude),
                                    .norm = args.data(args.norm),
                                    .dims = args.dims,
                                    .scale = args.scale});
      return result;
    }};

// [sync] adapterForwardReference({ input, weight, bias?, loraA, loraB, magnitude?, scale, eps, dropout, seed })
//   -> output. The plain double-precision reference (forms V); magnitude absent = LoRA. CPU only.
const OpSpec<A> kForwardReference{
    "adapterForwardReference",
    Runs::kCpu,
    kernel<&ops::Backend::adapter_forward_reference>,
    {input(), weight(), bias(), lora_a(), lora_b(), optional_magnitude(), scale(), eps(), dropout(), seed()},
    check,
    [](const Call& call, A& args) -> Napi::Value {
      float* output;
      Napi::Object result = call.output(args.output_shape, &output);
      call.backend.adapter_forward_reference({.output = output,
                                              .input = args.input->data(),
                                              .weight = args.weight->data(),
                                              .bias = args.data(args.bias),
                                              .lora_a = args.lora_a->data(),
                                              .lora_b = args.lora_b->data(),
                                              .magnitude = args.data(args.magnitude),
                                              .dims = args.dims,
                                              .scale = args.scale,
                                              .eps = args.eps,
                                              .dropout = args.branch()});
      return result;
    }};

// [sync] adapterBackwardReference({ gradOutput, input, weight, bias?, loraA, loraB, magnitude?, scale, eps,
//   detachNorm?, dropout, seed }) -> { input, loraA, loraB, magnitude?, bias? }. CPU only.
const OpSpec<A> kBackwardReference{"adapterBackwardReference",
                                   Runs::kCpu,
                                   kernel<&ops::Backend::adapter_backward_reference>,
                                   {grad_output(), input(), weight(), bias(), lora_a(), lora_b(), optional_magnitude(),
                                    scale(), eps(), detach_norm(), dropout(), seed()},
                                   check,
                                   [](const Call& call, A& args) -> Napi::Value {
                                     Grads grads = allocate_grads(call, args, Needs{}, args.magnitude != nullptr);
                                     call.backend.adapter_backward_reference({.grads = grads.pointers,
                                                                              .grad_output = args.grad_output->data(),
                                                                              .input = args.input->data(),
                                                                              .weight = args.weight->data(),
                                                                              .lora_a = args.lora_a->data(),
                                                                              .lora_b = args.lora_b->data(),
                                                                              .magnitude = args.data(args.magnitude),
                                                                              .dims = args.dims,
                                                                              .scale = args.scale,
                                                                              .eps = args.eps,
                                                                              .detach_norm = args.detach_norm,
                                                                              .dropout = args.branch()});
                                     return grads.object;
                                   }};

}  // namespace

void register_adapter(Napi::Env env, Napi::Object exports) {
  for (const OpSpec<A>* spec : {&kDoraForward, &kDoraBackward, &kLoraForward, &kLoraBackward, &kDoraWeightNorm,
                                &kAdapterMerge, &kAdapterUnmerge, &kForwardReference, &kBackwardReference}) {
    register_op(env, exports, *spec);
  }
}

}  // namespace bidora::binding
