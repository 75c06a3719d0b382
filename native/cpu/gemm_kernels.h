// Private contract between the GEMM driver (gemm.cc) and its per-ISA micro-kernels (gemm_avx2.cc, gemm_avx512.cc).
#pragma once

#include <cstdint>

namespace bidora::cpu::kernels {

// One register tile of C: C[rows x cols] = alpha * A B + beta * C, with A(r, p) = a[p * a_k_stride + r] and
// B(p, j) = b[p * b_k_stride + j]. Packed panels use a_k_stride = MR and b_k_stride = NR; an operand that is already
// laid out that way in the caller's memory is passed directly with its own stride. Every kernel accumulates each C
// element as one FMA chain over p in order from zero, then applies alpha and beta, so which kernel or tile computes an
// element never changes its value. beta == 0 means C is only written. C columns are contiguous (stride 1).
struct Tile {
  int64_t k;
  const float* a;
  int64_t a_k_stride;
  const float* b;
  int64_t b_k_stride;
  float* c;
  int64_t c_row_stride;
  int rows, cols;
  // True when B is a zero-padded packed panel, so reading all NR columns is safe even when cols < NR.
  bool b_padded;
  float alpha, beta;
};

using TileKernel = void (*)(const Tile& tile);

struct TileKernelInfo {
  int mr, nr;
  TileKernel run;
};

// Dot-product form for a thin C (few columns): C(i, j) = alpha * sum_p A(i, p) Bt(j, p) + beta * C(i, j) with rows of
// A and of Bt contiguous along p, so A streams from memory once without packing.
struct DotBlock {
  int64_t m, n, k;
  const float* a;
  int64_t a_row_stride;
  const float* bt;
  int64_t bt_row_stride;
  float* c;
  int64_t c_row_stride, c_col_stride;
  float alpha, beta;
};

// Tuning hook (bench/native/gemm_tune.cc): replaces the KC/MC/NC block sizes of one path for this process.
void override_blocking(int isa, int64_t kc, int64_t mc, int64_t nc);

#if defined(__x86_64__) || defined(_M_X64)
TileKernelInfo tile_kernel_avx2();
TileKernelInfo tile_kernel_avx512();
void dot_block_avx2(const DotBlock& block);
void dot_block_avx512(const DotBlock& block);
#endif

}  // namespace bidora::cpu::kernels
