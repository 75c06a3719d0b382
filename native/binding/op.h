// The declaration language of native ops. An op states its arguments once, as fields of a plain struct, each bound to
// a JavaScript name: tensor<&Args::input>("input"), number<&Args::eps>("eps", kPositive), written_list<...>(...).
// One generic reader takes them by name out of the single object of named arguments the op is called with, and
// checks each (TypeError or RangeError naming "op: argument"); one dispatcher checks that every tensor is on one
// device, runs the op's shape rule, bumps the versions of what it writes, and runs its body with the backend of that
// device (../common/ops.h). ops() in JavaScript lists the same declarations (test/op-contract.test.ts holds
// lib/binding.ts to them).
#pragma once

#include <napi.h>

#include <cmath>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/ops.h"
#include "../core/errors.h"
#include "../core/shape_rules.h"
#include "tensor_handle.h"

namespace bidora::binding {

// What one JavaScript environment (main thread or worker) keeps: its memory counters and the handle class.
struct AddonState {
  std::shared_ptr<MemoryStats> stats = std::make_shared<MemoryStats>();
  Napi::FunctionReference tensor_constructor;
};
AddonState& state(Napi::Env env);

// Runs `body` with allocations charged to this environment and kernel errors turned into JavaScript errors: bidora's
// own as TypeError and RangeError, out of memory as RangeError, any other C++ exception (a failed system call, a
// library error) as Error with its message. Nothing thrown by a kernel may reach Node-API as a C++ exception.
template <typename Body>
Napi::Value guarded(const Napi::CallbackInfo& info, Body body) {
  Napi::Env env = info.Env();
  StatsScope scope(state(env).stats);
  try {
    return body();
  } catch (const bidora::TypeError& error) {
    throw Napi::TypeError::New(env, error.what());
  } catch (const bidora::RangeError& error) {
    throw Napi::RangeError::New(env, error.what());
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(env, "out of memory");
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& error) {
    throw Napi::Error::New(env, std::string("bidora: native error: ") + error.what());
  } catch (...) {
    // Not a std::exception (a library's own type, a thrown int): nothing to say but that it happened.
    throw Napi::Error::New(env, "bidora: native error: an unknown C++ exception");
  }
}

constexpr int64_t kMaxSafeInteger = 9007199254740991;
constexpr int64_t kMaxInt32 = 2147483647;

// What an argument is, as ops() reports it; test/op-contract.test.ts maps each kind to its TypeScript type.
enum class Kind { kTensor, kList, kNumber, kInteger, kBoolean, kShape, kInt32Array, kFloat32Array, kString, kFlags };
// Where an op runs: on its tensors' device (a kernel on every backend), or on the CPU only.
enum class Runs { kAny, kCpu };

// The backends: the CPU always, CUDA in builds that have it (null otherwise).
const ops::Backend& cpu_backend();
const ops::Backend* cuda_backend();
const ops::Backend& backend_for(Device device);
// The rounding of GPU products chosen with setMatmulPrecision.
ops::Precision gemm_precision();

// The tensors of one list argument, with the pointers and lengths the list kernels take.
struct TensorList {
  bool present = false;
  std::vector<TensorHandle*> handles;
  std::vector<float*> data;
  std::vector<int64_t> lengths;
  std::vector<Shape> shapes;
  size_t size() const { return handles.size(); }
  int64_t count() const { return static_cast<int64_t>(handles.size()); }
  const float* const* read() const { return data.data(); }
};

struct IntArray {  // an Int32Array viewed without copying
  const int32_t* data = nullptr;
  int64_t length = 0;
};

// Numbers are finite; these bounds (open or closed at each end) are checked too and named in the message.
struct Bounds {
  double min = -std::numeric_limits<double>::infinity(), max = std::numeric_limits<double>::infinity();
  bool min_open = false, max_open = false;
};
constexpr Bounds kFinite{};
constexpr Bounds kPositive{0, std::numeric_limits<double>::infinity(), true, false};
constexpr Bounds kNonNegative{0, std::numeric_limits<double>::infinity(), false, false};
constexpr Bounds closed(double min, double max) { return {min, max, false, false}; }
constexpr Bounds half_open(double min, double max) { return {min, max, false, true}; }

// ---- reading one value (op.cc) -------------------------------------------------------------------------------------

std::string where(const char* fn, const char* name);
bool missing(Napi::Value value);
TensorHandle* read_tensor(const char* fn, const char* name, Napi::Env env, Napi::Value value, bool optional);
void read_tensor_list(const char* fn, const char* name, Napi::Env env, Napi::Value value, bool optional,
                      TensorList& list);
double read_number(const char* fn, const char* name, Napi::Value value, const Bounds& bounds);
int64_t read_integer(const char* fn, const char* name, Napi::Value value, const Bounds& bounds);
bool read_boolean(const char* fn, const char* name, Napi::Value value);
// Other kinds: one overload per member type, chosen by the null pointer of that type.
Shape parse(const char* fn, const char* name, Napi::Value value, Shape*);
IntArray parse(const char* fn, const char* name, Napi::Value value, IntArray*);
Napi::Float32Array parse(const char* fn, const char* name, Napi::Value value, Napi::Float32Array*);
std::string parse(const char* fn, const char* name, Napi::Value value, std::string*);
inline std::string read_string(const char* fn, const char* name, Napi::Value value) {
  return parse(fn, name, value, static_cast<std::string*>(nullptr));
}

// ---- declarations -------------------------------------------------------------------------------------------------

template <typename Member>
struct MemberOf;
template <typename A, typename T>
struct MemberOf<T A::*> {
  using Args = A;
  using Type = T;
};
template <auto Member>
using ArgsOf = typename MemberOf<decltype(Member)>::Args;
template <auto Member>
using TypeOf = typename MemberOf<decltype(Member)>::Type;

// One argument of an op whose arguments live in `Args`.
template <typename Args>
struct Field {
  const char* name;
  Kind kind;
  bool optional;
  bool written;  // updated in place: versions bumped, storage shared with no other argument
  Bounds bounds;
  void (*read)(const Field& field, const char* fn, Napi::Env env, Napi::Value value, Args& args);
  TensorHandle* (*tensor)(const Args& args);    // the tensor this field holds once read, for tensor fields
  const TensorList* (*list)(const Args& args);  // the list, for list fields
};

// Reads one field into its member, by the member's type: a tensor, a list, a boolean (absent keeps the member's
// initial value), a number or integer within the field's bounds (std::optional: absent stays empty), or a parse().
template <auto Member>
void read_member(const Field<ArgsOf<Member>>& field, const char* fn, Napi::Env env, Napi::Value value,
                 ArgsOf<Member>& args) {
  using T = TypeOf<Member>;
  if constexpr (std::is_same_v<T, TensorHandle*>) {
    args.*Member = read_tensor(fn, field.name, env, value, field.optional);
  } else if constexpr (std::is_same_v<T, TensorList>) {
    read_tensor_list(fn, field.name, env, value, field.optional, args.*Member);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!missing(value)) args.*Member = read_boolean(fn, field.name, value);
  } else if constexpr (std::is_same_v<T, std::optional<double>>) {
    if (!missing(value)) args.*Member = read_number(fn, field.name, value, field.bounds);
  } else if constexpr (std::is_arithmetic_v<T>) {
    const bool integer = std::is_integral_v<T>;
    args.*Member = static_cast<T>(integer ? static_cast<double>(read_integer(fn, field.name, value, field.bounds))
                                          : read_number(fn, field.name, value, field.bounds));
  } else {
    args.*Member = parse(fn, field.name, value, static_cast<T*>(nullptr));
  }
}

