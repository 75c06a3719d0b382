// The CUDA launchers, in builds that have them (BIDORA_HAVE_CUDA = 1, set by CMake when nvcc is found): every binding
// file that dispatches to the GPU includes this instead of testing the build itself.
#pragma once

#ifndef BIDORA_HAVE_CUDA
#define BIDORA_HAVE_CUDA 0
#endif
#if BIDORA_HAVE_CUDA
#include "../cuda/cuda_ops.h"
#endif
