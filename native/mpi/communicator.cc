// MPI collectives with bounded waits (communicator.h). Non-blocking calls polled against a deadline: MPI's blocking
// collectives cannot be cancelled, so a peer SIGKILLed or stopped would hold the others for ever.
#include "communicator.h"

#include <string>

#include "../core/errors.h"

#ifdef BIDORA_HAVE_MPI
#include <dlfcn.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <thread>
#include <vector>
#endif

namespace bidora::mpi {

#ifndef BIDORA_HAVE_MPI

bool compiled() { return false; }

World collective(const std::string& name, float* const*, const int64_t*, int64_t, double) {
  throw RangeError("mpi: this build of bidora has no MPI (mpi.h was not found when it was compiled); '" + name +
                   "' cannot run");
}

#else

bool compiled() { return true; }

namespace {

constexpr int64_t kBucketFloats = int64_t{1} << 20;  // 4 MiB: large enough to stream, small enough to pipeline

World world;
bool initialised = false;
// Set when a collective failed or timed out: its requests may still be posted, so later collectives and
// MPI_Finalize (which would wait on the dead peer) must not run.
std::string broken;
std::vector<float> staging;  // the packed tensors, reused between calls

void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  broken = std::string(call) + " failed: " + std::string(text, length);
  throw std::runtime_error("mpi: " + broken);
}

// Open MPI can load its transports as plugins that resolve symbols of libmpi, but Node loads addons (and with them
// libmpi) with RTLD_LOCAL: libmpi is promoted to global scope before MPI_Init, as Python's mpi4py does.
void promote_libmpi() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &info) != 0 && info.dli_fname != nullptr) {
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  }
}

// MPI allows one initialisation per process, and finalizing belongs to the thread that initialised it: after a fit in
// a worker thread that has exited, MPI is gone for the rest of the process.
void refuse_if_finalized(const std::string& name) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {
    throw std::runtime_error("mpi: '" + name + "' after MPI_Finalize (the thread that initialised MPI has exited; " +
                             "MPI runs once per process)");
  }
}

void init() {
  refuse_if_finalized("init");
  if (initialised) return;
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    promote_libmpi();
    int provided = 0;
    // SERIALIZED: the trainer may run in a worker thread, but only one thread at a time calls MPI.
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world.size);
  initialised = true;
}

std::string describe(const char* what, int64_t floats, int64_t count) {
  if (count == 0) return what;
  char bytes[32];
  const double kilobytes = static_cast<double>(floats) * 4 / 1e3;
  if (kilobytes < 1e3) std::snprintf(bytes, sizeof bytes, "%.1f kB", kilobytes);
  if (kilobytes >= 1e3) std::snprintf(bytes, sizeof bytes, "%.2f MB", kilobytes / 1e3);
  return std::string(what) + " of " + std::to_string(count) + " tensors (" + bytes + ")";
}

// Polls `requests` until all completed, `on_done(i)` as each does; a deadline turns a dead or hung peer into an error.
// Spins briefly (a collective between ranks ready together completes in microseconds), then sleeps in growing steps
// so a rank that arrived early leaves the cores to the ranks still computing.
template <typename OnDone>
void wait_all(std::vector<MPI_Request>& requests, const std::string& what, double timeout_seconds, OnDone on_done) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  std::vector<int> indices(requests.size());
  size_t remaining = requests.size();
  auto pause = std::chrono::microseconds(0);
  while (remaining > 0) {
    int completed = 0;
    check(MPI_Testsome(static_cast<int>(requests.size()), requests.data(), &completed, indices.data(),
                       MPI_STATUSES_IGNORE),
          ("MPI_Testsome during " + what).c_str());
    if (completed == MPI_UNDEFINED) break;
    for (int index = 0; index < completed; ++index) on_done(indices[index]);
    remaining -= static_cast<size_t>(completed);
    if (remaining == 0 || completed > 0) {
      pause = std::chrono::microseconds(0);
      continue;
    }
    const double waited = std::chrono::duration<double>(clock::now() - start).count();
    if (waited > timeout_seconds) {
      char seconds[32];
      std::snprintf(seconds, sizeof seconds, "%.1f", waited);
      broken = what + " on rank " + std::to_string(world.rank) + " of " + std::to_string(world.size) +
               " did not complete within " + seconds +
               " s: another rank died, hangs, or is still computing (raise "
               "the timeout if a step legitimately takes longer)";
      throw std::runtime_error("mpi: " + broken);
    }
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
    pause = std::min(std::max(pause * 2, std::chrono::microseconds(1)), std::chrono::microseconds(100));
  }
}

