#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one go: the CUDA kernel check (bench/gpu/run.sh), the Node tests that
# need a GPU (test/cuda.test.ts, test/device.test.ts), and the BERT-base-sized step on 'cuda' against PyTorch
# (bench/gpu/node-step.mjs). The GPU machine has nvcc and PyTorch but no Node, so Node and the test packages travel.
#
#   bench/gpu/session.sh --pack   here, after `npm run build`: writes .gpu/ (Node and node_modules, xz; add `/.gpu/`
#                                 to .git/info/exclude), about 35 MB
#   bench/gpu/session.sh          there, with carry: .gpu, dist, build/Release/bidora.node, build/CMakeCache.txt,
#                                 build/bidora_cuda_host_test; logs and JSON go to $OUT
set -uo pipefail
cd "$(dirname "$0")/../.."

if [[ "${1:-}" == "--pack" ]]; then
  set -e
  mkdir -p .gpu
  xz -T0 -6 -c "$(readlink -f "$(command -v node)")" >.gpu/node.xz
  # The packages the tests and the addon's loader need; linters, docs tools and datasets stay behind.
  tar -cf - --exclude=node_modules/@stdlib --exclude=node_modules/typescript --exclude=node_modules/prettier \
    --exclude=node_modules/@shikijs --exclude=node_modules/clang-format --exclude=node_modules/@typescript-eslint \
    --exclude=node_modules/eslint --exclude=node_modules/typedoc --exclude=node_modules/lodash \
    --exclude=node_modules/@types --exclude=node_modules/@resvg --exclude=node_modules/lightningcss-linux-x64-gnu \
    node_modules | xz -T0 -6 >.gpu/nm.tar.xz
  du -sh .gpu
  exit 0
fi

out=${OUT:-build/gpu-session}
mkdir -p "$out" /tmp/node-bin
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/nvidia_smi.txt"
xz -dc .gpu/node.xz >/tmp/node-bin/node && chmod +x /tmp/node-bin/node
export PATH=/tmp/node-bin:$PATH
tar -xJf .gpu/nm.tar.xz
status=0

echo "== kernels: bench/gpu/run.sh"
OUT=$out bench/gpu/run.sh 2>&1 | tee "$out/gpu_check.log" || status=1

echo "== the addon sees: $(node -p "require('./build/Release/bidora.node').devices().join(', ')")"
echo "== Node GPU tests"
node node_modules/vitest/vitest.mjs run test/cuda.test.ts test/device.test.ts 2>&1 | tee "$out/vitest.log" || status=1

echo "== BERT-base-sized step on cuda"
OUT=$out node bench/gpu/node-step.mjs 2>&1 | tee "$out/node_step.log" || status=1
exit $status
