// The contents of a tensor, shared by every view of it (reshape, aliases kept for backward): host memory or device
// memory of a backend (../common/ops.h), the version that in-place changes bump, and a cache derived from them.
#pragma once

#include <memory>
#include <string>

#include "../common/ops.h"
#include "memory.h"

namespace bidora {

// Where a tensor's contents live. 'cuda' exists only in builds with the CUDA backend and with a usable GPU.
enum class Device { kCpu, kCuda };

// What a tensor's elements are: float32, or bfloat16 (../common/bf16.h), the storage of frozen weights. Storage is
// counted in 32-bit words either way: a bfloat16 tensor of n elements takes ceil(n / 2) of them.
enum class DType { kFloat32, kBfloat16 };
const char* dtype_name(DType dtype);
// 'float32' or 'bfloat16' (RangeError naming `where` otherwise).
DType parse_dtype(const std::string& name, const std::string& where);
inline int64_t storage_words(DType dtype, int64_t count) { return dtype == DType::kBfloat16 ? (count + 1) / 2 : count; }
// The storage of `count` bfloat16 values copied from `bits` (an odd count's last half-word zero).
FloatBuffer bf16_words(const Bf16* bits, int64_t count);
const char* device_name(Device device);
// 'cpu' or 'cuda' (RangeError naming `where` otherwise); 'cuda' needs the CUDA backend (null in builds without it)
// and a usable GPU, else a RangeError says which is missing.
Device usable_device(const std::string& name, const std::string& where, const ops::Backend* cuda);
// The backend of `device`: `cpu`, or `cuda` (RangeError when this build has none); with `has_kernel`, a TypeError
// naming `fn` when that backend lacks the op's kernel.
const ops::Backend& select_backend(Device device, const ops::Backend& cpu, const ops::Backend* cuda, const char* fn,
                                   bool (*has_kernel)(const ops::Backend&));

struct Storage;
// Uninitialised storage for `count` elements of `dtype` on `device`: host memory, or `backend`'s device memory counted
// in `stats` while it lives.
std::shared_ptr<Storage> make_storage(Device device, const ops::Backend& backend, int64_t count, DType dtype,
                                      std::shared_ptr<MemoryStats> stats);

struct Storage {
  explicit Storage(FloatBuffer data, DType type = DType::kFloat32);
  // `words` 32-bit words of uninitialised memory of `backend`'s device, counted in `stats` while it lives.
  Storage(const ops::Backend& backend, int64_t words, std::shared_ptr<MemoryStats> stats, DType type = DType::kFloat32);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  // The contents as words: float32 values, or bfloat16 pairs (bits()).
  float* data() { return device == Device::kCpu ? buffer.data() : gpu; }
  Bf16* bits() { return reinterpret_cast<Bf16*>(data()); }
  int64_t bytes() const { return (device == Device::kCpu ? buffer.size() : gpu_count) * int64_t{4}; }
  // ||row||² of the contents read as [rows, cols], computed once per version on the storage's device (DoRA's frozen
  // weight norms); `cpu` computes them for host storage.
  const float* row_sq_norms(const ops::Backend& cpu, int64_t rows, int64_t cols);
  // `count` words from `source` into this storage, whichever devices the two are on.
  void copy_from(Storage& source, int64_t count, const char* function);
  // `count` words between this storage and host memory, whichever device it is on.
  void copy_to_host(float* host, int64_t count, const char* function);
  void copy_from_host(const float* host, int64_t count, const char* function);
  // `count` elements as float32 values, whatever the dtype: read widened (exact), written rounded to nearest even.
  void read_floats(float* host, int64_t count, const char* function);
  void write_floats(const float* host, int64_t count, const char* function);
  // This storage's first `count` elements converted into `target`'s dtype, on the device both are on.
  void convert_into(Storage& target, int64_t count, const char* function);

  Device device = Device::kCpu;
  DType dtype = DType::kFloat32;
  FloatBuffer buffer;                     // the contents on the CPU
  const ops::Backend* backend = nullptr;  // the device memory's backend
  float* gpu = nullptr;                   // the contents on the device (owned)
  int64_t gpu_count = 0;
  std::shared_ptr<MemoryStats> gpu_stats;
  uint64_t version = 0;

 private:
  std::shared_ptr<MemoryStats> dtype_stats_;  // charged with a bfloat16 storage's bytes (memory().bfloat16Bytes)
  FloatBuffer norms_;  // the row-norm cache: valid for norms_rows_ rows while version is norms_version_
  float* gpu_norms_ = nullptr;
  int64_t norms_rows_ = -1;
  uint64_t norms_version_ = 0;
};

}  // namespace bidora
