// The row and gate ops of decoder language models (Llama's RMSNorm and SwiGLU MLP), declared with op.h; shapes
// checked by ../core/shape_rules.
#include "op.h"

namespace bidora::binding {

namespace {

// [sync] rmsNorm -> { output, rstd }: weight ⊙ x / sqrt(mean(x²) + eps) over the last axis, rstd [rows] saved for
// rmsNormBackward -> { input, weight }.
struct RmsNormArgs {
  TensorHandle *x, *weight, *grad_output, *rstd;
  float eps;
  rules::Rows rows;
  Shape rows_shape;
  float *out, *out_rstd, *grad_weight;
};
using R = RmsNormArgs;

void rms_rows(const char* fn, R& args) {  // gradOutput and rstd are null in the forward
  args.rows =
      rules::rms_norm(fn, args.x->shape(), args.weight->shape(), shape_of(args.grad_output), shape_of(args.rstd));
  args.rows_shape = rules::vector(args.rows.rows);
}

const OpSpec<R> kRmsNorm("rmsNorm", Runs::kAny, kernel<&ops::Backend::rms_norm>,
                         {arg<&R::x>("x"), arg<&R::weight>("weight"), arg<&R::eps>("eps", kPositive),
                          out<&R::out, &R::x>(), out<&R::out_rstd, &R::rows_shape>("rstd")},
                         rms_rows, [](const Call& call, R& args) {
                           call.backend.rms_norm({args.out, args.out_rstd, args.x->data(), args.weight->data(),
                                                  args.rows.rows, args.rows.d, args.eps});
                         });
const OpSpec<R> kRmsNormBackward("rmsNormBackward", Runs::kAny, kernel<&ops::Backend::rms_norm_backward>,
                                 {arg<&R::grad_output>("gradOutput"), arg<&R::x>("x"), arg<&R::weight>("weight"),
                                  arg<&R::rstd>("rstd"), out<&R::out, &R::x>("input"),
                                  out<&R::grad_weight, &R::weight>("weight")},
                                 rms_rows, [](const Call& call, R& args) {
                                   call.backend.rms_norm_backward({.grad_x = args.out,
                                                                   .grad_weight = args.grad_weight,
                                                                   .grad_out = args.grad_output->data(),
                                                                   .x = args.x->data(),
                                                                   .weight = args.weight->data(),
                                                                   .rstd = args.rstd->data(),
                                                                   .rows = args.rows.rows,
                                                                   .d = args.rows.d});
                                 });

// [sync] swiglu: silu(gate) ⊙ up; swigluBackward -> { gate, up }.
struct SwigluArgs {
  TensorHandle *gate, *up, *grad_output;
  float *out, *grad_up;
};
using S = SwigluArgs;

void same_gate_shapes(const char* fn, S& args) {
  rules::same_shape(fn, "gate", args.gate->shape(), "up", args.up->shape());
  if (args.grad_output != nullptr) {
    rules::same_shape(fn, "gate", args.gate->shape(), "gradOutput", args.grad_output->shape());
  }
}

const OpSpec<S> kSwiglu(
    "swiglu", Runs::kAny, kernel<&ops::Backend::swiglu>,
    {arg<&S::gate>("gate"), arg<&S::up>("up"), out<&S::out, &S::gate>()}, same_gate_shapes,
    [](const Call& call, S& args) {
      call.backend.swiglu({.out = args.out, .gate = args.gate->data(), .up = args.up->data(), .n = args.gate->numel()});
    });
const OpSpec<S> kSwigluBackward("swigluBackward", Runs::kAny, kernel<&ops::Backend::swiglu_backward>,
                                {arg<&S::gate>("gate"), arg<&S::up>("up"), arg<&S::grad_output>("gradOutput"),
                                 out<&S::out, &S::gate>("gate"), out<&S::grad_up, &S::up>("up")},
                                same_gate_shapes, [](const Call& call, S& args) {
                                  call.backend.swiglu_backward({.grad_gate = args.out,
                                                                .grad_up = args.grad_up,
                                                                .gate = args.gate->data(),
                                                                .up = args.up->data(),
                                                                .grad_out = args.grad_output->data(),
                                                                .n = args.gate->numel()});
                                });

}  // namespace

}  // namespace bidora::binding
