// The CUDA backend of the op contract (../common/ops.h), in builds with nvcc: the binding registers it, and the GPU
// check (bench/gpu/cuda_check.cu) calls it as the binding does. A plain C++ header: no CUDA types.
#pragma once

#include "../common/ops.h"

namespace bidora::cuda {

const ops::Backend& backend();

}  // namespace bidora::cuda
