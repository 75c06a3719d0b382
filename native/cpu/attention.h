// Fused scaled-dot-product attention (contract in ../common/ops.h): the blocked kernels and their scalar references.
#pragma once

#include "../common/ops.h"

namespace bidora::cpu {

// Blocked (online softmax over key blocks, GEMM micro-kernels, the thread pool); buffers are a few blocks per thread.
void attention_forward(const ops::Attention& args);
void attention_backward(const ops::AttentionBackward& args);
// Plain loops in double over one row at a time, single-threaded: what the tests check the blocked kernels against.
void attention_forward_reference(const ops::Attention& args);
void attention_backward_reference(const ops::AttentionBackward& args);

}  // namespace bidora::cpu
