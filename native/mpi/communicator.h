// Data-parallel collectives over MPI for the trainers (lib/train/distributed.ts): the world, the all-reduce of
// gradients, the broadcast of initial weights, a barrier. Compiled against MPI when CMake finds it (BIDORA_HAVE_MPI);
// otherwise every collective but compiled() throws. Every wait is bounded: a peer that died or hangs turns into an
// error naming the collective and how long it waited, never a process blocked for ever.
#pragma once

#include <cstdint>
#include <string>

namespace bidora::mpi {

// Whether this build has MPI.
bool compiled();

struct World {
  int rank = 0;
  int size = 1;
};

// One collective by name, over `count` float tensors (data[i] of lengths[i] floats), each wait bounded by
// `timeout_seconds`:
//   'init'          MPI_Init_thread once per process (idempotent); writes rank and size into data[0][0..1] when
//                   given a tensor of two or more floats.
//   'allreduceMean' every tensor replaced, in place, by its mean over the ranks (summed in buckets of 4 MiB).
//   'allreduceSum'  every tensor replaced, in place, by its sum over the ranks.
//   'broadcast'     every tensor replaced, in place, by rank 0's.
//   'barrier'       returns when every rank has entered it.
//   'finalize'      MPI_Finalize (no-op when never initialised, or after a failed collective left requests behind).
// Returns the world (rank, size) after the call. Throws bidora::RangeError for an unknown name or a collective before
// 'init', std::runtime_error for an MPI failure or a timeout.
World collective(const std::string& name, float* const* data, const int64_t* lengths, int64_t count,
                 double timeout_seconds);

}  // namespace bidora::mpi
