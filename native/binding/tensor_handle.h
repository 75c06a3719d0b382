// The native handle behind every TypeScript Tensor: an owned, aligned float buffer and its shape.
#pragma once

#include <napi.h>

#include "../core/memory.h"
#include "../core/shape.h"

namespace bidora::binding {

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function define(Napi::Env env);
  // A new handle owning `buffer` (whose size must equal shape.numel()).
  static Napi::Object create(Napi::Env env, const Shape& shape, FloatBuffer buffer);
  // A new handle with uninitialised storage for `shape`.
  static Napi::Object allocate(Napi::Env env, const Shape& shape, TensorHandle** handle);

  explicit TensorHandle(const Napi::CallbackInfo& info);
  ~TensorHandle() override;

  const Shape& shape() const { return shape_; }
  float* data() { return buffer_.data(); }
  int64_t numel() const { return shape_.numel(); }
  bool disposed() const { return disposed_; }

  // Bumped by every in-place change, so saved activations and caches can tell the contents changed.
  uint64_t version() const { return version_; }
  void mark_modified() { ++version_; }
  // ||row||² of a rank-2 tensor, computed once per version (DoRA's frozen-weight norms).
  const float* row_sq_norms();

 private:
  // [sync] read(): Float32Array - a copy of the contents.
  Napi::Value read(const Napi::CallbackInfo& info);
  // [sync] write(data: Float32Array): void - copies data in; RangeError unless data.length equals the size.
  Napi::Value write(const Napi::CallbackInfo& info);
  // [sync] dispose(): void - frees the storage now; later use throws TypeError. Idempotent.
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value shape_getter(const Napi::CallbackInfo& info);
  Napi::Value disposed_getter(const Napi::CallbackInfo& info);
  Napi::Value version_getter(const Napi::CallbackInfo& info);

  void release_memory(Napi::Env env);

  Shape shape_;
  FloatBuffer buffer_;
  bool disposed_ = false;
  int64_t reported_bytes_ = 0;
  std::shared_ptr<MemoryStats> stats_;  // counts this handle among the environment's live tensors
  uint64_t version_ = 0;
  FloatBuffer row_sq_norms_;
  uint64_t row_sq_norms_version_ = 0;
};

// Registers fromFloat32Array, zeros, full, randn, uniform on `exports`.
void register_creation(Napi::Env env, Napi::Object exports);

}  // namespace bidora::binding
