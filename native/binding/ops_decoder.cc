// The row and gate ops of decoder language models (Llama's RMSNorm and SwiGLU MLP), declared with op.h; shapes
// checked by ../core/shape_rules. Each returns fresh tensors on its tensors' device.
#include "op.h"

namespace bidora::binding {

namespace {

// [sync] rmsNorm({ x, weight, eps > 0 }) -> { output, rstd }: weight ⊙ x / sqrt(mean(x²) + eps) over the last axis D
// of x, weight [D]; rstd [rows] is saved for rmsNormBackward({ gradOutput, x, weight, rstd }) -> { input, weight }.
struct RmsNormArgs {
  TensorHandle *x, *weight, *grad_output, *rstd;
  float eps;
  rules::Rows rows;
};

using R = RmsNormArgs;
void rms_rows(const char* fn, R& args) {  // gradOutput and rstd are null in the forward
  const auto shape = [](TensorHandle* tensor) { return tensor != nullptr ? &tensor->shape() : nullptr; };
  args.rows = rules::rms_norm(fn, args.x->shape(), args.weight->shape(), shape(args.grad_output), shape(args.rstd));
}

const OpSpec<R> kRmsNorm(
    "rmsNorm", Runs::kAny, kernel<&ops::Backend::rms_norm>,
    {arg<&R::x>("x"), arg<&R::weight>("weight"), arg<&R::eps>("eps", kPositive)}, rms_rows,
    [](const Call& call, R& args) -> Napi::Value {
      float *out, *rstd;
      Napi::Object result =
          call.outputs({{"output", args.x->shape(), &out}, {"rstd", rules::vector(args.rows.rows), &rstd}});
      call.backend.rms_norm({out, rstd, args.x->data(), args.weight->data(), args.rows.rows, args.rows.d, args.eps});
      return result;
    });

const OpSpec<R> kRmsNormBackward(
    "rmsNormBackward", Runs::kAny, kernel<&ops::Backend::rms_norm_backward>,
    {arg<&R::grad_output>("gradOutput"), arg<&R::x>("x"), arg<&R::weight>("weight"), arg<&R::rstd>("rstd")}, rms_rows,
    [](const Call& call, R& args) -> Napi::Value {
      float *input, *weight;
      Napi::Object result =
          call.outputs({{"input", args.x->shape(), &input}, {"weight", args.weight->shape(), &weight}});
      call.backend.rms_norm_backward({input, weight, args.grad_output->data(), args.x->data(), args.weight->data(),
                                      args.rstd->data(), args.rows.rows, args.rows.d});
      return result;
    });

// [sync] swiglu({ gate, up }): silu(gate) ⊙ up, shaped like both; swigluBackward({ gate, up, gradOutput }) -> { gate,
// up }: both inputs' gradients.
struct SwigluArgs {
  TensorHandle *gate, *up, *grad_output;
};

using S = SwigluArgs;
void same_gate_shapes(const char* fn, S& args) {
  rules::same_shape(fn, "gate", args.gate->shape(), "up", args.up->shape());
  if (args.grad_output != nullptr)
    rules::same_shape(fn, "gate", args.gate->shape(), "gradOutput", args.grad_output->shape());
}

const OpSpec<S> kSwiglu("swiglu", Runs::kAny, kernel<&ops::Backend::swiglu>, {arg<&S::gate>("gate"), arg<&S::up>("up")},
                        same_gate_shapes, [](const Call& call, S& args) -> Napi::Value {
                          float* out;
                          Napi::Object result = call.output(args.gate->shape(), &out);
                          call.backend.swiglu({out, args.gate->data(), args.up->data(), args.gate->numel()});
                          return result;
                        });

const OpSpec<S> kSwigluBackward("swigluBackward", Runs::kAny, kernel<&ops::Backend::swiglu_backward>,
                                {arg<&S::gate>("gate"), arg<&S::up>("up"), arg<&S::grad_output>("gradOutput")},
                                same_gate_shapes, [](const Call& call, S& args) -> Napi::Value {
                                  float *gate, *up;
                                  const Shape& shape = args.gate->shape();
                                  Napi::Object result = call.outputs({{"gate", shape, &gate}, {"up", shape, &up}});
                                  call.backend.swiglu_backward({gate, up, args.gate->data(), args.up->data(),
                                                                args.grad_output->data(), args.gate->numel()});
                                  return result;
                                });

}  // namespace

void register_decoder(Napi::Env env, Napi::Object exports) {
  register_ops(env, exports, kRmsNorm, kRmsNormBackward, kSwiglu, kSwigluBackward);
}

}  // namespace bidora::binding