// Packs the tensors into staging in order, `post(offset, length)` each bucket as soon as it is packed; `unpack` copies
// a completed bucket back. The tensors form one stream, so a tensor may span two buckets.
template <typename Post>
void bucketed(float* const* data, const int64_t* lengths, int64_t count, bool pack, const std::string& what,
              double timeout_seconds, Post post, float factor) {
  int64_t total = 0;
  for (int64_t index = 0; index < count; ++index) total += lengths[index];
  if (total == 0) return;
  if (static_cast<int64_t>(staging.size()) < total) staging.resize(static_cast<size_t>(total));
  float* packed = staging.data();
  // Copies between the stream's floats [begin, end) and the tensors, in either direction.
  auto copy = [&](int64_t begin, int64_t end, bool into_staging) {
    int64_t base = 0;
    for (int64_t index = 0; index < count && base < end; base += lengths[index], ++index) {
      const int64_t from = std::max(begin, base), to = std::min(end, base + lengths[index]);
      if (from >= to) continue;
      float* tensor = data[index] + (from - base);
      if (into_staging) {
        std::memcpy(packed + from, tensor, static_cast<size_t>(to - from) * sizeof(float));
      } else {
        for (int64_t at = from; at < to; ++at) tensor[at - from] = packed[at] * factor;
      }
    }
  };
  std::vector<MPI_Request> requests;
  for (int64_t begin = 0; begin < total; begin += kBucketFloats) {
    const int64_t end = std::min(total, begin + kBucketFloats);
    if (pack) copy(begin, end, true);
    requests.push_back(MPI_REQUEST_NULL);
    check(post(packed + begin, static_cast<int>(end - begin), &requests.back()), what.c_str());
  }
  wait_all(requests, what, timeout_seconds, [&](int bucket) {
    const int64_t begin = bucket * kBucketFloats;
    copy(begin, std::min(total, begin + kBucketFloats), false);
  });
}

}  // namespace

World collective(const std::string& name, float* const* data, const int64_t* lengths, int64_t count,
                 double timeout_seconds) {
  static const char* const kNames[] = {"init", "allreduceMean", "allreduceSum", "broadcast", "barrier", "finalize"};
  if (std::none_of(std::begin(kNames), std::end(kNames), [&](const char* known) { return name == known; })) {
    throw RangeError(
        "mpi: collective must be 'init', 'allreduceMean', 'allreduceSum', 'broadcast', 'barrier' or 'finalize', got '" +
        name + "'");
  }
  if (name == "init") {
    init();
    if (count >= 1 && lengths[0] >= 2) {
      data[0][0] = static_cast<float>(world.rank);
      data[0][1] = static_cast<float>(world.size);
    }
    return world;
  }
  if (name == "finalize") {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (initialised && broken.empty() && !finalized) MPI_Finalize();
    return world;
  }
  if (!initialised) throw RangeError("mpi: '" + name + "' before 'init'");
  refuse_if_finalized(name);
  if (!broken.empty()) throw std::runtime_error("mpi: '" + name + "' after an earlier failure: " + broken);
  int64_t floats = 0;
  for (int64_t index = 0; index < count; ++index) floats += lengths[index];
  if (name == "barrier") {
    std::vector<MPI_Request> requests(1, MPI_REQUEST_NULL);
    check(MPI_Ibarrier(MPI_COMM_WORLD, requests.data()), "MPI_Ibarrier");
    wait_all(requests, "barrier", timeout_seconds, [](int) {});
  } else if (name == "allreduceMean" || name == "allreduceSum") {
    bucketed(
        data, lengths, count, true, describe(name.c_str(), floats, count), timeout_seconds,
        [](float* buffer, int length, MPI_Request* request) {
          return MPI_Iallreduce(MPI_IN_PLACE, buffer, length, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, request);
        },
        name == "allreduceSum" ? 1.0f : 1.0f / static_cast<float>(world.size));
  } else {
    bucketed(
        data, lengths, count, world.rank == 0, describe("broadcast", floats, count), timeout_seconds,
        [](float* buffer, int length, MPI_Request* request) {
          return MPI_Ibcast(buffer, length, MPI_FLOAT, 0, MPI_COMM_WORLD, request);
        },
        1.0f);
  }
  return world;
}

#endif

}  // namespace bidora::mpi
