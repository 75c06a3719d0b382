// Tensor storage on either device, its copies and its row-norm cache.
#include "storage.h"

#include <cstring>
#include <vector>

#include "errors.h"

namespace bidora {

const char* device_name(Device device) { return device == Device::kCuda ? "cuda" : "cpu"; }

Device usable_device(const std::string& name, const std::string& where, const ops::Backend* cuda) {
  if (name == "cpu") return Device::kCpu;
  if (name != "cuda") throw RangeError(where + " must be 'cpu' or 'cuda', got '" + name + "'");
  if (cuda == nullptr) {
    throw RangeError(where + " 'cuda' is not available: this build of bidora has no CUDA kernels (built without " +
                     "nvcc, or with BIDORA_CUDA=OFF)");
  }
  // Asked once per process: the answer does not change while it runs.
  static const bool usable = cuda->usable_device_count() > 0;
  if (!usable) {
    throw RangeError(where + " 'cuda' is not available: no GPU of compute capability 8.0 or newer is usable here " +
                     "(devices() lists what is)");
  }
  return Device::kCuda;
}

const ops::Backend& select_backend(Device device, const ops::Backend& cpu, const ops::Backend* cuda, const char* fn,
                                   bool (*has_kernel)(const ops::Backend&)) {
  if (device == Device::kCuda && cuda == nullptr) throw RangeError("this build of bidora has no CUDA kernels");
  const ops::Backend& backend = device == Device::kCuda ? *cuda : cpu;
  if (has_kernel != nullptr && !has_kernel(backend)) {
    throw TypeError(std::string(fn) + ": this op has no kernel on '" + device_name(device) +
                    "'; move its tensors with .to('cpu')");
  }
  return backend;
}

FloatBuffer bf16_words(const Bf16* bits, int64_t count) {
  FloatBuffer words(storage_words(DType::kBfloat16, count), true);
  std::memcpy(words.data(), bits, static_cast<size_t>(count) * sizeof(Bf16));
  return words;
}

const char* dtype_name(DType dtype) { return dtype == DType::kBfloat16 ? "bfloat16" : "float32"; }

DType parse_dtype(const std::string& name, const std::string& where) {
  if (name == "float32") return DType::kFloat32;
  if (name == "bfloat16") return DType::kBfloat16;
  throw RangeError(where + " must be 'float32' or 'bfloat16', got '" + name + "'");
}

std::shared_ptr<Storage> make_storage(Device device, const ops::Backend& backend, int64_t count, DType dtype,
                                      std::shared_ptr<MemoryStats> stats) {
  const int64_t words = storage_words(dtype, count);
  if (device == Device::kCpu) return std::make_shared<Storage>(FloatBuffer(words), dtype);
  return std::make_shared<Storage>(backend, words, std::move(stats), dtype);
}

Storage::Storage(FloatBuffer data, DType type) : dtype(type), buffer(std::move(data)) {
  if (dtype == DType::kBfloat16 && (dtype_stats_ = current_stats())) dtype_stats_->bf16_bytes.fetch_add(bytes());
}

Storage::Storage(const ops::Backend& device_backend, int64_t words, std::shared_ptr<MemoryStats> stats, DType type)
    : device(Device::kCuda), dtype(type), backend(&device_backend), gpu_count(words) {
  gpu = backend->allocate(words, "Tensor");
  gpu_stats = std::move(stats);
  if (gpu_stats) gpu_stats->device_bytes.fetch_add(bytes());
  if (dtype == DType::kBfloat16 && (dtype_stats_ = gpu_stats)) dtype_stats_->bf16_bytes.fetch_add(bytes());
}

Storage::~Storage() {
  if (backend != nullptr) {
    backend->release(gpu);
    backend->release(gpu_norms_);
  }
  if (gpu_stats) gpu_stats->device_bytes.fetch_sub(bytes());
  if (dtype_stats_) dtype_stats_->bf16_bytes.fetch_sub(bytes());
}

const float* Storage::row_sq_norms(const ops::Backend& cpu, int64_t rows, int64_t cols) {
  const bool host = device == Device::kCpu;
  if (norms_rows_ == rows && norms_version_ == version) return host ? norms_.data() : gpu_norms_;
  if (host && norms_.size() != rows) norms_ = FloatBuffer(rows);
  if (!host && norms_rows_ != rows) {
    backend->release(gpu_norms_);
    gpu_norms_ = nullptr;
    norms_rows_ = -1;  // stale until the allocation below succeeds
    gpu_norms_ = backend->allocate(rows, "row norms");
  }
  float* out = host ? norms_.data() : gpu_norms_;
  const bool bf16 = dtype == DType::kBfloat16;
  (host ? cpu : *backend).row_sq_norms({out, bf16 ? nullptr : data(), rows, cols, bf16 ? bits() : nullptr});
  norms_rows_ = rows;
  norms_version_ = version;
  return out;
}

void Storage::copy_from(Storage& source, int64_t count, const char* function) {
  if (device == Device::kCpu && source.device == Device::kCpu) {
    if (count > 0) std::memcpy(data(), source.data(), static_cast<size_t>(count) * sizeof(float));
  } else if (device == Device::kCpu) {
    source.backend->copy_to_host(data(), source.data(), count, function);
  } else if (source.device == Device::kCpu) {
    backend->copy_to_device(data(), source.data(), count, function);
  } else {
    backend->copy_on_device(data(), source.data(), count, function);
  }
}

void Storage::copy_to_host(float* host, int64_t count, const char* function) {
  if (device != Device::kCpu) return backend->copy_to_host(host, data(), count, function);
  if (count > 0) std::memcpy(host, data(), static_cast<size_t>(count) * sizeof(float));
}

void Storage::copy_from_host(const float* host, int64_t count, const char* function) {
  if (device != Device::kCpu) return backend->copy_to_device(data(), host, count, function);
  if (count > 0) std::memcpy(data(), host, static_cast<size_t>(count) * sizeof(float));
}

namespace {

// n elements of `from` (words of from_type) into `to` (words of to_type), both in host memory.
void convert(const float* from, DType from_type, float* to, DType to_type, int64_t n) {
  const auto* from_bits = reinterpret_cast<const Bf16*>(from);
  auto* to_bits = reinterpret_cast<Bf16*>(to);
  if (n % 2 == 1 && to_type == DType::kBfloat16) to_bits[n] = 0;  // the unused half of the last word
  for (int64_t index = 0; index < n; ++index) {
    const float value = from_type == DType::kFloat32 ? from[index] : bf16_to_float(from_bits[index]);
    if (to_type == DType::kFloat32) to[index] = value;
    if (to_type == DType::kBfloat16) to_bits[index] = float_to_bf16(value);
  }
}

}  // namespace

void Storage::read_floats(float* host, int64_t count, const char* function) {
  if (dtype == DType::kFloat32) return copy_to_host(host, count, function);
  std::vector<float> words(static_cast<size_t>(storage_words(dtype, count)));
  copy_to_host(words.data(), static_cast<int64_t>(words.size()), function);
  convert(words.data(), dtype, host, DType::kFloat32, count);
}

void Storage::write_floats(const float* host, int64_t count, const char* function) {
  if (dtype == DType::kFloat32) return copy_from_host(host, count, function);
  std::vector<float> words(static_cast<size_t>(storage_words(dtype, count)));
  convert(host, DType::kFloat32, words.data(), dtype, count);
  copy_from_host(words.data(), static_cast<int64_t>(words.size()), function);
}

void Storage::convert_into(Storage& target, int64_t count, const char* function) {
  if (device == Device::kCpu && target.device == Device::kCpu) {
    return convert(data(), dtype, target.data(), target.dtype, count);
  }
  // Off the CPU through host memory: a conversion happens once, when a model is loaded or converted.
  std::vector<float> from(static_cast<size_t>(storage_words(dtype, count)));
  std::vector<float> to(static_cast<size_t>(storage_words(target.dtype, count)));
  copy_to_host(from.data(), static_cast<int64_t>(from.size()), function);
  convert(from.data(), dtype, to.data(), target.dtype, count);
  target.copy_from_host(to.data(), static_cast<int64_t>(to.size()), function);
}

}  // namespace bidora
