// The declaration language of native ops (docs/DESIGN.md, "Native op contract"): each op names its arguments and
// outputs once, as fields of a plain struct; one generic reader checks them (TypeError or RangeError naming "op:
// argument") and one dispatcher checks devices, runs the shape rule, bumps versions and runs the device's backend.
#pragma once

#include <napi.h>

#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/ops.h"
#include "../core/errors.h"
#include "../core/precision.h"
#include "../core/shape.h"
#include "../core/shape_rules.h"
#include "../core/tensor.h"

namespace bidora::binding {

// The native handle behind every TypeScript Tensor: a Tensor (../core/tensor.h) that JavaScript holds. The storage
// lives until the last handle viewing it is disposed.
class TensorHandle : public Napi::ObjectWrap<TensorHandle>, public Tensor {
 public:
  static Napi::Function define(Napi::Env env);
  // New handles: owning `buffer` (of shape.numel() floats), with uninitialised storage on `device`, with a copy of
  // this one's contents on `device`, or viewing this one's storage with another shape of the same size.
  static Napi::Object create(Napi::Env env, const Shape& shape, FloatBuffer buffer, DType dtype = DType::kFloat32);
  static Napi::Object allocate(Napi::Env env, const Shape& shape, TensorHandle** handle, Device device = Device::kCpu,
                               DType dtype = DType::kFloat32);
  Napi::Object copy_to(Napi::Env env, Device device, const char* function);
  Napi::Object view(Napi::Env env, const Shape& shape);

  explicit TensorHandle(const Napi::CallbackInfo& info);
  ~TensorHandle() override;

  // The handle behind a JavaScript object of this class, or nullptr once dispose() has deleted it. Does not throw.
  static TensorHandle* live(Napi::Env env, Napi::Value object);
  // Tells V8 of the host memory of this environment's live handles it has not been told of yet (ExternalMemory).
  static void report_external_memory(Napi::Env env);

 private:
  // The JavaScript methods (lib/binding.ts's NativeTensorHandle) are plain functions on the prototype, not ObjectWrap
  // members, because they must also answer for a disposed handle, whose C++ object no longer exists: read, write and
  // dispose; the getters shape, version, device and dtype throw TypeError once disposed, disposed never throws.
  static Napi::Value read(const Napi::CallbackInfo& info);
  static Napi::Value write(const Napi::CallbackInfo& info);
  static Napi::Value dispose(const Napi::CallbackInfo& info);
  // The live handle behind info.This(), or a TypeError saying `function` needs one.
  static TensorHandle& this_handle(const Napi::CallbackInfo& info, const char* function);

  // Frees the storage, detaches this object from its JavaScript object and deletes it: all at once, because
  // Node-API finalizers run only when the event loop turns, and a synchronous training loop never lets it.
  void destroy(Napi::Env env, Napi::Object object);
  // Run by garbage collection for a handle never disposed, before it is deleted.
  void Finalize(Napi::Env env) override;
  // Takes this handle's host memory out of what V8 is or will be told of.
  void forget_external_memory(Napi::Env env);

