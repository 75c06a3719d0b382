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
const char* device_name(Device device);
// 'cpu' or 'cuda' (RangeError naming `where` otherwise); 'cuda' needs the CUDA backend (null in builds without it)
// and a usable GPU, else a RangeError says which is missing.
Device usable_device(const std::string& name, const std::string& where, const ops::Backend* cuda);

struct Storage {
  explicit Storage(FloatBuffer data) : buffer(std::move(data)) {}
  // `count` floats of uninitialised memory of `backend`'s device, counted in `stats` while it lives.
  Storage(const ops::Backend& backend, int64_t count, std::shared_ptr<MemoryStats> stats);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  float* data() { return device == Device::kCpu ? buffer.data() : gpu; }
  // ||row||² of the contents read as [rows, cols], computed once per version on the storage's device (DoRA's frozen
  // weight norms); `cpu` computes them for host storage.
  const float* row_sq_norms(const ops::Backend& cpu, int64_t rows, int64_t cols);
  // `count` floats from `source` into this storage, whichever devices the two are on.
  void copy_from(Storage& source, int64_t count, const char* function);
  // `count` floats between this storage and host memory, whichever device it is on.
  void copy_to_host(float* host, int64_t count, const char* function);
  void copy_from_host(const float* host, int64_t count, const char* function);

  Device device = Device::kCpu;
  FloatBuffer buffer;                     // the contents on the CPU
  const ops::Backend* backend = nullptr;  // the device memory's backend
  float* gpu = nullptr;                   // the contents on the device (owned)
  int64_t gpu_count = 0;
  std::shared_ptr<MemoryStats> gpu_stats;
  uint64_t version = 0;

 private:
  FloatBuffer norms_;  // the row-norm cache: valid for norms_rows_ rows while version is norms_version_
  float* gpu_norms_ = nullptr;
  int64_t norms_rows_ = -1;
  uint64_t norms_version_ = 0;
};

}  // namespace bidora
