// The declaration language of native ops: each op states its arguments once, by name, as fields of a plain struct;
// one generic reader pulls them out of the single JavaScript object of named arguments, checks them (TypeError or
// RangeError naming "op: argument"), checks that every tensor is on one device, and one dispatcher runs the op's body
// with the backend of that device (../common/ops.h). The op list (ops() in JavaScript) comes from the same
// declarations, so test/op-contract.test.ts can hold lib/binding.ts to them.
//
//   struct ScaleArgs { TensorHandle* a; double alpha; };
//   const OpSpec<ScaleArgs> kScale{"scale", Runs::kAny, &ops::Backend::scale,
//                                  {tensor<&ScaleArgs::a>("a"), number<&ScaleArgs::alpha>("alpha")}, nullptr, body};
#pragma once

#include <napi.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/ops.h"
#include "args.h"
#include "tensor_handle.h"

namespace bidora::binding {

constexpr int64_t kMaxSafeInteger = 9007199254740991;
constexpr int64_t kMaxInt32 = 2147483647;

// What an argument is, as the op list reports it: the TypeScript type of each kind is fixed (test/op-contract).
enum class Kind {
  kTensor,
  kTensorList,
  kNumber,
  kInteger,
  kBoolean,
  kShape,
  kInt32Array,
  kFloat32Array,
  kString,
  kFlags
};
// Where an op runs: on its tensors' device (a kernel on every backend), or on the CPU only.
enum class Runs { kAny, kCpu };

// The backends: the CPU always, CUDA in builds that have it (null otherwise).
const ops::Backend& cpu_backend();
const ops::Backend* cuda_backend();
const ops::Backend& backend_for(Device device);
// The rounding of GPU products chosen with setMatmulPrecision.
ops::Precision gemm_precision();

// The tensors of one list argument, with their data pointers and lengths as the list kernels take them.
struct TensorList {
  bool present = false;
  std::vector<TensorHandle*> handles;
  std::vector<float*> data;
  std::vector<int64_t> lengths;
  size_t size() const { return handles.size(); }
  const float* const* read() const { return data.data(); }
};

struct IntArray {  // an Int32Array viewed without copying
  const int32_t* data = nullptr;
  int64_t length = 0;
};

// Numbers: finite always; the bounds (with their openness) are checked and named in the message.
struct Bounds {
  double min = -std::numeric_limits<double>::infinity(), max = std::numeric_limits<double>::infinity();
  bool min_open = false, max_open = false;
};
constexpr Bounds kFinite{};
constexpr Bounds kPositive{0, std::numeric_limits<double>::infinity(), true, false};
constexpr Bounds kNonNegative{0, std::numeric_limits<double>::infinity(), false, false};
constexpr Bounds closed(double min, double max) { return {min, max, false, false}; }
constexpr Bounds half_open(double min, double max) { return {min, max, false, true}; }

// One argument of an op whose arguments live in `Args`.
template <typename Args>
struct Field {
  const char* name;
  Kind kind;
  bool optional;
  bool written;  // a tensor or list updated in place: versions bumped, storage never shared with another argument
  Bounds bounds;
  void (*read)(const Field& field, const char* fn, Napi::Env env, Napi::Value value, Args& args);
  // The tensor or list this field holds once read (null for other kinds).
  TensorHandle* (*tensor)(const Args& args);
  const TensorList* (*list)(const Args& args);
};

// The context of one call: where it runs and how to make its outputs.
struct Call {
  Napi::Env env;
  const char* fn;
  Device device;
  const ops::Backend& backend;
  // A fresh tensor of `shape` on the call's device; *data receives its contents there.
  Napi::Object output(const Shape& shape, float** data) const;
  // "fn: message" as a RangeError.
  [[noreturn]] void fail(const std::string& message) const;
};

template <typename Args>
struct OpSpec {
  const char* name;
  Runs runs;
  bool (*has_kernel)(const ops::Backend& backend);  // null: the op needs no kernel (a view, a copy)
  std::vector<Field<Args>> fields;
  // Relations between arguments (shapes, lengths), checked after every field is read and before any write.
  void (*validate)(const Call& call, Args& args);
  Napi::Value (*body)(const Call& call, Args& args);
};

// The backend entry an op calls, for the op list and the device check: kernel<&ops::Backend::scale>.
template <auto Entry>
bool kernel(const ops::Backend& backend) {
  return backend.*Entry != nullptr;
}

// ---- the reader's building blocks (op.cc) ---------------------------------------------------------------------------

std::string where(const char* fn, const char* name);
TensorHandle* read_tensor(const char* fn, const char* name, Napi::Env env, Napi::Value value, bool optional);
void read_tensor_list(const char* fn, const char* name, Napi::Env env, Napi::Value value, bool optional,
                      TensorList& list);
double read_number(const char* fn, const char* name, Napi::Value value, const Bounds& bounds);
int64_t read_integer(const char* fn, const char* name, Napi::Value value, const Bounds& bounds);
// An integer within [min, max] that was read as a plain number (an axis whose range depends on a shape).
int64_t checked_integer(const char* fn, const char* name, double value, int64_t min, int64_t max);
bool read_boolean(const char* fn, const char* name, Napi::Value value);
Shape read_shape(const char* fn, const char* name, Napi::Value value);
IntArray read_int32_array(const char* fn, const char* name, Napi::Value value);
Napi::Float32Array read_float32_array(const char* fn, const char* name, Napi::Value value);
std::string read_string(const char* fn, const char* name, Napi::Value value);
bool missing(Napi::Value value);

template <typename T>
struct MemberOf;
template <typename A, typename T>
struct MemberOf<T A::*> {
  using Args = A;
  using Type = T;
};

template <auto Member>
using ArgsOf = typename MemberOf<decltype(Member)>::Args;

// ---- field declarations ---------------------------------------------------------------------------------------------

// A live tensor (TypeError if not a Tensor or disposed; for a CPU-only op, if not on the CPU).
template <auto Member>
Field<ArgsOf<Member>> tensor(const char* name, bool optional = false, bool written = false) {
  using Args = ArgsOf<Member>;
  return {name,
          Kind::kTensor,
          optional,
          written,
          kFinite,
          [](const Field<Args>& field, const char* fn, Napi::Env env, Napi::Value value, Args& args) {
            args.*Member = read_tensor(fn, field.name, env, value, field.optional);
          },
          [](const Args& args) -> TensorHandle* { return args.*Member; },
          nullptr};
}
template <auto Member>
Field<ArgsOf<Member>> optional_tensor(const char* name) {
  return tensor<Member>(name, true);
}
template <auto Member>
Field<ArgsOf<Member>> written_tensor(const char* name) {
  return tensor<Member>(name, false, true);
}

// An array of live tensors, named "name[i]" in messages.
template <auto Member>
Field<ArgsOf<Member>> tensor_list(const char* name, bool optional = false, bool written = false) {
  using Args = ArgsOf<Member>;
  return {name,
          Kind::kTensorList,
          optional,
          written,
          kFinite,
          [](const Field<Args>& field, const char* fn, Napi::Env env, Napi::Value value, Args& args) {
            read_tensor_list(fn, field.name, env, value, field.optional, args.*Member);
          },
          nullptr,
          [](const Args& args) -> const TensorList* { return &(args.*Member); }};
}
template <auto Member>
Field<ArgsOf<Member>> written_list(const char* name, bool optional = false) {
  return tensor_list<Member>(name, optional, true);
}

// A finite number within `bounds`, stored as the member's type (double or float).
template <auto Member>
Field<ArgsOf<Member>> number(const char* name, Bounds bounds = kFinite) {
  using Args = ArgsOf<Member>;
  using Type = typename MemberOf<decltype(Member)>::Type;
  return {name,
          Kind::kNumber,
          false,
          false,
          bounds,
          [](const Field<Args>& field, const char* fn, Napi::Env, Napi::Value value, Args& args) {
            args.*Member = static_cast<Type>(read_number(fn, field.name, value, field.bounds));
          },
          nullptr,
          nullptr};
}

// An integer whose range depends on other arguments (an axis, a position in it): read here as a finite number, then
// checked by the op with checked_integer. The optional form leaves a std::optional<double> empty when absent.
template <auto Member>
Field<ArgsOf<Member>> index(const char* name) {
  using Args = ArgsOf<Member>;
  return {name,
          Kind::kInteger,
          false,
          false,
          kFinite,
          [](const Field<Args>& field, const char* fn, Napi::Env, Napi::Value value, Args& args) {
            args.*Member = read_number(fn, field.name, value, field.bounds);
          },
          nullptr,
          nullptr};
}
template <auto Member>
Field<ArgsOf<Member>> optional_index(const char* name) {
  using Args = ArgsOf<Member>;
  return {name,
          Kind::kInteger,
          true,
          false,
          kFinite,
          [](const Field<Args>& field, const char* fn, Napi::Env, Napi::Value value, Args& args) {
            if (!missing(value)) args.*Member = read_number(fn, field.name, value, field.bounds);
          },
          nullptr,
          nullptr};
}

// An integer within [min, max].
template <auto Member>
Field<ArgsOf<Member>> integer(const char* name, double min, double max) {
  using Args = ArgsOf<Member>;
  using Type = typename MemberOf<decltype(Member)>::Type;
  return {name,
          Kind::kInteger,
          false,
          false,
          closed(min, max),
          [](const Field<Args>& field, const char* fn, Napi::Env, Napi::Value value, Args& args) {
            args.*Member = static_cast<Type>(read_integer(fn, field.name, value, field.bounds));
          },
          nullptr,
          nullptr};
}

// A boolean; absent gives the member's initial value (its default).
template <auto Member>
Field<ArgsOf<Member>> boolean(const char* name) {
  using Args = ArgsOf<Member>;
  return {name,
          Kind::kBoolean,
          true,
          false,
          kFinite,
          [](const Field<Args>& field, const char* fn, Napi::Env, Napi::Value value, Args& args) {
            if (!missing(value)) args.*Member = read_boolean(fn, field.name, value);
          },
          nullptr,
          nullptr};
}

// Any other kind, read by `Parse(fn, name, value)` into the member.
template <auto Member, auto Parse>
Field<ArgsOf<Member>> field(const char* name, Kind kind, bool optional = false) {
  using Args = ArgsOf<Member>;
  return {name,
          kind,
          optional,
          false,
          kFinite,
          [](const Field<Args>& field, const char* fn, Napi::Env, Napi::Value value, Args& args) {
            args.*Member = Parse(fn, field.name, value);
          },
          nullptr,
          nullptr};
}
template <auto Member>
Field<ArgsOf<Member>> shape(const char* name) {
  return field<Member, read_shape>(name, Kind::kShape);
}
template <auto Member>
Field<ArgsOf<Member>> int32_array(const char* name) {
  return field<Member, read_int32_array>(name, Kind::kInt32Array);
}

// ---- registration ---------------------------------------------------------------------------------------------------

// What the op list says of one registered op.
struct OpInfo {
  std::string name;
  Runs runs;
  bool cpu, cuda;
  std::vector<const char*> args;
  std::vector<Kind> kinds;
  std::vector<bool> optional, written;
};
void add_op_info(Napi::Env env, OpInfo info);
// Exports ops(), the list of every registered op.
void register_op_list(Napi::Env env, Napi::Object exports);

// The generic half of every call, after the fields are read: one device for every tensor (the CPU for a CPU-only
// op), a backend with a kernel there, and, once the op's own checks passed, the checks and versions of its writes.
struct TensorRef {
  const char* name;
  int64_t index;  // the position in a list argument, or -1
  const TensorHandle* tensor;
};
struct ListRef {
  const char* name;
  const TensorList* list;
  bool written;
};
Device common_device(const char* fn, Runs runs, const std::vector<TensorRef>& tensors);
const ops::Backend& backend_with_kernel(const char* fn, Device device, bool (*has_kernel)(const ops::Backend&));
void prepare_writes(const char* fn, const std::vector<ListRef>& lists, const std::vector<TensorHandle*>& written);
Napi::Object arguments_object(const Napi::CallbackInfo& info, const char* fn);

template <typename Args>
Napi::Value run_op(const Napi::CallbackInfo& info, const OpSpec<Args>& spec) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    Napi::Object object = arguments_object(info, spec.name);
    Args args{};
    for (const Field<Args>& field : spec.fields) field.read(field, spec.name, env, object.Get(field.name), args);
    std::vector<TensorRef> tensors;
    std::vector<ListRef> lists;
    std::vector<TensorHandle*> written;
    for (const Field<Args>& field : spec.fields) {
      if (field.tensor != nullptr) {
        TensorHandle* handle = field.tensor(args);
        if (handle == nullptr) continue;
        tensors.push_back({field.name, -1, handle});
        if (field.written) written.push_back(handle);
      } else if (field.list != nullptr) {
        const TensorList* list = field.list(args);
        for (size_t i = 0; i < list->size(); ++i) tensors.push_back({field.name, int64_t(i), list->handles[i]});
        lists.push_back({field.name, list, field.written});
      }
    }
    const Device device = common_device(spec.name, spec.runs, tensors);
    const Call call{env, spec.name, device, backend_with_kernel(spec.name, device, spec.has_kernel)};
    if (spec.validate != nullptr) spec.validate(call, args);
    prepare_writes(spec.name, lists, written);
    return spec.body(call, args);
  });
}