  std::shared_ptr<MemoryStats> stats_;  // counts this handle among the environment's live tensors
  std::shared_ptr<ExternalMemory> external_;
  ExternalMemory::Share host_;  // the host storage this handle made, for V8
};

// What one JavaScript environment (main thread or worker) keeps: its memory counters and the handle class.
struct AddonState {
  std::shared_ptr<MemoryStats> stats = std::make_shared<MemoryStats>();
  std::shared_ptr<ExternalMemory> external = std::make_shared<ExternalMemory>();
  Napi::FunctionReference tensor_constructor;
};
AddonState& state(Napi::Env env);

// Runs `body` with allocations charged to this environment and every C++ exception turned into a JavaScript error:
// bidora's own as TypeError and RangeError, out of memory as RangeError, anything else as Error.
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

using rules::kMaxSafeInteger, rules::kMaxInt32;

// What an argument is, as ops() reports it (kOut: an output, out<>, not listed).
enum class Kind { kTensor, kList, kNumber, kInt, kBool, kShape, kInt32s, kFloat32s, kString, kFlags, kUint16s, kOut };
// Where an op runs: on its tensors' device (a kernel on every backend), or on the CPU only.
enum class Runs { kAny, kCpu };

// The backends: the CPU always, CUDA in builds that have it (null otherwise), and the one for `device` (with
// `has_kernel`: a TypeError naming `fn` if it lacks the op's kernel).
const ops::Backend& cpu_backend();
const ops::Backend* cuda_backend();
const ops::Backend& backend_for(Device device, const char* fn = nullptr,
                                bool (*has_kernel)(const ops::Backend&) = nullptr);

// The tensors of one list argument, with the pointers, lengths and shapes the list kernels and rules take.
struct TensorList {
  bool present = false;
  std::vector<float*> data;
  std::vector<int64_t> lengths;
  std::vector<Shape> shapes;
  int64_t count() const { return static_cast<int64_t>(data.size()); }
  const float* const* read() const { return data.data(); }
};

// An optional tensor's data and shape, null when it is absent.
inline float* data_of(TensorHandle* tensor) { return tensor != nullptr ? tensor->data() : nullptr; }
inline const Shape* shape_of(TensorHandle* tensor) { return tensor != nullptr ? &tensor->shape() : nullptr; }

struct IntArray {  // an Int32Array viewed without copying
  const int32_t* data = nullptr;
  int64_t length = 0;
};

using rules::Bounds, rules::kFinite, rules::kPositive, rules::kNonNegative, rules::closed, rules::half_open;

// ---- reading one value (op.cc) -------------------------------------------------------------------------------------
std::string where(const char* fn, const char* name);
bool missing(Napi::Value value);
struct FieldInfo;
struct Gathered;
TensorHandle* read_tensor(const char* fn, const char* name, Napi::Env env, Napi::Value value);
void read_tensor_list(const char* fn, const FieldInfo& field, Napi::Env env, Napi::Value value, TensorList& list,
                      Gathered& gathered);
double read_number(const char* fn, const char* name, Napi::Value value, const Bounds& bounds);
int64_t read_integer(const char* fn, const char* name, Napi::Value value, const Bounds& bounds);
bool read_boolean(const char* fn, const char* name, Napi::Value value);
// Other kinds: one overload per member type, chosen by the null pointer of that type.
Shape parse(const char* fn, const char* name, Napi::Value value, Shape*);
IntArray parse(const char* fn, const char* name, Napi::Value value, IntArray*);
Napi::Float32Array parse(const char* fn, const char* name, Napi::Value value, Napi::Float32Array*);
Napi::Uint16Array parse(const char* fn, const char* name, Napi::Value value, Napi::Uint16Array*);
std::string parse(const char* fn, const char* name, Napi::Value value, std::string*);
inline std::string read_string(const char* fn, const char* name, Napi::Value value) {
  return parse(fn, name, value, static_cast<std::string*>(nullptr));
}

// ---- declarations -------------------------------------------------------------------------------------------------
template <typename A, typename T>
A args_of(T A::*);
template <typename A, typename T>
T type_of(T A::*);
template <auto Member>
using ArgsOf = decltype(args_of(Member));
template <auto Member>
using TypeOf = decltype(type_of(Member));

// How an argument may be given: absent (optional; booleans always are), updated in place (`written`: versions bumped,
// storage shared with no other), and whether it may be a bfloat16 frozen weight (every other tensor must be float32).
struct Flags {
  bool optional, written, bf16 = false;
};
constexpr Flags kRequired{false, false}, kOptional{true, false}, kWritten{false, true}, kOptionalWritten{true, true},
    kBf16{false, false, true};

// What ops() says of one argument.
struct FieldInfo : Flags {
  const char* name;
  Kind kind;
};
// A TypeError for a bfloat16 tensor given where float32 is required.
void require_float32(const char* fn, const char* name, const FieldInfo& field, TensorHandle* tensor);

// What a call's arguments hold, gathered as they are read: where every tensor is, and the tensors the op writes.
struct Gathered {
  std::vector<rules::Placed> tensors;
  std::vector<TensorHandle*> written;
};
void gather(Gathered& gathered, const FieldInfo& field, int64_t index, TensorHandle* tensor);

// One argument of an op whose arguments live in `Args`.
template <typename Args>
struct Field : FieldInfo {
  Bounds bounds;
  void (*read)(const Field& field, const char* fn, Napi::Env env, Napi::Value value, Args& args, Gathered& gathered);
  float** (*output)(Args& args);  // for outputs: where the data pointer goes, and the shape
  const Shape& (*output_shape)(const Args& args);
};

// Reads one field into its member by the member's type (absent booleans and std::optional keep their initial value).
template <auto Member>
void read_member(const Field<ArgsOf<Member>>& field, const char* fn, Napi::Env env, Napi::Value value,
                 ArgsOf<Member>& args, Gathered& gathered) {
  using T = TypeOf<Member>;
  if constexpr (std::is_same_v<T, TensorHandle*>) {
    TensorHandle* tensor = field.optional && missing(value) ? nullptr : read_tensor(fn, field.name, env, value);
    args.*Member = tensor;
    if (tensor != nullptr) {
      require_float32(fn, field.name, field, tensor);
      gather(gathered, field, -1, tensor);
    }
  } else if constexpr (std::is_same_v<T, TensorList>) {
    read_tensor_list(fn, field, env, value, args.*Member, gathered);
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

// The kind of a member's type (std::optional<double>: an integer whose range the rule checks).
template <typename T>
constexpr Kind kind_of() {
  if constexpr (std::is_same_v<T, TensorHandle*>) return Kind::kTensor;
  if constexpr (std::is_same_v<T, TensorList>) return Kind::kList;
  if constexpr (std::is_same_v<T, bool>) return Kind::kBool;
  if constexpr (std::is_integral_v<T> || std::is_same_v<T, std::optional<double>>) return Kind::kInt;
  if constexpr (std::is_floating_point_v<T>) return Kind::kNumber;
  if constexpr (std::is_same_v<T, Shape>) return Kind::kShape;
  if constexpr (std::is_same_v<T, IntArray>) return Kind::kInt32s;
  if constexpr (std::is_same_v<T, Napi::Float32Array>) return Kind::kFloat32s;
  if constexpr (std::is_same_v<T, Napi::Uint16Array>) return Kind::kUint16s;
  if constexpr (std::is_same_v<T, std::string>) return Kind::kString;
  return Kind::kFlags;
}

// The field `name` of an op's arguments, read into Member: arg<&Args::eps>("eps", kPositive), arg<&Args::b>("b",
// kOptional).
template <auto Member, typename Args = ArgsOf<Member>>
Field<Args> arg(const char* name, Bounds bounds = kFinite, Flags flags = kRequired,
                Kind kind = kind_of<TypeOf<Member>>()) {
  using T = TypeOf<Member>;
  const bool optional = flags.optional || std::is_same_v<T, bool> || std::is_same_v<T, std::optional<double>>;
  return {{{optional, flags.written, flags.bf16}, name, kind}, bounds, read_member<Member>, nullptr, nullptr};
}
template <auto Member, typename Args = ArgsOf<Member>>
Field<Args> arg(const char* name, Flags flags) {
  return arg<Member>(name, kFinite, flags);
}
// An integer whose range depends on other arguments (an axis): a finite double, then checked by the op's rule.
template <auto Member, typename Args = ArgsOf<Member>>
Field<Args> index(const char* name) {
  return arg<Member>(name, kFinite, kRequired, Kind::kInt);
}

// An output allocated on the call's device before the kernel runs into it: a float* member, shaped like a tensor
// argument or as a Shape the rule derived, reached through members (out<&Args::out, &Args::product,
// &rules::Product::out>()). The op returns its one output, or an object of several keyed by their names.
template <auto Member, auto... ShapeOf>
Field<ArgsOf<Member>> out(const char* name = "output") {
  using Args = ArgsOf<Member>;
  Field<Args> field{{kRequired, name, Kind::kOut}, kFinite, nullptr, nullptr, nullptr};
  field.output = [](Args& args) -> float** { return &(args.*Member); };
  field.output_shape = [](const Args& args) -> const Shape& {
    const auto& source = (args.*....*ShapeOf);
    if constexpr (std::is_same_v<std::decay_t<decltype(source)>, Shape>) return source;
    if constexpr (!std::is_same_v<std::decay_t<decltype(source)>, Shape>) return source->shape();
  };
  return field;
}

// The context of one call: where it runs and how to make its outputs.
struct Call {
  Napi::Env env;
  const char* fn;
  Device device;
  const ops::Backend& backend;
  // A fresh tensor of `shape` on the call's device; *data receives its contents there (bfloat16: its bits).
  Napi::Object output(const Shape& shape, float** data, DType dtype = DType::kFloat32) const;
};

// What every op has, whatever its argument struct: exported by the addon's init and listed by ops().
struct OpBase {
  const char* name;
  Runs runs;
  bool (*has_kernel)(const ops::Backend& backend);
  const char* label;  // the name its messages use when not `name`
  Napi::Value (*run)(const Napi::CallbackInfo& info, const OpBase& op);
  std::vector<FieldInfo> args;  // its arguments, outputs left out
};
// Every op, in the order their declarations ran when the addon loaded (once per process).
std::vector<const OpBase*>& op_registry();

// The backend entry an op calls, for ops() and the kernel check: kernel<&ops::Backend::scale>.
template <auto Entry>
bool kernel(const ops::Backend& backend) {
  return backend.*Entry != nullptr;
}

template <typename Args>
Napi::Value run_op(const Napi::CallbackInfo& info, const OpBase& op);

// One op, declared at namespace scope, which registers it: its name, where it runs, the backend entry it calls
// (kernel<&ops::Backend::entry>; null for a view or a copy), its fields and outputs, its shape rule (relations between
// arguments, checked after every field is read and before any write; it may store what it derives in `args`), and
// what it runs: a Kernel, run into the declared outputs that the op then returns, or a Body that returns the result.
template <typename Args>
struct OpSpec : OpBase {
  using Rule = void (*)(const char* fn, Args& args);
  using Body = Napi::Value (*)(const Call& call, Args& args);
  using Kernel = void (*)(const Call& call, Args& args);
  template <typename Run>
  OpSpec(const char* name, Runs runs, bool (*has_kernel)(const ops::Backend&), std::vector<Field<Args>> fields,
         Rule rule, Run run, const char* label = nullptr)
      : OpBase{name, runs, has_kernel, label, run_op<Args>, {}}, fields(std::move(fields)), rule(rule) {
    if constexpr (std::is_convertible_v<Run, Body>) body = run;
    if constexpr (!std::is_convertible_v<Run, Body>) kernel = run;
    for (const Field<Args>& field : this->fields) {
      if (field.kind != Kind::kOut) args.push_back(field);
    }
    outputs = static_cast<int>(this->fields.size() - args.size());
    op_registry().push_back(this);
  }
  OpSpec(const OpSpec&) = delete;  // registered by address
  std::vector<Field<Args>> fields;
  Rule rule;
  Body body = nullptr;
  Kernel kernel = nullptr;
  int outputs = 0;
};

// ---- the generic half of a call (op.cc) ----------------------------------------------------------------------------

Napi::Object arguments_object(const Napi::CallbackInfo& info, const char* fn);

template <typename Args>
Napi::Value run_op(const Napi::CallbackInfo& info, const OpBase& op) {
  const OpSpec<Args>& spec = static_cast<const OpSpec<Args>&>(op);
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const char* fn = spec.label != nullptr ? spec.label : spec.name;
    Napi::Object object = arguments_object(info, fn);
    Args args{};
    // Reused by every call on this thread (calls never nest), so the common case allocates nothing.
    thread_local Gathered gathered;
    gathered.tensors.clear();
    gathered.written.clear();
    for (const Field<Args>& field : spec.fields) {
      if (field.read != nullptr) field.read(field, fn, env, object.Get(field.name), args, gathered);
    }
    const Device device = rules::one_device(fn, spec.runs == Runs::kCpu, gathered.tensors);
    const Call call{env, fn, device, backend_for(device, fn, spec.has_kernel)};
    if (spec.rule != nullptr) spec.rule(fn, args);
    rules::distinct_storage(fn, gathered.tensors);
    // Bumped before the kernel runs: one that fails halfway has still changed what a saved tensor's backward reads.
    for (TensorHandle* handle : gathered.written) handle->mark_modified();
    if (spec.body != nullptr) return spec.body(call, args);
    Napi::Value result = spec.outputs > 1 ? Napi::Object::New(env) : env.Undefined();
    for (const Field<Args>& field : spec.fields) {
      if (field.output == nullptr) continue;
      Napi::Object tensor = call.output(field.output_shape(args), field.output(args));
      if (spec.outputs > 1) result.As<Napi::Object>().Set(field.name, tensor);
      if (spec.outputs == 1) result = tensor;
    }
    spec.kernel(call, args);
    return result;
  });
}

// Exports every declared op as a function taking one object of named arguments, and ops() listing them.
void export_ops(Napi::Env env, Napi::Object exports);

}  // namespace bidora::binding
