// The CPU backend of the op contract (../common/ops.h): every op, on the kernels of this folder.
#pragma once

#include "../common/ops.h"

namespace bidora::cpu {

const ops::Backend& backend();

}  // namespace bidora::cpu
