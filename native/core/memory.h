// 64-byte-aligned float storage with live/peak accounting, so memory() can show what tensors and kernels hold.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace bidora {

constexpr size_t kAlignment = 64;

// Counters of one JavaScript environment (main thread or a worker): tensors and kernel scratch charged to it.
struct MemoryStats {
  std::atomic<int64_t> live_tensors{0};  // tensor handles not yet disposed or collected
  std::atomic<int64_t> live_buffers{0};  // every charged buffer: tensor storage, caches, kernel scratch
  std::atomic<int64_t> live_bytes{0};
  std::atomic<int64_t> peak_bytes{0};
  std::atomic<int64_t> device_bytes{0};  // GPU memory of live tensors (not counted in live_bytes)
  std::atomic<int64_t> bf16_bytes{0};    // bfloat16 tensor storage on either device (counted in the two above too)

  void charge(int64_t bytes);
  void release(int64_t bytes);
  void reset_peak() { peak_bytes.store(live_bytes.load()); }
};

// The stats that allocations on this thread are charged to (may be empty). The binding sets them for the duration
// of each call; buffers keep them alive, so a buffer may outlive its environment.
const std::shared_ptr<MemoryStats>& current_stats();
class StatsScope {
 public:
  explicit StatsScope(const std::shared_ptr<MemoryStats>& stats);
  ~StatsScope();
  StatsScope(const StatsScope&) = delete;
  StatsScope& operator=(const StatsScope&) = delete;

 private:
  const std::shared_ptr<MemoryStats>* previous_;
};

// An owned, 64-byte-aligned, zero-initialised-on-request array of floats, charged to the stats current when it was
// made. Moves only.
class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(int64_t count, bool zeroed = false);
  ~FloatBuffer();
  FloatBuffer(FloatBuffer&& other) noexcept;
  FloatBuffer& operator=(FloatBuffer&& other) noexcept;
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;

  // `count` floats equal to `value`.
  static FloatBuffer filled(int64_t count, float value);

  float* data() { return data_; }
  const float* data() const { return data_; }
  int64_t size() const { return count_; }
  void reset();

 private:
  float* data_ = nullptr;
  int64_t count_ = 0;
  std::shared_ptr<MemoryStats> stats_;
};

// What V8 knows of an environment's tensor memory. V8 collects garbage when the external memory it is told of grows
// by more than 64 MiB over what it was at its last collection. Told of every tensor as it was made, it ran two full
// collections in every BERT-base-sized training step (a tenth of the step, the marking competing with the kernels
// for the same cores) for tensors that tidy() freed milliseconds later and that collection could not have freed.
// So a handle is told of once it outlives the synchronous task that made it (lib/tensor.ts reports after each
// event-loop turn that made tensors), or as soon as more than kUnreportedLimit bytes are live untold: a loop that
// leaks tensors without yielding still brings on a collection. Each report starts a new epoch; handles made in an
// earlier one have been told of, and disposing of them tells V8 their memory is gone.
class ExternalMemory {
 public:
  static constexpr int64_t kUnreportedLimit = int64_t{512} << 20;
  struct Share {  // one handle's host bytes (0 for views and device tensors) and the epoch it was made in
    int64_t bytes = 0;
    uint64_t epoch = 0;
  };
  // Counts a new handle's bytes into `share`; true when more than kUnreportedLimit bytes are live untold.
  bool add(Share& share, int64_t bytes);
  // The bytes to tell V8 of now, starting a new epoch.
  int64_t report();
  // The bytes V8 was told of for `share` and must now forget (0 if it was never told); empties the share.
  int64_t remove(Share& share);

 private:
  uint64_t epoch_ = 0;
  int64_t unreported_bytes_ = 0;  // host bytes of the live handles made in this epoch
};

// What memory() reports (lib/binding.ts's NativeMemory), by key: an environment's counters, the process's kernel
// workspaces and cached buffers.
std::vector<std::pair<const char*, int64_t>> memory_report(const MemoryStats& stats);

// Scratch that a kernel keeps between calls on one thread (GEMM packing panels): grows, never shrinks, never
// charged to an environment because it outlives them. workspace_bytes() reports the process total.
float* thread_workspace(int slot, int64_t count);
int64_t workspace_bytes();

// Freed buffers are kept for reuse by later ones of about the same size (bounded, see memory.cc): bytes held now,
// handing them all back to the system (returns how many bytes that was), and the bound (0 turns the cache off;
// returns the previous bound).
int64_t cached_bytes();
int64_t release_cached_memory();
int64_t set_cache_limit(int64_t bytes);

}  // namespace bidora
