// The one native thread pool: a fixed set of workers that split a job into contiguous ranges, never by timing.
#pragma once

#include <cstdint>
#include <functional>

namespace bidora {

// Threads a parallel job uses, the calling thread included: BIDORA_NUM_THREADS if set, else the cores this process
// may run on.
int num_threads();
// Caps the threads jobs use (1 to the pool size) without rebuilding the pool; returns the previous cap.
int set_thread_limit(int threads);
// Threads in the pool: requested_pool_size() (BIDORA_NUM_THREADS or the cores) unless the system refused to create
// some, in which case the pool runs with those it got.
int pool_size();
int requested_pool_size();

// Calls body(thread, threads) once on each of `threads` threads (the caller is thread 0) and returns when all are
// done. `threads` is clamped to [1, num_threads()]. If the pool is busy (another JavaScript thread is using it) or
// this is called from inside a pool job, every index runs on the calling thread, in order: callers must make their
// results independent of which thread runs which index, which splitting by index guarantees.
void run_on_threads(int threads, const std::function<void(int thread, int threads)>& body);

// Splits [0, n) into at most num_threads() contiguous ranges whose boundaries are multiples of `grain`, and calls
// body(begin, end) for each. Jobs smaller than `min_parallel` items run on the caller alone.
void parallel_for(int64_t n, int64_t grain, int64_t min_parallel,
                  const std::function<void(int64_t begin, int64_t end)>& body);

// The range [begin, end) that part `part` of `parts` gets when [0, n) is split in grain-aligned contiguous pieces.
void split_range(int64_t n, int64_t grain, int part, int parts, int64_t* begin, int64_t* end);

}  // namespace bidora
