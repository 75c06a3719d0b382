// The marker that lets one header of math serve the CUDA kernels, the CPU kernels and the host test: __host__
// __device__ under nvcc, a plain static inline function under a host compiler.
#pragma once

#if defined(__CUDACC__)
#define BIDORA_HD __host__ __device__ __forceinline__
#else
// static: each translation unit keeps its own copy. The per-ISA CPU files (compiled with AVX-512 flags) include these
// headers too, and an inline function with external linkage would let the linker hand their copy to the portable path.
#define BIDORA_HD static inline
#endif
