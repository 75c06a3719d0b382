// Copying a range along one axis out of a tensor, and its gradient (the range written back into zeros).
//
// Legend: the tensor is read as [outer, axis, inner]; the range is [start, start + length) of the axis.
#pragma once

#include <cstdint>

namespace bidora::cpu {

// out [outer, length, inner] = a[:, start : start + length, :]
void narrow(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner, int64_t start, int64_t length);
// out [outer, axis, inner] = 0 except out[:, start : start + length, :] = grad
void narrow_backward(float* out, const float* grad, int64_t outer, int64_t axis, int64_t inner, int64_t start,
                     int64_t length);

}  // namespace bidora::cpu
