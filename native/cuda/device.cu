// Run-time discovery of a GPU the kernels can use (quiet when there is none), and the memory and error plumbing the
// binding's device tensors go through.
#include <cuda_runtime.h>

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

float* allocate_floats(int64_t count, const char* function) {
  if (count == 0) return nullptr;
  void* pointer = nullptr;
  const cudaError_t status = cudaMalloc(&pointer, float_bytes(count));
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
  if (pointer != nullptr) (void)cudaFree(pointer);
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
