// Run-time discovery of a GPU the kernels can use (quiet when there is none), and the memory and error plumbing the
// binding's device tensors go through.
#include <cuda_runtime.h>

#include <atomic>
#include <string>

#include "../core/errors.h"
#include "cuda_ops.h"

namespace bidora::cuda {

int usable_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: clear that error so later CUDA calls start clean
    return 0;
  }
  int usable = 0;
  for (int device = 0; device < count; ++device) {
    int major = 0;
    // Compute capability 8.0 or newer: the TF32 and BF16 WMMA paths, and the sm_80 PTX this build carries.
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 8) {
      ++usable;
    }
  }
  (void)cudaGetLastError();
  return usable;
}

namespace {

void check(cudaError_t status, const char* function, const char* what) {
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();  // a sticky fault stays; a recoverable one (out of memory) must not poison later calls
  throw RangeError(std::string(function) + ": CUDA " + what + " failed: " + cudaGetErrorString(status));
}

size_t float_bytes(int64_t count) { return static_cast<size_t>(count) * sizeof(float); }

}  // namespace

// Tensors take their memory from the device's stream-ordered pool rather than cudaMalloc / cudaFree: cudaFree waits
// for every launch on the device, so a training step that frees hundreds of activations stalled the GPU hundreds of
// times (a BERT-base-sized step ran 5x slower than PyTorch's). A block freed here goes back to the pool in stream
// order and the next allocation of that size takes it again; the pool keeps what it holds until emptyCache().
namespace {

std::atomic<cudaMemPool_t> pool_in_use{nullptr};  // set by the first device allocation

cudaMemPool_t memory_pool(const char* function) {
  static const cudaMemPool_t pool = [function] {
    int device = 0;
    cudaMemPool_t made = nullptr;
    check(cudaGetDevice(&device), function, "device query");
    check(cudaDeviceGetDefaultMemPool(&made, device), function, "memory pool");
    uint64_t keep_everything = UINT64_MAX;
    check(cudaMemPoolSetAttribute(made, cudaMemPoolAttrReleaseThreshold, &keep_everything), function, "memory pool");
    pool_in_use = made;
    return made;
  }();
  return pool;
}

}  // namespace

float* allocate_floats(int64_t count, const char* function) {
  if (count == 0) return nullptr;
  const cudaMemPool_t pool = memory_pool(function);
  void* pointer = nullptr;
  cudaError_t status = cudaMallocAsync(&pointer, float_bytes(count), nullptr);
  if (status == cudaErrorMemoryAllocation) {
    // Free blocks of other sizes held by the pool may be what stands between this allocation and success.
    (void)cudaGetLastError();
    check(cudaDeviceSynchronize(), function, "synchronisation");
    check(cudaMemPoolTrimTo(pool, 0), function, "memory pool trim");
    status = cudaMallocAsync(&pointer, float_bytes(count), nullptr);
  }
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    // GPU memory is invisible to V8's garbage collector: tensors that were dropped without dispose() still hold it.
    throw RangeError(std::string(function) + ": out of GPU memory allocating " + std::to_string(float_bytes(count)) +
                     " bytes; dispose tensors no longer needed (or run steps inside tidy())");
  }
  check(status, function, "allocation");
  return static_cast<float*>(pointer);
}

void free_floats(float* pointer) {
  if (pointer != nullptr) (void)cudaFreeAsync(pointer, nullptr);
}

int64_t release_cached_device_memory() {
  const cudaMemPool_t pool = pool_in_use;
  if (pool == nullptr) return 0;  // nothing was ever allocated: no CUDA context to start for it
  uint64_t before = 0, after = 0;
  check(cudaDeviceSynchronize(), "emptyCache", "synchronisation");
  check(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &before), "emptyCache", "memory pool");
  check(cudaMemPoolTrimTo(pool, 0), "emptyCache", "memory pool trim");
  check(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &after), "emptyCache", "memory pool");
  return static_cast<int64_t>(before - after);
}

void copy_to_device(float* device, const float* host, int64_t count, const char* function) {
  if (count > 0) check(cudaMemcpy(device, host, float_bytes(count), cudaMemcpyHostToDevice), function, "copy");
}

void copy_to_host(float* host, const float* device, int64_t count, const char* function) {
  if (count > 0) check(cudaMemcpy(host, device, float_bytes(count), cudaMemcpyDeviceToHost), function, "copy");
}

void copy_on_device(float* destination, const float* source, int64_t count, const char* function) {
  if (count > 0) {
    check(cudaMemcpyAsync(destination, source, float_bytes(count), cudaMemcpyDeviceToDevice, nullptr), function,
          "copy");
  }
}

void copy_ints_to_device(int32_t* device, const int32_t* host, int64_t count, const char* function) {
  if (count > 0) {
    check(cudaMemcpy(device, host, static_cast<size_t>(count) * sizeof(int32_t), cudaMemcpyHostToDevice), function,
          "copy");
  }
}

void check_launch(const char* function) { check(cudaGetLastError(), function, "kernel launch"); }

void* scratch(int slot, size_t bytes, const char* function) {
  constexpr int kSlots = 4;
  struct Buffers {
    void* data[kSlots] = {};
    size_t bytes[kSlots] = {};
    ~Buffers() {
      for (void* buffer : data) (void)cudaFree(buffer);
    }
  };
  thread_local Buffers buffers;
  if (slot < 0 || slot >= kSlots) throw RangeError(std::string(function) + ": no scratch slot " + std::to_string(slot));
  if (buffers.bytes[slot] < bytes) {
    (void)cudaFree(buffers.data[slot]);  // waits for the launches still using it
    buffers.data[slot] = nullptr;
    buffers.bytes[slot] = 0;
    check(cudaMalloc(&buffers.data[slot], bytes), function, "scratch allocation");
    buffers.bytes[slot] = bytes;
  }
  return buffers.data[slot];
}

}  // namespace bidora::cuda
