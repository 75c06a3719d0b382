// A tensor as the ops see it: a shape over shared storage on one device. The binding's handle (native/binding/op.h)
// is one of these that JavaScript holds; several may view one storage (reshape, aliases kept for backward).
#pragma once

#include <memory>

#include "shape.h"
#include "storage.h"

namespace bidora {

class Tensor {
 public:
  const Shape& shape() const { return shape_; }
  Device device() const { return device_; }
  DType dtype() const { return storage_->dtype; }
  // The contents on the tensor's own device (a GPU pointer for 'cuda' tensors): float32 values, or for a bfloat16
  // tensor its bits; weight() is whichever the tensor holds, for the ops that take a bfloat16 weight.
  float* data() { return storage_->data(); }
  Bf16* bits() { return storage_->bits(); }
  WeightView weight() {
    const bool bf16 = dtype() == DType::kBfloat16;
    return {bf16 ? nullptr : data(), bf16 ? bits() : nullptr};
  }
  int64_t numel() const { return shape_.numel(); }
  int64_t words() const { return storage_words(dtype(), numel()); }  // 32-bit words of storage it spans
  // Its elements converted into `target`, of the same shape and device and maybe another dtype.
  void convert_into(Tensor& target, const char* fn) { storage_->convert_into(*target.storage_, numel(), fn); }

  // Bumped by every in-place change, so saved activations and caches can tell the contents changed.
  uint64_t version() const { return storage_ ? storage_->version : 0; }
  void mark_modified() { ++storage_->version; }
  // ||row||² of a rank-2 tensor, computed once per version (DoRA's frozen-weight norms); `cpu` for host storage.
  const float* row_sq_norms(const ops::Backend& cpu) {
    const int64_t rows = shape_.rank == 0 ? 1 : shape_[0];
    return storage_->row_sq_norms(cpu, rows, rows == 0 ? 0 : numel() / rows);
  }

 protected:
  Shape shape_;
  std::shared_ptr<Storage> storage_;
  Device device_ = Device::kCpu;
};

}  // namespace bidora
