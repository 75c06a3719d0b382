// The collectives of data-parallel training (native/mpi) as one op, `mpi`; lib/binding.ts documents it.
#include "../mpi/communicator.h"
#include "op.h"

namespace bidora::binding {
namespace {
struct MpiArgs {
  std::string collective;
  TensorList tensors;
  double timeout;
};
using M = MpiArgs;
const OpSpec<M> kMpi("mpi", Runs::kCpu, nullptr,
                     {arg<&M::collective>("collective"), arg<&M::tensors>("tensors", kWritten),
                      arg<&M::timeout>("timeout", kPositive)},
                     nullptr, [](const Call&, M& op) {
                       const TensorList& t = op.tensors;
                       mpi::collective(op.collective, t.data.data(), t.lengths.data(), t.count(), op.timeout);
                     });
}  // namespace
}  // namespace bidora::binding
