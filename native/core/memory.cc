// Aligned allocation, per-environment accounting and per-thread kernel workspaces.
#include "memory.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <list>
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
// (sequence lengths) still share blocks. Bounded by a limit (1 GiB unless set): keeping a block past it first frees
// the blocks kept longest ago, so blocks of shapes no longer in use do not hold the cache.
class BlockCache {
 public:
  static constexpr size_t kMinBytes = size_t{256} << 10;
  static constexpr size_t kLargestClass = size_t{1} << 30;  // larger blocks always go back to the system
  static constexpr size_t kDefaultLimit = size_t{1} << 30;

  static bool cacheable(size_t bytes) { return bytes >= kMinBytes && bytes <= kLargestClass; }

  static size_t size_class(size_t bytes) {
    if (!cacheable(bytes)) return bytes;
    size_t step = size_t{1} << (63 - __builtin_clzll(bytes) - 3);  // an eighth of the highest power of two
    return (bytes + step - 1) / step * step;
  }

  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = by_size_.find(bytes);
    if (found == by_size_.end() || found->second.empty()) return nullptr;
    const auto entry = found->second.back();  // the most recently kept: likeliest still in cache
    found->second.pop_back();
    void* block = entry->block;
    order_.erase(entry);
    cached_bytes_ -= bytes;
    return block;
  }

  // Keeps `block` of class size `bytes`, freeing the oldest kept blocks to stay within the limit; false when it
  // cannot be kept (larger than the limit; the caller frees it). Called from destructors: never throws.
  bool keep(void* block, size_t bytes) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes > limit_) return false;
    while (cached_bytes_ + bytes > limit_) evict_oldest();
    try {
      order_.push_back({bytes, block});
    } catch (const std::bad_alloc&) {
      return false;
    }
    try {
      by_size_[bytes].push_back(std::prev(order_.end()));
    } catch (const std::bad_alloc&) {
      order_.pop_back();
      return false;
    }
    cached_bytes_ += bytes;
    return true;
  }

  // A new limit (0 turns the cache off), freeing blocks down to it; returns the previous one.
  size_t set_limit(size_t limit) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t previous = limit_;
    limit_ = limit;
    while (cached_bytes_ > limit_) evict_oldest();
    return previous;
  }

  size_t release_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t released = cached_bytes_;
    while (!order_.empty()) evict_oldest();
    return released;
  }

  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_bytes_;
  }

 private:
  struct Entry {
    size_t bytes;
    void* block;
  };
  using Position = std::list<Entry>::iterator;

  // Frees the block kept longest ago. Each size's positions are in the order kept, so it is first in its list too.
  void evict_oldest() {
    const Entry oldest = order_.front();
    std::vector<Position>& positions = by_size_[oldest.bytes];
    positions.erase(positions.begin());
    order_.pop_front();
    cached_bytes_ -= oldest.bytes;
    std::free(oldest.block);
  }

  std::mutex mutex_;
  std::list<Entry> order_;  // oldest first
  std::unordered_map<size_t, std::vector<Position>> by_size_;
  size_t cached_bytes_ = 0;
  size_t limit_ = kDefaultLimit;
};

// Never destroyed: buffers freed during process exit (worker teardown, static destructors) may still return here.
BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache();
  return *cache;
}

float* allocate_buffer(int64_t count) {
  const size_t bytes = BlockCache::size_class(aligned_bytes(count));
  if (BlockCache::cacheable(bytes)) {
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
  if (BlockCache::cacheable(bytes) && block_cache().keep(data, bytes)) return;
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

FloatBuffer FloatBuffer::filled(int64_t count, float value) {
  FloatBuffer buffer(count, value == 0.0f);
  if (value != 0.0f) std::fill(buffer.data(), buffer.data() + count, value);
  return buffer;
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

std::vector<std::pair<const char*, int64_t>> memory_report(const MemoryStats& stats) {
  return {{"tensors", stats.live_tensors.load()},     {"buffers", stats.live_buffers.load()},
          {"bytes", stats.live_bytes.load()},         {"peakBytes", stats.peak_bytes.load()},
          {"workspaceBytes", workspace_bytes()},      {"cachedBytes", cached_bytes()},
          {"deviceBytes", stats.device_bytes.load()}, {"bfloat16Bytes", stats.bf16_bytes.load()}};
}

int64_t cached_bytes() { return static_cast<int64_t>(block_cache().cached_bytes()); }

int64_t release_cached_memory() { return static_cast<int64_t>(block_cache().release_all()); }

int64_t set_cache_limit(int64_t bytes) {
  return static_cast<int64_t>(block_cache().set_limit(static_cast<size_t>(bytes)));
}

bool ExternalMemory::add(Share& share, int64_t bytes) {
  if (bytes == 0) return false;
  share = {bytes, epoch_};
  unreported_bytes_ += bytes;
  return unreported_bytes_ > kUnreportedLimit;
}

int64_t ExternalMemory::report() {
  const int64_t bytes = unreported_bytes_;
  unreported_bytes_ = 0;
  ++epoch_;
  return bytes;
}

int64_t ExternalMemory::remove(Share& share) {
  const int64_t told = share.epoch < epoch_ ? share.bytes : 0;
  if (told == 0) unreported_bytes_ -= share.bytes;
  share.bytes = 0;
  return told;
}

}  // namespace bidora