// Exports `spec` as a function taking one object of named arguments, and lists it in ops().
template <typename Args>
void register_op(Napi::Env env, Napi::Object exports, const OpSpec<Args>& spec) {
  OpInfo info{spec.name, spec.runs, true, false, {}, {}, {}, {}};
  info.cpu = spec.has_kernel == nullptr || spec.has_kernel(cpu_backend());
  const ops::Backend* cuda = cuda_backend();
  info.cuda = spec.runs == Runs::kAny && cuda != nullptr && (spec.has_kernel == nullptr || spec.has_kernel(*cuda));
  for (const Field<Args>& field : spec.fields) {
    info.args.push_back(field.name);
    info.kinds.push_back(field.kind);
    info.optional.push_back(field.optional);
    info.written.push_back(field.written);
  }
  add_op_info(env, std::move(info));
  const OpSpec<Args>* pointer = &spec;
  exports.Set(spec.name,
              Napi::Function::New(
                  env, [pointer](const Napi::CallbackInfo& call) { return run_op(call, *pointer); }, spec.name));
}

// Every family registers its ops (ops_*.cc) on the addon's exports.
void register_creation(Napi::Env env, Napi::Object exports);
void register_linear_algebra(Napi::Env env, Napi::Object exports);
void register_elementwise(Napi::Env env, Napi::Object exports);
void register_adapter(Napi::Env env, Napi::Object exports);
void register_nn(Napi::Env env, Napi::Object exports);
void register_optim(Napi::Env env, Napi::Object exports);

}  // namespace bidora::binding
