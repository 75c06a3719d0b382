// The optimizer kernels over tensor lists and the orthogonality regulariser, declared with op.h. Lists are checked
// pairwise here; the dispatcher bumps the versions of written lists and refuses storage they share with any other.
// orthogonalityPenalty runs on the CPU only (lib/ops/regularizer.ts serves GPU layers).
#include <string>

#include "op.h"

namespace bidora::binding {

namespace {

std::string element(const char* name, size_t position) {
  return std::string(name) + "[" + std::to_string(position) + "]";
}

// `other` must hold as many tensors as `first`, each of the same shape as its partner.
void check_pairs(const Call& call, const char* first_name, const TensorList& first, const char* other_name,
                 const TensorList& other) {
  if (other.size() != first.size()) {
    call.fail(std::string(other_name) + " has " + std::to_string(other.size()) + " tensors but " + first_name +
              " has " + std::to_string(first.size()));
  }
  for (size_t position = 0; position < first.size(); ++position) {
    const Shape& expected = first.handles[position]->shape();
    const Shape& actual = other.handles[position]->shape();
    if (actual != expected) {
      const std::string a = element(first_name, position), b = element(other_name, position);
      call.fail(b + " must have the shape of " + a + ", but " + describe(a.c_str(), expected) + " and " +
                describe(b.c_str(), actual));
    }
  }
}

// [sync] adamwStep({ params, grads, expAvg, expAvgSq, lr, beta1, beta2, eps, weightDecay, step }): void
// One AdamW update (PyTorch's rule, ../common/optim_math.h) of every params[i] in place, with its moments expAvg[i]
// and expAvgSq[i] (zeros before the first step); step: the update's number, 1 first. Throws TypeError (not an array
// of live tensors, tensors on different devices, not a number), RangeError (lists of different lengths, a shape that
// differs from its param's, shared storage, lr/eps/weightDecay negative, a beta outside [0, 1), step below 1).
struct AdamwArgs {
  TensorList params, grads, exp_avg, exp_avg_sq;
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};

const OpSpec<AdamwArgs> kAdamw{
    "adamwStep",
    Runs::kAny,
    kernel<&ops::Backend::adamw_step>,
    {written_list<&AdamwArgs::params>("params"), tensor_list<&AdamwArgs::grads>("grads"),
     written_list<&AdamwArgs::exp_avg>("expAvg"), written_list<&AdamwArgs::exp_avg_sq>("expAvgSq"),
     number<&AdamwArgs::lr>("lr", kNonNegative), number<&AdamwArgs::beta1>("beta1", half_open(0, 1)),
     number<&AdamwArgs::beta2>("beta2", half_open(0, 1)), number<&AdamwArgs::eps>("eps", kNonNegative),
     number<&AdamwArgs::weight_decay>("weightDecay", kNonNegative),
     integer<&AdamwArgs::step>("step", 1, kMaxSafeInteger)},
    [](const Call& call, AdamwArgs& args) {
      check_pairs(call, "params", args.params, "grads", args.grads);
      check_pairs(call, "params", args.params, "expAvg", args.exp_avg);
      check_pairs(call, "params", args.params, "expAvgSq", args.exp_avg_sq);
    },
    [](const Call& call, AdamwArgs& args) -> Napi::Value {
      call.backend.adamw_step({args.params.data.data(), args.exp_avg.data.data(), args.exp_avg_sq.data.data(),
                               args.grads.read(), args.params.lengths.data(), static_cast<int64_t>(args.params.size()),
                               args.lr, args.beta1, args.beta2, args.eps, args.weight_decay, args.step});
      return call.env.Undefined();
    }};

// [sync] sgdStep({ params, grads, momentumBuffers?, lr, momentum, weightDecay, nesterov? }): void
// One SGD update (PyTorch's rule with dampening 0) of every params[i] in place. momentumBuffers: zeros before the
// first step (which then sets them to the gradient, as PyTorch does); needed when momentum is non-zero. Throws
// TypeError, RangeError (as adamwStep; momentum negative, nesterov without momentum, momentum without buffers).
struct SgdArgs {
  TensorList params, grads, buffers;
  double lr, momentum, weight_decay;
  bool nesterov = false;
};

const OpSpec<SgdArgs> kSgd{
    "sgdStep",
    Runs::kAny,
    kernel<&ops::Backend::sgd_step>,
    {written_list<&SgdArgs::params>("params"), tensor_list<&SgdArgs::grads>("grads"),
     written_list<&SgdArgs::buffers>("momentumBuffers", true), number<&SgdArgs::lr>("lr", kNonNegative),
     number<&SgdArgs::momentum>("momentum", kNonNegative), number<&SgdArgs::weight_decay>("weightDecay", kNonNegative),
     boolean<&SgdArgs::nesterov>("nesterov")},
    [](const Call& call, SgdArgs& args) {
      if (args.nesterov && args.momentum == 0) call.fail("nesterov needs a non-zero momentum");
      if (args.momentum != 0 && !args.buffers.present) {
        throw bidora::TypeError(std::string(call.fn) +
                                ": momentumBuffers must be an array of Tensors when momentum is " +
                                std::to_string(args.momentum));
      }
      check_pairs(call, "params", args.params, "grads", args.grads);
      if (args.buffers.present) check_pairs(call, "params", args.params, "momentumBuffers", args.buffers);
    },
    [](const Call& call, SgdArgs& args) -> Napi::Value {
      call.backend.sgd_step({args.params.data.data(), args.buffers.present ? args.buffers.data.data() : nullptr,
                             args.grads.read(), args.params.lengths.data(), static_cast<int64_t>(args.params.size()),
                             args.lr, args.momentum, args.weight_decay, args.nesterov});
      return call.env.Undefined();
    }};

// [sync] axpyList({ ys, alpha, xs }): void - ys[i] += alpha * xs[i] in place, for every pair. Throws TypeError (as
// adamwStep), RangeError (lists of different lengths, shapes that differ pairwise, a y sharing storage).
struct AxpyListArgs {
  TensorList ys, xs;
  float alpha;
};

const OpSpec<AxpyListArgs> kAxpyList{
    "axpyList",
    Runs::kAny,
    kernel<&ops::Backend::axpy_list>,
    {written_list<&AxpyListArgs::ys>("ys"), number<&AxpyListArgs::alpha>("alpha"),
     tensor_list<&AxpyListArgs::xs>("xs")},
    [](const Call& call, AxpyListArgs& args) { check_pairs(call, "ys", args.ys, "xs", args.xs); },
    [](const Call& call, AxpyListArgs& args) -> Napi::Value {
      call.backend.axpy_list({args.ys.data.data(), args.xs.read(), args.ys.lengths.data(),
                              static_cast<int64_t>(args.ys.size()), args.alpha});
      return call.env.Undefined();
    }};

// [sync] scaleList({ tensors, factor }): void - tensors[i] *= factor in place. Throws TypeError (as adamwStep),
// RangeError (factor not finite, one storage listed twice).
struct ScaleListArgs {
  TensorList tensors;
  float factor;
};

const OpSpec<ScaleListArgs> kScaleList{
    "scaleList",
    Runs::kAny,
    kernel<&ops::Backend::scale_list>,
    {written_list<&ScaleListArgs::tensors>("tensors"), number<&ScaleListArgs::factor>("factor")},
    nullptr,
    [](const Call& call, ScaleListArgs& args) -> Napi::Value {
      call.backend.scale_list({args.tensors.data.data(), args.tensors.lengths.data(),
                               static_cast<int64_t>(args.tensors.size()), args.factor});
      return call.env.Undefined();
    }};

// [sync] combineHypergradient({ direct, plus, minus, factor }): void - direct[i] -= factor * (plus[i] - minus[i]) in
// place (BiDoRA: g − ξ (g⁺ − g⁻) / (2ε), factor = ξ / (2ε)). Throws TypeError (as adamwStep), RangeError (as
// axpyList).
struct CombineArgs {
  TensorList direct, plus, minus;
  float factor;
};

const OpSpec<CombineArgs> kCombine{
    "combineHypergradient",
    Runs::kAny,
    kernel<&ops::Backend::combine_hypergradient>,
    {written_list<&CombineArgs::direct>("direct"), tensor_list<&CombineArgs::plus>("plus"),
     tensor_list<&CombineArgs::minus>("minus"), number<&CombineArgs::factor>("factor")},
    [](const Call& call, CombineArgs& args) {
      check_pairs(call, "direct", args.direct, "plus", args.plus);
      check_pairs(call, "direct", args.direct, "minus", args.minus);
    },
    [](const Call& call, CombineArgs& args) -> Napi::Value {
      call.backend.combine_hypergradient({args.direct.data.data(), args.plus.read(), args.minus.read(),
                                          args.direct.lengths.data(), static_cast<int64_t>(args.direct.size()),
                                          args.factor});
      return call.env.Undefined();
    }};

Shape matrix(int64_t rows, int64_t cols) { return Shape::from({rows, cols}, "matrix"); }

// [sync] orthogonalityPenalty({ weight, weightGram, loraA, loraB, scale, eps, computeGradients? })
//   -> { value: number, gradA?: TensorHandle [R,K], gradB?: TensorHandle [M,R] }
// BiDoRA's F = ||D Dᵀ − I||_F for D the row-normalised W0 + s B A (norms floored at eps), and dF/dA, dF/dB (unless
// computeGradients is false), from weight W0 [M,K], weightGram = W0 W0ᵀ [M,M], loraA [R,K] (R ≥ 1), loraB [M,R];
// never forms an [M,K] matrix. CPU only. Throws TypeError (not a live CPU tensor, not a number), RangeError (shapes
// that do not fit, scale not finite, eps not positive).
struct PenaltyArgs {
  TensorHandle *weight, *weight_gram, *lora_a, *lora_b;
  float scale, eps;
  bool compute_gradients = true;
};

const OpSpec<PenaltyArgs> kPenalty{
    "orthogonalityPenalty",
    Runs::kCpu,
    kernel<&ops::Backend::orthogonality_penalty>,
    {tensor<&PenaltyArgs::weight>("weight"), tensor<&PenaltyArgs::weight_gram>("weightGram"),
     tensor<&PenaltyArgs::lora_a>("loraA"), tensor<&PenaltyArgs::lora_b>("loraB"), number<&PenaltyArgs::scale>("scale"),
     number<&PenaltyArgs::eps>("eps", kPositive), boolean<&PenaltyArgs::compute_gradients>("computeGradients")},
    [](const Call& call, PenaltyArgs& args) {
      const Shape& w = args.weight->shape();
      if (w.rank != 2) call.fail("expected weight of rank 2 (out, in), but " + describe("weight", w));
      const int64_t m = w[0], k = w[1];
      const Shape& a = args.lora_a->shape();
      if (a.rank != 2 || a[1] != k || a[0] < 1) {
        call.fail("expected loraA of shape [r, " + std::to_string(k) + "] with r >= 1, but " + describe("loraA", a) +
                  " and " + describe("weight", w));
      }
      const int64_t r = a[0];
      if (args.lora_b->shape() != matrix(m, r)) {
        call.fail("expected loraB of shape " + matrix(m, r).str() + ", but " + describe("loraB", args.lora_b->shape()) +
                  " and " + describe("loraA", a) + " and " + describe("weight", w));
      }
      if (args.weight_gram->shape() != matrix(m, m)) {
        call.fail("expected weightGram (W0 W0ᵀ) of shape " + matrix(m, m).str() + ", but " +
                  describe("weightGram", args.weight_gram->shape()) + " and " + describe("weight", w));
      }
    },
    [](const Call& call, PenaltyArgs& args) -> Napi::Value {
      const int64_t m = args.weight->shape()[0], k = args.weight->shape()[1], r = args.lora_a->shape()[0];
      Napi::Object result = Napi::Object::New(call.env);
      float* grad_a = nullptr;
      float* grad_b = nullptr;
      if (args.compute_gradients) {
        result.Set("gradA", call.output(args.lora_a->shape(), &grad_a));
        result.Set("gradB", call.output(args.lora_b->shape(), &grad_b));
      }
      double value = 0;
      call.backend.orthogonality_penalty({&value, grad_a, grad_b, args.weight->data(), args.weight_gram->data(),
                                          args.lora_a->data(), args.lora_b->data(), m, k, r, args.scale, args.eps});
      result.Set("value", Napi::Number::New(call.env, value));
      return result;
    }};

}  // namespace

void register_optim(Napi::Env env, Napi::Object exports) {
  register_op(env, exports, kAdamw);
  register_op(env, exports, kSgd);
  register_op(env, exports, kAxpyList);
  register_op(env, exports, kScaleList);
  register_op(env, exports, kCombine);
  register_op(env, exports, kPenalty);
}

}  // namespace bidora::binding