// How an argument may be given: absent (optional; booleans always are), and whether the op writes it in place.
struct Flags {
  bool optional, written;
};
constexpr Flags kRequired{false, false}, kOptional{true, false}, kWritten{false, true}, kOptionalWritten{true, true};

// The kind of a member's type: a tensor, a list, a boolean, an integer (integral types, or std::optional<double> for
// an axis whose range depends on a shape), a number, a shape, an Int32Array, a Float32Array, a string, or flags.
template <typename T>
constexpr Kind kind_of() {
  if constexpr (std::is_same_v<T, TensorHandle*>) return Kind::kTensor;
  if constexpr (std::is_same_v<T, TensorList>) return Kind::kList;
  if constexpr (std::is_same_v<T, bool>) return Kind::kBoolean;
  if constexpr (std::is_integral_v<T> || std::is_same_v<T, std::optional<double>>) return Kind::kInteger;
  if constexpr (std::is_floating_point_v<T>) return Kind::kNumber;
  if constexpr (std::is_same_v<T, Shape>) return Kind::kShape;
  if constexpr (std::is_same_v<T, IntArray>) return Kind::kInt32Array;
  if constexpr (std::is_same_v<T, Napi::Float32Array>) return Kind::kFloat32Array;
  if constexpr (std::is_same_v<T, std::string>) return Kind::kString;
  return Kind::kFlags;
}

