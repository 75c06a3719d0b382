// The fused DoRA and LoRA layer, declared with op.h: every adapter op reads its subset of one argument struct, which
// one shape rule relates (rules::adapter) and one function hands to the backend (layer()).
#include <tuple>

#include "op.h"

namespace bidora::binding {

namespace {

// Which gradients a backward computes: { input, loraA, loraB, magnitude, bias } booleans, all true when absent.
struct Needs {
  bool input = true, lora_a = true, lora_b = true, magnitude = true, bias = true;
};

Needs parse(const char* fn, const char* name, Napi::Value value, Needs*) {
  Needs needs;
  if (missing(value)) return needs;
  if (!value.IsObject()) throw bidora::TypeError(where(fn, name) + " must be an object of booleans");
  Napi::Object object = value.As<Napi::Object>();
  for (const auto& [key, slot] :
       {std::pair{"input", &needs.input}, std::pair{"loraA", &needs.lora_a}, std::pair{"loraB", &needs.lora_b},
        std::pair{"magnitude", &needs.magnitude}, std::pair{"bias", &needs.bias}}) {
    Napi::Value entry = object.Get(key);
    if (!entry.IsUndefined()) *slot = read_boolean(fn, (std::string(name) + "." + key).c_str(), entry);
  }
  return needs;
}

// Every argument an adapter op takes; each op declares the ones it reads. `layer` comes from the shape rule.
struct A {
  TensorHandle *grad_output, *input, *weight, *bias, *lora_a, *lora_b, *magnitude;
  TensorHandle *combined, *hidden, *norm, *weight_lora_a, *lora_gram;  // what a forward saved for its backward
  float scale, eps = 1, dropout;
  uint64_t seed;
  bool detach_norm = true;
  Needs needs;
  rules::Layer layer;
  Shape m, mk, nr;  // [M], [M,K] and [N,R], from the rule
  float *out, *hidden_out;
};

void check(const char* fn, A& op) {
  op.layer = rules::adapter(fn, shape_of(op.input), op.weight->shape(), shape_of(op.bias), op.lora_a->shape(),
                            op.lora_b->shape(), shape_of(op.magnitude), shape_of(op.grad_output));
  const auto [n, k, m, r] = op.layer.dims;
  TensorHandle* const saved[] = {op.combined, op.hidden, op.norm, op.weight_lora_a, op.lora_gram};
  for (int i = 0; i < 5; ++i) {
    rules::saved(fn, op.layer.dora_saved[i].name, shape_of(saved[i]), op.layer.dora_saved[i].shape);
  }
  op.m = rules::vector(m);
  op.mk = rules::matrix(m, k);
  op.nr = rules::matrix(n, r);
}

// The layer as the backend reads it. ||W0_j||² is cached on the weight's storage while W0 is unchanged.
ops::AdapterLayer layer(const A& op, bool needs_norm) {
  return {.input = data_of(op.input),
          .weight = op.weight->weight().f32,
          .weight_sq_norms = needs_norm ? op.weight->row_sq_norms(cpu_backend()) : nullptr,
          .bias = data_of(op.bias),
          .lora_a = op.lora_a->data(),
          .lora_b = op.lora_b->data(),
          .magnitude = data_of(op.magnitude),
          .dims = op.layer.dims,
          .scale = op.scale,
          .eps = op.eps,
          .dropout = {op.dropout, op.seed},
          .precision = gemm_precision(),
          .weight_bf16 = op.weight->weight().bf16};
}

// The requested gradients, allocated on the call's device, in one object beside the pointers the kernel writes.
std::pair<Napi::Object, ops::AdapterGrads> gradients(const Call& call, const A& op, const Needs& needs, bool dora) {
  const auto [n, k, m, r] = op.layer.dims;
  std::pair<Napi::Object, ops::AdapterGrads> grads{Napi::Object::New(call.env), {}};
  ops::AdapterGrads& g = grads.second;
  const std::tuple<const char*, bool, Shape, float**> wanted[] = {
      {"input", needs.input, op.input->shape(), &g.input},
      {"loraA", needs.lora_a, rules::matrix(r, k), &g.lora_a},
      {"loraB", needs.lora_b, rules::matrix(m, r), &g.lora_b},
      {"magnitude", dora && needs.magnitude, rules::vector(m), &g.magnitude},
      {"bias", needs.bias && op.bias != nullptr, rules::vector(m), &g.bias}};
  for (const auto& [key, want, shape, slot] : wanted) {
    if (want) grads.first.Set(key, call.output(shape, slot));
  }
  return grads;
}

Field<A> grad_output() { return arg<&A::grad_output>("gradOutput"); }
Field<A> magnitude(Flags flags = kRequired) { return arg<&A::magnitude>("magnitude", flags); }
Field<A> hidden() { return arg<&A::hidden>("hidden"); }
Field<A> eps() { return arg<&A::eps>("eps", kPositive); }
Field<A> detach_norm() { return arg<&A::detach_norm>("detachNorm"); }
Field<A> needs() { return arg<&A::needs>("needs", kOptional); }
// The layer's weights, with the input and the branch's dropout unless `weights_only`, and `more` between them.
std::vector<Field<A>> layer_fields(std::initializer_list<Field<A>> more, bool weights_only = false) {
  std::vector<Field<A>> fields{arg<&A::weight>("weight", kBf16), arg<&A::lora_a>("loraA"), arg<&A::lora_b>("loraB"),
                               arg<&A::scale>("scale")};
  fields.insert(fields.end(), more);
  if (weights_only) return fields;
  fields.insert(fields.end(),
                {arg<&A::input>("input"), arg<&A::bias>("bias", kOptional),
                 arg<&A::dropout>("dropout", half_open(0, 1)), arg<&A::seed>("seed", closed(0, kMaxSafeInteger))});
  return fields;
}

// [sync] doraForward returns the output and what doraBackward needs; doraBackward consumes (overwrites) `combined`.
const OpSpec<A> kDoraForward(
    "doraForward", Runs::kAny, kernel<&ops::Backend::dora_forward>, layer_fields({magnitude(), eps()}), check,
    [](const Call& call, A& op) -> Napi::Value {
      ops::DoraSaved s;
      float** const saved[] = {&s.combined, &s.hidden, &s.norm, &s.weight_lora_a, &s.lora_gram};
      Napi::Object result = Napi::Object::New(call.env);
      result.Set("output", call.output(op.layer.output, &op.out));
      for (int i = 0; i < 5; ++i) {
        result.Set(op.layer.dora_saved[i].name, call.output(op.layer.dora_saved[i].shape, saved[i]));
      }
      call.backend.dora_forward({op.out, s, layer(op, true)});
      return result;
    });
const OpSpec<A> kDoraBackward(
    "doraBackward", Runs::kAny, kernel<&ops::Backend::dora_backward>,
    layer_fields({grad_output(), magnitude(), arg<&A::combined>("combined", kWritten), hidden(), arg<&A::norm>("norm"),
                  arg<&A::weight_lora_a>("weightLoraA"), arg<&A::lora_gram>("loraGram"), eps(), detach_norm(),
                  needs()}),
    check, [](const Call& call, A& op) -> Napi::Value {
      auto [object, grads] = gradients(call, op, op.needs, true);
      const ops::DoraSaved saved{.combined = op.combined->data(),
                                 .hidden = op.hidden->data(),
                                 .norm = op.norm->data(),
                                 .weight_lora_a = op.weight_lora_a->data(),
                                 .lora_gram = op.lora_gram->data()};
      call.backend.dora_backward({grads, op.grad_output->data(), saved, layer(op, false), op.detach_norm});
      return object;
    });
const OpSpec<A> kLoraForward(
    "loraForward", Runs::kAny, kernel<&ops::Backend::lora_forward>,
    layer_fields({out<&A::out, &A::layer, &rules::Layer::output>(), out<&A::hidden_out, &A::nr>("hidden")}), check,
    [](const Call& call, A& op) {
      call.backend.lora_forward({.output = op.out, .hidden = op.hidden_out, .layer = layer(op, false)});
    });
const OpSpec<A> kLoraBackward("loraBackward", Runs::kAny, kernel<&ops::Backend::lora_backward>,
                              layer_fields({grad_output(), hidden(), needs()}), check,
                              [](const Call& call, A& op) -> Napi::Value {
                                auto [object, grads] = gradients(call, op, op.needs, false);
                                call.backend.lora_backward({.grads = grads,
                                                            .grad_output = op.grad_output->data(),
                                                            .hidden = op.hidden->data(),
                                                            .layer = layer(op, false)});
                                return object;
                              });

// [sync] Merge and unmerge: DoRA with a magnitude (unmerge needs the norm from before merging), LoRA without.
const OpSpec<A> kDoraWeightNorm("doraWeightNorm", Runs::kAny, kernel<&ops::Backend::dora_norm>,
                                layer_fields({eps(), out<&A::out, &A::m>()}, true), check, [](const Call& call, A& op) {
                                  call.backend.dora_norm({op.out, layer(op, true)});
                                });
// A bfloat16 weight merges into bfloat16 and unmerges from it (rounded to nearest even).
Bf16* as_bits(float* words, TensorHandle* like) { return like->dtype() == DType::kBfloat16 ? (Bf16*)words : nullptr; }
float* as_floats(float* words, TensorHandle* like) { return like->dtype() == DType::kFloat32 ? words : nullptr; }
const OpSpec<A> kAdapterMerge("adapterMerge", Runs::kCpu, kernel<&ops::Backend::adapter_merge>,
                              layer_fields({magnitude(kOptional), eps()}, true), check,
                              [](const Call& call, A& op) -> Napi::Value {
                                Napi::Object merged = call.output(op.mk, &op.out, op.weight->dtype());
                                call.backend.adapter_merge({as_floats(op.out, op.weight),
                                                            layer(op, op.magnitude != nullptr),
                                                            as_bits(op.out, op.weight)});
                                return merged;
                              });
const OpSpec<A> kAdapterUnmerge(
    "adapterUnmerge", Runs::kCpu, kernel<&ops::Backend::adapter_unmerge>,
    {arg<&A::weight>("merged", kBf16), arg<&A::lora_a>("loraA"), arg<&A::lora_b>("loraB"), arg<&A::scale>("scale"),
     magnitude(kOptional), arg<&A::norm>("norm", kOptional)},
    [](const char* fn, A& op) {
      check(fn, op);
      rules::unmerge(fn, data_of(op.magnitude), op.norm != nullptr, op.layer.dims.m);
    },
    [](const Call& call, A& op) -> Napi::Value {
      Napi::Object weight = call.output(op.mk, &op.out, op.weight->dtype());
      const ops::AdapterLayer merged = layer(op, false);
      call.backend.adapter_unmerge(
          {as_floats(op.out, op.weight), data_of(op.norm), merged, as_bits(op.out, op.weight)});
      return weight;
    });

// [sync] The plain double-precision references, which form V = W0 + s B A (magnitude absent: LoRA).
const OpSpec<A> kForwardReference("adapterForwardReference", Runs::kCpu,
                                  kernel<&ops::Backend::adapter_forward_reference>,
                                  layer_fields({magnitude(kOptional), eps(),
                                                out<&A::out, &A::layer, &rules::Layer::output>()}),
                                  check, [](const Call& call, A& op) {
                                    call.backend.adapter_forward_reference({op.out, layer(op, false)});
                                  });
const OpSpec<A> kBackwardReference(
    "adapterBackwardReference", Runs::kCpu, kernel<&ops::Backend::adapter_backward_reference>,
    layer_fields({grad_output(), magnitude(kOptional), eps(), detach_norm()}), check,
    [](const Call& call, A& op) -> Napi::Value {
      auto [object, grads] = gradients(call, op, Needs{}, op.magnitude != nullptr);
      call.backend.adapter_backward_reference({grads, op.grad_output->data(), layer(op, false), op.detach_norm});
      return object;
    });

}  // namespace

}  // namespace bidora::binding
