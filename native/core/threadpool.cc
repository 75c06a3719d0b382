// Thread pool implementation: persistent workers woken per job by a generation counter.
#include "threadpool.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "errors.h"

namespace bidora {

namespace {

int detect_threads() {
  if (const char* forced = std::getenv("BIDORA_NUM_THREADS"); forced != nullptr && *forced != '\0') {
    char* end = nullptr;
    const long value = std::strtol(forced, &end, 10);
    if (end == forced || *end != '\0' || value < 1 || value > 1024) {
      throw RangeError(std::string("BIDORA_NUM_THREADS: expected an integer from 1 to 1024, got '") + forced + "'");
    }
    return static_cast<int>(value);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

thread_local bool inside_pool_job = false;

class ThreadPool {
 public:
  // Starts threads - 1 workers, or as many as the system grants: a thread that cannot be created (process limit,
  // address space for its stack) leaves the pool smaller instead of ending the process, and threads() says how
  // small. Workers never read threads_; only run() does.
  explicit ThreadPool(int threads) : requested_(threads) {
    bool refused = false;
    for (int index = 1; index < threads && !refused; ++index) {
      try {
        workers_.emplace_back([this, index] { worker_loop(index); });
      } catch (const std::system_error&) {
        refused = true;
      } catch (const std::bad_alloc&) {
        refused = true;
      }
    }
    // A refusal means the process is at its limit, and the host still needs room after us (V8 grows its heap and
    // starts threads of its own): hand a quarter of what was granted back.
    if (refused) retire_workers_from(workers_.size() * 3 / 4);
    threads_ = static_cast<int>(workers_.size()) + 1;
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  int threads() const { return threads_; }
  int requested() const { return requested_; }

  void run(int threads, const std::function<void(int, int)>& body) {
    threads = std::clamp(threads, 1, threads_);
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (threads == 1 || inside_pool_job || !busy.owns_lock()) {
      for (int index = 0; index < threads; ++index) body(index, threads);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      job_threads_ = threads;
      pending_.store(threads - 1, std::memory_order_relaxed);
      error_ = nullptr;
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    std::exception_ptr own_error;
    inside_pool_job = true;
    try {
      body(0, threads);
    } catch (...) {
      own_error = std::current_exception();
    }
    inside_pool_job = false;
    wait_for_workers();
    if (own_error) std::rethrow_exception(own_error);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // Stops and joins workers_[keep...] (pool indices above keep) before any job has run.
  void retire_workers_from(size_t keep) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      kept_workers_ = static_cast<int>(keep);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (size_t index = keep; index < workers_.size(); ++index) workers_[index].join();
    workers_.resize(keep);
  }

  void wait_for_workers() {
    // Short jobs finish within microseconds: spin briefly before sleeping.
    for (int spin = 0; spin < 20000; ++spin) {
      if (pending_.load(std::memory_order_acquire) == 0) return;
      std::this_thread::yield();
    }
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
  }

  // Training runs many small kernels back to back: a worker that has just finished spins a little while for the
  // next job before sleeping, so jobs do not each pay a futex wake-up (tens of microseconds in a VM).
  bool spin_for_job(uint64_t seen) {
    for (int spin = 0; spin < kSpinIterations; ++spin) {
      if (generation_.load(std::memory_order_acquire) != seen) return true;
#if defined(__x86_64__) || defined(_M_X64)
      __builtin_ia32_pause();
#endif
    }
    return false;
  }

  void worker_loop(int index) {
    inside_pool_job = true;
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int, int)>* body = nullptr;
      int threads = 0;
      {
        const bool woke = spin_for_job(seen);
        std::unique_lock<std::mutex> lock(mutex_);
        if (!woke) {
          sleepers_.fetch_add(1, std::memory_order_acq_rel);
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
          sleepers_.fetch_sub(1, std::memory_order_acq_rel);
        }
        seen = generation_.load(std::memory_order_acquire);
        if (stopping_ || index > kept_workers_) return;
        body = body_;
        threads = job_threads_;
      }
      if (index >= threads) continue;
      try {
        (*body)(index, threads);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }

  const int requested_;
  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex busy_;  // held by the one caller whose job the workers run
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  static constexpr int kSpinIterations = 4000;  // tens of microseconds of pause instructions
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> sleepers_{0};
  bool stopping_ = false;
  int kept_workers_ = std::numeric_limits<int>::max();  // workers with a higher pool index stop
  const std::function<void(int, int)>* body_ = nullptr;
  int job_threads_ = 0;
  std::atomic<int> pending_{0};
  std::exception_ptr error_;
};

ThreadPool& pool() {
  // Never destroyed: worker threads must not be joined during static destruction at process exit.
  static ThreadPool* instance = new ThreadPool(detect_threads());
  return *instance;
}

}  // namespace

std::atomic<int> thread_limit{1 << 20};

int num_threads() { return std::min(pool().threads(), thread_limit.load(std::memory_order_relaxed)); }

int pool_size() { return pool().threads(); }

int requested_pool_size() { return pool().requested(); }

int set_thread_limit(int threads) {
  if (threads < 1) throw RangeError("threads: expected an integer of at least 1, got " + std::to_string(threads));
  return std::min(thread_limit.exchange(std::min(threads, pool().threads())), pool().threads());
}

void run_on_threads(int threads, const std::function<void(int, int)>& body) {
  pool().run(std::min(threads, num_threads()), body);
}

void split_range(int64_t n, int64_t grain, int part, int parts, int64_t* begin, int64_t* end) {
  grain = std::max<int64_t>(grain, 1);
  const int64_t blocks = (n + grain - 1) / grain;
  const int64_t first = blocks * part / parts;
  const int64_t last = blocks * (part + 1) / parts;
  *begin = std::min(n, first * grain);
  *end = std::min(n, last * grain);
}

void parallel_for(int64_t n, int64_t grain, int64_t min_parallel, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t blocks = (n + grain - 1) / grain;
  int threads = static_cast<int>(std::min<int64_t>(num_threads(), blocks));
  if (n < min_parallel) threads = 1;
  if (threads <= 1) {
    body(0, n);
    return;
  }
  run_on_threads(threads, [&](int part, int parts) {
    int64_t begin, end;
    split_range(n, grain, part, parts, &begin, &end);
    if (begin < end) body(begin, end);
  });
}

}  // namespace bidora
