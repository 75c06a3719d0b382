// Aligned allocation, per-environment accounting and per-thread kernel workspaces.
#include "memory.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "errors.h"

namespace bidora {

namespace {

const std::shared_ptr<MemoryStats> kNoStats;
thread_local const std::shared_ptr<MemoryStats>* current = &kNoStats;
std::atomic<int64_t> total_workspace_bytes{0};

size_t aligned_bytes(int64_t count) {
  if (count < 0 || static_cast<uint64_t>(count) > (uint64_t{1} << 40)) {
    throw RangeError("allocation of " + std::to_string(count) + " floats is out of range");
  }
  const size_t bytes = (static_cast<size_t>(count) * sizeof(float) + kAlignment - 1) / kAlignment * kAlignment;
  return bytes == 0 ? kAlignment : bytes;
}

float* allocate_aligned(int64_t count) {
  void* memory = std::aligned_alloc(kAlignment, aligned_bytes(count));
  if (memory == nullptr) throw std::bad_alloc();
  return static_cast<float*>(memory);
}

// Freed tensor-sized blocks kept for the next allocation of their size class. Without it, glibc hands large blocks
// back to the kernel on free (mmap, or trimming the heap top) and every training step faults in and zeroes fresh
// pages for its activations: measured at one fused DoRA forward, 3,000 page faults and a third of its time.
// Sizes are rounded up to a class with three significant bits (at most 12.5 % slack), so shapes that vary a little
// (sequence lengths) still share blocks. Bounded: past kMaxCachedBytes a freed block goes back to the system.
class BlockCache {
 public:
  static constexpr size_t kMinBytes = size_t{256} << 10;
  static constexpr size_t kMaxCachedBytes = size_t{1} << 30;

  static size_t size_class(size_t bytes) {
    if (bytes < kMinBytes || bytes > kMaxCachedBytes) return bytes;
    size_t step = size_t{1} << (63 - __builtin_clzll(bytes) - 3);  // an eighth of the highest power of two
    return (bytes + step - 1) / step * step;
  }

  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = blocks_.find(bytes);
    if (found == blocks_.end() || found->second.empty()) return nullptr;
    void* block = found->second.back();
    found->second.pop_back();
    cached_bytes_ -= bytes;
    return block;
  }

  // Keeps `block` of class size `bytes`, or returns false when the cache is full (the caller frees it).
  // Called from destructors: never throws (a list that cannot grow just declines the block).
  bool keep(void* block, size_t bytes) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_bytes_ + bytes > kMaxCachedBytes) return false;
    try {
      blocks_[bytes].push_back(block);
    } catch (const std::bad_alloc&) {
      return false;
    }
    cached_bytes_ += bytes;
    return true;
  }

  size_t release_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t released = cached_bytes_;
    for (auto& [bytes, list] : blocks_) {
      for (void* block : list) std::free(block);
    }
    blocks_.clear();
    cached_bytes_ = 0;
    return released;
  }

  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_bytes_;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> blocks_;
  size_t cached_bytes_ = 0;
};

// Never destroyed: buffers freed during process exit (worker teardown, static destructors) may still return here.
BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache();
  return *cache;
}

float* allocate_buffer(int64_t count) {
  const size_t bytes = BlockCache::size_class(aligned_bytes(count));
  if (bytes >= BlockCache::kMinBytes && bytes <= BlockCache::kMaxCachedBytes) {
    if (void* block = block_cache().take(bytes)) return static_cast<float*>(block);
  }
  void* memory = std::aligned_alloc(kAlignment, bytes);
  if (memory == nullptr) {
    // Cached blocks of other sizes may be what stands between this allocation and success.
    block_cache().release_all();
    memory = std::aligned_alloc(kAlignment, bytes);
    if (memory == nullptr) throw std::bad_alloc();
  }
  return static_cast<float*>(memory);
}

void free_buffer(float* data, int64_t count) {
  const size_t bytes = BlockCache::size_class(aligned_bytes(count));
  if (bytes >= BlockCache::kMinBytes && bytes <= BlockCache::kMaxCachedBytes && block_cache().keep(data, bytes)) return;
  std::free(data);
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

FloatBuffer::FloatBuffer(int64_t count, bool zeroed) : data_(allocate_buffer(count)), count_(count) {
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
  free_buffer(data_, count_);
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

int64_t cached_bytes() { return static_cast<int64_t>(block_cache().cached_bytes()); }

int64_t release_cached_memory() { return static_cast<int64_t>(block_cache().release_all()); }

}  // namespace bidora
