// How GPU products round their inputs, process-wide (setMatmulPrecision). As PyTorch's
// set_float32_matmul_precision: 'highest' keeps float32, 'high' rounds GPU products' inputs to TF32 and 'medium' to
// BF16 for the tensor cores (float32 accumulation either way). The CPU is always float32.
#pragma once

#include <string>

#include "../common/ops.h"

namespace bidora {

ops::Precision gemm_precision();
// Sets it by name ('highest', 'high' or 'medium'; RangeError naming `where` otherwise) and returns the previous name.
const char* set_gemm_precision(const std::string& name, const std::string& where);

}  // namespace bidora