// The field `name` of an op's arguments, read into Member: arg<&Args::eps>("eps", kPositive),
// arg<&Args::bias>("bias", kOptional), arg<&Args::seed>("seed", closed(0, kMaxSafeInteger)).
template <auto Member, typename Args = ArgsOf<Member>>
Field<Args> arg(const char* name, Bounds bounds = kFinite, Flags flags = kRequired,
                Kind kind = kind_of<TypeOf<Member>>()) {
  using T = TypeOf<Member>;
  const bool optional = flags.optional || std::is_same_v<T, bool> || std::is_same_v<T, std::optional<double>>;
  Field<Args> field{name, kind, optional, flags.written, bounds, read_member<Member>, nullptr, nullptr};
  if constexpr (std::is_same_v<T, TensorHandle*>)
    field.tensor = [](const Args& args) -> TensorHandle* { return args.*Member; };
  if constexpr (std::is_same_v<T, TensorList>)
    field.list = [](const Args& args) -> const TensorList* { return &(args.*Member); };
  return field;
}
template <auto Member, typename Args = ArgsOf<Member>>
Field<Args> arg(const char* name, Flags flags) {
  return arg<Member>(name, kFinite, flags);
}
// An integer whose range depends on other arguments (a position along an axis): a double member, read as a finite
// number, then checked by the op's rule (rules::integer_in).
template <auto Member, typename Args = ArgsOf<Member>>
Field<Args> index(const char* name) {
  return arg<Member>(name, kFinite, kRequired, Kind::kInteger);
}

// The context of one call: where it runs and how to make its outputs.
struct Call {
  Napi::Env env;
  const char* fn;
  Device device;
  const ops::Backend& backend;
  // A fresh tensor of `shape` on the call's device; *data receives its contents there.
  Napi::Object output(const Shape& shape, float** data) const;
  // An object of fresh tensors, one per {key, shape, &data}.
  struct Output {
    const char* key;
    Shape shape;
    float** data;
  };
  Napi::Object outputs(std::initializer_list<Output> list) const;
};

// One op: its name, where it runs, the backend entry it calls (kernel<&ops::Backend::entry>; null for a view or a
// copy), its fields, its shape rule (relations between arguments, checked after every field is read and before any
// write; it may store what it derives in `args`), its body, and the name its messages use when not `name`.
template <typename Args>
struct OpSpec {
  using Rule = void (*)(const char* fn, Args& args);
  using Body = Napi::Value (*)(const Call& call, Args& args);
  OpSpec(const char* name, Runs runs, bool (*has_kernel)(const ops::Backend&), std::vector<Field<Args>> fields,
         Rule rule, Body body, const char* label = nullptr)
      : name(name),
        runs(runs),
        has_kernel(has_kernel),
        fields(std::move(fields)),
        rule(rule),
        body(body),
        label(label) {}
  const char* name;
  Runs runs;
  bool (*has_kernel)(const ops::Backend& backend);
  std::vector<Field<Args>> fields;
  Rule rule;
  Body body;
  const char* label;
};

// The backend entry an op calls, for ops() and the kernel check: kernel<&ops::Backend::scale>.
template <auto Entry>
bool kernel(const ops::Backend& backend) {
  return backend.*Entry != nullptr;
}

