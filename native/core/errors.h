// Error types raised by kernels and core code; the binding maps them to JavaScript TypeError and RangeError.
#pragma once

#include <stdexcept>
#include <string>

namespace bidora {

// A value of the wrong kind: not a tensor, a disposed tensor, a non-numeric argument.
class TypeError : public std::runtime_error {
 public:
  explicit TypeError(const std::string& message) : std::runtime_error(message) {}
};

// A value of the right kind outside what is allowed: mismatched shapes, negative sizes, unknown options.
class RangeError : public std::runtime_error {
 public:
  explicit RangeError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace bidora
