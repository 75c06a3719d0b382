#!/usr/bin/env bash
# The GPU check of the CUDA backend, for a machine with an NVIDIA GPU and nvcc (no Node needed): builds the kernels of
# native/cuda with the standalone check program bench/gpu/cuda_check.cu, runs the host math test, then every kernel
# against its CPU reference and the DoRA / LoRA / GEMM timings. Results print as a table; with $OUT set, JSON goes to
# $OUT/cuda_check.json. About a minute to build and well under ten to run on one H200.
#
# Usage: bench/gpu/run.sh [--checks-only | --build-only]
#   CUDA_ARCH (default 90: sm_90 machine code; 80 for A100), NVCC (default: nvcc on the PATH, else /usr/local/cuda),
#   BUILD_DIR (default build/gpu, inside the ignored build folder).
set -euo pipefail
cd "$(dirname "$0")/../.."

nvcc_bin=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
arch=${CUDA_ARCH:-90}
build_dir=${BUILD_DIR:-build/gpu}
mkdir -p "$build_dir"

echo "building with $nvcc_bin for sm_$arch into $build_dir"
start=$(date +%s)
# --threads 0: nvcc compiles its per-file device passes in parallel.
"$nvcc_bin" -std=c++17 -O3 -lineinfo --threads 0 -arch="sm_$arch" -Inative/cuda \
  native/cuda/*.cu bench/gpu/cuda_check.cu -o "$build_dir/cuda_check"
"${CXX:-g++}" -std=c++17 -O2 -Wall -Wextra native/cuda/test_host_math.cc -o "$build_dir/cuda_host_test"
echo "built in $(($(date +%s) - start)) s"

"$build_dir/cuda_host_test"
if [[ "${1:-}" == "--build-only" ]]; then exit 0; fi
"$build_dir/cuda_check" "$@"
