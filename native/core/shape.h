// Tensor shapes (rank 0 to 4, row-major, contiguous) and the checks every entry point runs before a kernel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bidora {

constexpr int kMaxRank = 4;

struct Shape {
  int rank = 0;
  int64_t dims[kMaxRank] = {0, 0, 0, 0};

  Shape() = default;
  // Throws RangeError naming `argument` unless 0 <= rank <= 4 and every dim is a non-negative integer.
  static Shape from(const std::vector<int64_t>& dims, const char* argument);

  int64_t numel() const;
  int64_t operator[](int axis) const { return dims[axis]; }
  int64_t last() const { return rank == 0 ? 1 : dims[rank - 1]; }
  // Product of all dims but the last: the rows of the matrix this tensor is read as.
  int64_t rows() const { return rank == 0 ? 1 : numel() / (dims[rank - 1] == 0 ? 1 : dims[rank - 1]); }
  bool operator==(const Shape& other) const;
  bool operator!=(const Shape& other) const { return !(*this == other); }
  std::string str() const;  // "[2, 3]"
};

// Largest element count a tensor may hold: 2^40 floats, far past memory, so sizes never overflow int64 math.
constexpr int64_t kMaxElements = int64_t{1} << 40;

// "name has shape [2, 3]" building blocks for error messages.
std::string describe(const char* argument, const Shape& shape);

}  // namespace bidora