// ---- the generic half of a call (op.cc) ----------------------------------------------------------------------------

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
Napi::Object arguments_object(const Napi::CallbackInfo& info, const char* fn);
// One device for every tensor (the CPU for a CPU-only op), and a backend with the op's kernel there.
Device common_device(const char* fn, Runs runs, const std::vector<TensorRef>& tensors);
const ops::Backend& backend_with_kernel(const char* fn, Device device, bool (*has_kernel)(const ops::Backend&));
// Written lists share storage with no other list's tensor; then every written tensor's version is bumped.
void prepare_writes(const char* fn, const std::vector<ListRef>& lists, const std::vector<TensorHandle*>& written);

template <typename Args>
Napi::Value run_op(const Napi::CallbackInfo& info, const OpSpec<Args>& spec) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const char* fn = spec.label != nullptr ? spec.label : spec.name;
    Napi::Object object = arguments_object(info, fn);
    Args args{};
    for (const Field<Args>& field : spec.fields) field.read(field, fn, env, object.Get(field.name), args);
    // Reused by every call on this thread (calls never nest), so the common case allocates nothing.
    thread_local std::vector<TensorRef> tensors;
    thread_local std::vector<ListRef> lists;
    thread_local std::vector<TensorHandle*> written;
    tensors.clear();
    lists.clear();
    written.clear();
    for (const Field<Args>& field : spec.fields) {
      if (field.tensor != nullptr && field.tensor(args) != nullptr) {
        tensors.push_back({field.name, -1, field.tensor(args)});
        if (field.written) written.push_back(field.tensor(args));
      } else if (field.list != nullptr) {
        const TensorList* list = field.list(args);
        for (size_t i = 0; i < list->size(); ++i) tensors.push_back({field.name, int64_t(i), list->handles[i]});
        lists.push_back({field.name, list, field.written});
      }
    }
    const Device device = common_device(fn, spec.runs, tensors);
    const Call call{env, fn, device, backend_with_kernel(fn, device, spec.has_kernel)};
    if (spec.rule != nullptr) spec.rule(fn, args);
    prepare_writes(fn, lists, written);
    return spec.body(call, args);
  });
}

// What ops() says of one registered op.
struct OpInfo {
  std::string name;
  Runs runs;
  bool cpu, cuda;
  std::vector<std::pair<const char*, Kind>> args;
  std::vector<std::pair<bool, bool>> optional_written;
};
void add_op_info(OpInfo info);

// Exports `spec` as a function taking one object of named arguments, and lists it in ops().
template <typename Args>
void register_op(Napi::Env env, Napi::Object exports, const OpSpec<Args>& spec) {
  const ops::Backend* cuda = cuda_backend();
  OpInfo info{spec.name, spec.runs, spec.has_kernel == nullptr || spec.has_kernel(cpu_backend()), false, {}, {}};
  info.cuda = spec.runs == Runs::kAny && cuda != nullptr && (spec.has_kernel == nullptr || spec.has_kernel(*cuda));
  for (const Field<Args>& field : spec.fields) {
    info.args.emplace_back(field.name, field.kind);
    info.optional_written.emplace_back(field.optional, field.written);
  }
  add_op_info(std::move(info));
  const OpSpec<Args>* pointer = &spec;
  auto function = [pointer](const Napi::CallbackInfo& call) { return run_op(call, *pointer); };
  exports.Set(spec.name, Napi::Function::New(env, function, spec.name));
}

template <typename... Specs>
void register_ops(Napi::Env env, Napi::Object exports, const Specs&... specs) {
  (register_op(env, exports, specs), ...);
}

// Every family registers its ops on the addon's exports; ops() lists them.
void register_creation(Napi::Env env, Napi::Object exports);
void register_linear_algebra(Napi::Env env, Napi::Object exports);
void register_elementwise(Napi::Env env, Napi::Object exports);
void register_adapter(Napi::Env env, Napi::Object exports);
void register_nn(Napi::Env env, Napi::Object exports);
void register_decoder(Napi::Env env, Napi::Object exports);
void register_optim(Napi::Env env, Napi::Object exports);
void register_op_list(Napi::Env env, Napi::Object exports);

}  // namespace bidora::binding
