// Shape construction and formatting.
#include "shape.h"

#include "errors.h"

namespace bidora {

Shape Shape::from(const std::vector<int64_t>& dims, const char* argument) {
  if (dims.size() > static_cast<size_t>(kMaxRank)) {
    throw RangeError(std::string(argument) + ": rank " + std::to_string(dims.size()) +
                     " is not supported (expected rank 0 to 4)");
  }
  Shape shape;
  shape.rank = static_cast<int>(dims.size());
  int64_t count = 1;
  for (int axis = 0; axis < shape.rank; ++axis) {
    if (dims[axis] < 0) {
      throw RangeError(std::string(argument) + ": dimension " + std::to_string(axis) + " is " +
                       std::to_string(dims[axis]) + " (expected a non-negative integer)");
    }
    shape.dims[axis] = dims[axis];
    if (dims[axis] != 0 && count > kMaxElements / dims[axis]) {
      throw RangeError(std::string(argument) + ": " + shape.str() + " holds more than 2^40 elements");
    }
    count *= dims[axis];
  }
  return shape;
}

int64_t Shape::numel() const {
  int64_t count = 1;
  for (int axis = 0; axis < rank; ++axis) count *= dims[axis];
  return count;
}

bool Shape::operator==(const Shape& other) const {
  if (rank != other.rank) return false;
  for (int axis = 0; axis < rank; ++axis) {
    if (dims[axis] != other.dims[axis]) return false;
  }
  return true;
}

std::string Shape::str() const {
  std::string text = "[";
  for (int axis = 0; axis < rank; ++axis) {
    if (axis > 0) text += ", ";
    text += std::to_string(dims[axis]);
  }
  return text + "]";
}

std::string describe(const char* argument, const Shape& shape) {
  return std::string(argument) + " has shape " + shape.str();
}

}  // namespace bidora
