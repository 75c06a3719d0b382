// Run-time discovery of a GPU the kernels can use; quiet when there is none.
#include <cuda_runtime.h>

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

}  // namespace bidora::cuda
