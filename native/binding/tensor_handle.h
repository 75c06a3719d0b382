// The native handle behind every TypeScript Tensor: a shape over shared, aligned float storage. Several handles may
// view one storage (reshape, aliases kept for backward); the storage lives until the last of them is disposed.
#pragma once

#include <napi.h>

#include <memory>

#include "../core/shape.h"
#include "../core/storage.h"

namespace bidora::binding {

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function define(Napi::Env env);
  // A new handle owning `buffer` (whose size must equal shape.numel()).
  static Napi::Object create(Napi::Env env, const Shape& shape, FloatBuffer buffer);
  // A new handle with uninitialised storage for `shape` on `device`.
  static Napi::Object allocate(Napi::Env env, const Shape& shape, TensorHandle** handle, Device device = Device::kCpu);
  // A new handle with a copy of this one's contents on `device`.
  Napi::Object copy_to(Napi::Env env, Device device, const char* function);
  // A new handle viewing this one's storage with another shape of the same size.
  Napi::Object view(Napi::Env env, const Shape& shape);

  explicit TensorHandle(const Napi::CallbackInfo& info);
  ~TensorHandle() override;

  // The handle behind a JavaScript object of this class, or nullptr once dispose() has deleted it. Does not throw.
  static TensorHandle* live(Napi::Env env, Napi::Value object);

  const Shape& shape() const { return shape_; }
  Device device() const { return device_; }
  // The contents on the tensor's own device: a GPU pointer for 'cuda' tensors, which only ops that take tensors
  // on any device ever see.
  float* data() { return storage_->data(); }
  int64_t numel() const { return shape_.numel(); }

  // Bumped by every in-place change, so saved activations and caches can tell the contents changed.
  uint64_t version() const { return storage_ ? storage_->version : 0; }
  void mark_modified() { ++storage_->version; }
  // ||row||² of a rank-2 tensor, computed once per version (DoRA's frozen-weight norms).
  const float* row_sq_norms();

 private:
  // The JavaScript methods (lib/binding.ts's NativeTensorHandle) are plain functions on the prototype, not ObjectWrap
  // members, because they must also answer for a disposed handle, whose C++ object no longer exists: read, write and
  // dispose; the getters shape, version and device throw TypeError once disposed, disposed never throws.
  static Napi::Value read(const Napi::CallbackInfo& info);
  static Napi::Value write(const Napi::CallbackInfo& info);
  static Napi::Value dispose(const Napi::CallbackInfo& info);
  static Napi::Value shape_getter(const Napi::CallbackInfo& info);
  static Napi::Value disposed_getter(const Napi::CallbackInfo& info);
  static Napi::Value version_getter(const Napi::CallbackInfo& info);
  static Napi::Value device_getter(const Napi::CallbackInfo& info);
  // The live handle behind info.This(), or a TypeError saying `function` needs one.
  static TensorHandle& this_handle(const Napi::CallbackInfo& info, const char* function);

  // Frees the storage, detaches this object from its JavaScript object and deletes it: all at once, because
  // Node-API finalizers run only when the event loop turns, and a synchronous training loop never lets it.
  void destroy(Napi::Env env, Napi::Object object);

  Shape shape_;
  std::shared_ptr<Storage> storage_;
  Device device_ = Device::kCpu;
  int64_t reported_bytes_ = 0;          // what this handle told V8 it holds: its storage's bytes if it made the storage
  std::shared_ptr<MemoryStats> stats_;  // counts this handle among the environment's live tensors
};

}  // namespace bidora::binding
