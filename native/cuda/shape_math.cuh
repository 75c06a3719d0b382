// Where element `index` of a layout op's output reads from: the index math of the grid-stride kernels in shape.cu,
// shared with the host test, which replays it against plain nested loops. Tensors are read as [outer, axis, inner].
#pragma once

#include <cstdint>

#include "host_device.h"

namespace bidora::cuda {

// narrow: output [outer, length, inner] from a[:, start : start + length, :] of [outer, axis, inner].
BIDORA_HD int64_t narrow_source(int64_t index, int64_t axis, int64_t inner, int64_t start, int64_t length) {
  const int64_t i = index % inner, j = (index / inner) % length, o = index / (length * inner);
  return (o * axis + start + j) * inner + i;
}

// narrow's gradient: output [outer, axis, inner] from grad [outer, length, inner] inside the range; −1 outside it
// (a zero).
BIDORA_HD int64_t narrow_backward_source(int64_t index, int64_t axis, int64_t inner, int64_t start, int64_t length) {
  const int64_t i = index % inner, j = (index / inner) % axis, o = index / (axis * inner);
  const int64_t offset = j - start;
  return offset >= 0 && offset < length ? (o * length + offset) * inner + i : -1;
}

// Broadcast over an axis: output [outer, axis, inner] from a [outer, inner].
BIDORA_HD int64_t broadcast_source(int64_t index, int64_t axis, int64_t inner) {
  return (index / (axis * inner)) * inner + index % inner;
}

// The head permute: output [a, c, b, d] from x [a, b, c, d].
BIDORA_HD int64_t permute_0213_source(int64_t index, int64_t b, int64_t c, int64_t d) {
  const int64_t di = index % d, bi = (index / d) % b, ci = (index / (d * b)) % c, ai = index / (d * b * c);
  return ((ai * b + bi) * c + ci) * d + di;
}

}  // namespace bidora::cuda
