// The MPI collectives of data-parallel training (native/mpi) as one op, `mpi` (lib/binding.ts documents it).
#include "../mpi/communicator.h"
#include "op.h"

namespace bidora::binding {
namespace {
struct MpiArgs {
  std::string collective;
  TensorList tensors;
  int64_t root;
  double timeout;
};
using M = MpiArgs;
const OpSpec<M> kMpi("mpi", Runs::kCpu, nullptr,
                     {arg<&M::collective>("collective"), arg<&M::tensors>("tensors", kWritten),
                      arg<&M::root>("root", closed(0, kMaxInt32)), arg<&M::timeout>("timeout", kPositive)},
                     nullptr, [](const Call& call, M& op) -> Napi::Value {
                       const TensorList& t = op.tensors;
                       const mpi::World world = mpi::collective(op.collective, t.data.data(), t.lengths.data(),
                                                                t.count(), static_cast<int>(op.root), op.timeout);
                       Napi::Object result = Napi::Object::New(call.env);
                       result.Set("rank", world.rank);
                       result.Set("worldSize", world.size);
                       return result;
                     });
}  // namespace
}  // namespace bidora::binding
