// Error types raised by kernels and core code; the binding maps them to JavaScript TypeError and RangeError.
#pragma once

#include <new>
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

// Throws the C++ exception `kind` names, as the binding's _throwForTest does under the guard every entry point has, to
// prove each reaches JavaScript as an error: 'int' and 'foreign' are not std::exceptions (what a third-party library
// might throw).
[[noreturn]] inline void throw_for_test(const std::string& kind) {
  struct Foreign {
    int code;
  };
  if (kind == "length_error") throw std::length_error("vector::reserve");
  if (kind == "runtime_error") throw std::runtime_error("a failed system call");
  if (kind == "range_error") throw RangeError("_throwForTest: a bidora RangeError");
  if (kind == "type_error") throw TypeError("_throwForTest: a bidora TypeError");
  if (kind == "bad_alloc") throw std::bad_alloc();
  if (kind == "int") throw 42;
  if (kind == "foreign") throw Foreign{7};
  throw RangeError("_throwForTest: unknown kind '" + kind + "'");
}

}  // namespace bidora
