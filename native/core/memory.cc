// Aligned allocation, per-environment accounting and per-thread kernel workspaces.
#include "memory.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "errors.h"

namespace bidora {

namespace {

const std::shared_ptr<MemoryStats> kNoStats;
thread_local const std::shared_ptr<MemoryStats>* current = &kNoStats;
std::atomic<int64_t> total_workspace_bytes{0};

float* allocate_aligned(int64_t count) {
  if (count < 0 || static_cast<uint64_t>(count) > (uint64_t{1} << 40)) {
    throw RangeError("allocation of " + std::to_string(count) + " floats is out of range");
  }
  const size_t bytes = (static_cast<size_t>(count) * sizeof(float) + kAlignment - 1) / kAlignment * kAlignment;
  void* memory = std::aligned_alloc(kAlignment, bytes == 0 ? kAlignment : bytes);
  if (memory == nullptr) throw std::bad_alloc();
  return static_cast<float*>(memory);
}

}  // namespace

void MemoryStats::charge(int64_t bytes) {
  live_buffers.fetch_add(1, std::memory_order_relaxed);
  const int64_t now = live_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  int64_t peak = peak_bytes.load(std::memory_order_relaxed);
  while (now > peak && !peak_bytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void MemoryStats::release(int64_t bytes) {
  live_buffers.fetch_sub(1, std::memory_order_relaxed);
  live_bytes.fetch_sub(bytes, std::memory_order_relaxed);
}

const std::shared_ptr<MemoryStats>& current_stats() { return *current; }

StatsScope::StatsScope(const std::shared_ptr<MemoryStats>& stats) : previous_(current) { current = &stats; }
StatsScope::~StatsScope() { current = previous_; }

FloatBuffer::FloatBuffer(int64_t count, bool zeroed) : data_(allocate_aligned(count)), count_(count) {
  if (zeroed && count > 0) std::memset(data_, 0, static_cast<size_t>(count) * sizeof(float));
  stats_ = current_stats();
  if (stats_) stats_->charge(count_ * static_cast<int64_t>(sizeof(float)));
}

FloatBuffer::~FloatBuffer() { reset(); }

FloatBuffer::FloatBuffer(FloatBuffer&& other) noexcept
    : data_(other.data_), count_(other.count_), stats_(std::move(other.stats_)) {
  other.data_ = nullptr;
  other.count_ = 0;
}

FloatBuffer& FloatBuffer::operator=(FloatBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = other.data_;
    count_ = other.count_;
    stats_ = std::move(other.stats_);
    other.data_ = nullptr;
    other.count_ = 0;
  }
  return *this;
}

void FloatBuffer::reset() {
  if (data_ == nullptr) return;
  std::free(data_);
  if (stats_) stats_->release(count_ * static_cast<int64_t>(sizeof(float)));
  data_ = nullptr;
  count_ = 0;
  stats_.reset();
}

float* thread_workspace(int slot, int64_t count) {
  struct Slot {
    float* data = nullptr;
    int64_t capacity = 0;
  };
  struct Workspace {
    std::vector<Slot> slots;
    ~Workspace() {
      for (auto& slot : slots) {
        std::free(slot.data);
        total_workspace_bytes.fetch_sub(slot.capacity * static_cast<int64_t>(sizeof(float)));
      }
    }
  };
  thread_local Workspace workspace;
  if (static_cast<size_t>(slot) >= workspace.slots.size()) workspace.slots.resize(slot + 1);
  Slot& entry = workspace.slots[slot];
  if (entry.capacity < count) {
    float* grown = allocate_aligned(count);
    std::free(entry.data);
    total_workspace_bytes.fetch_add((count - entry.capacity) * static_cast<int64_t>(sizeof(float)));
    entry.data = grown;
    entry.capacity = count;
  }
  return entry.data;
}

int64_t workspace_bytes() { return total_workspace_bytes.load(); }

}  // namespace bidora
