// What the AVX-512 GEMM files share (gemm_avx512.cc's float32 kernels, gemm_bf16_avx512.cc's bfloat16 pair kernels):
// edge masks and an in-register 16x16 transpose of 32-bit elements. Include only from files compiled with AVX-512
// flags.
#pragma once

#include <immintrin.h>

namespace bidora::cpu::kernels {

namespace {

// The lowest `count` of 16 lanes (all for 16 or more, none for 0 or fewer).
inline __mmask16 low_mask(int count) {
  if (count >= 16) return 0xFFFF;
  if (count <= 0) return 0;
  return static_cast<__mmask16>((1u << count) - 1);
}

// In-register 16x16 transpose: on entry v[r] is row r, on return v[c] is column c. (All-ones zero-masked forms
// because the plain intrinsics trip a false -Wuninitialized in GCC 12 headers; they compile to the same code.)
inline void transpose16(__m512 v[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_maskz_unpacklo_ps(0xFFFF, v[i], v[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_ps(0xFFFF, v[i], v[i + 1]);
  }
  const auto pd = [](__m512 x) { return _mm512_castps_pd(x); };
  for (int i = 0; i < 16; i += 4) {
    v[i] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, pd(t[i]), pd(t[i + 2])));
    v[i + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, pd(t[i]), pd(t[i + 2])));
    v[i + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, pd(t[i + 1]), pd(t[i + 3])));
    v[i + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, pd(t[i + 1]), pd(t[i + 3])));
  }
  // Now v[4g + c] holds, in 128-bit lane L, rows 4g..4g+3 of column 4L + c: gather the lanes across g.
  for (int c = 0; c < 4; ++c) {
    const __m512 x0 = _mm512_maskz_shuffle_f32x4(0xFFFF, v[c], v[4 + c], 0x88);
    const __m512 x1 = _mm512_maskz_shuffle_f32x4(0xFFFF, v[c], v[4 + c], 0xDD);
    const __m512 y0 = _mm512_maskz_shuffle_f32x4(0xFFFF, v[8 + c], v[12 + c], 0x88);
    const __m512 y1 = _mm512_maskz_shuffle_f32x4(0xFFFF, v[8 + c], v[12 + c], 0xDD);
    t[c] = _mm512_maskz_shuffle_f32x4(0xFFFF, x0, y0, 0x88);
    t[8 + c] = _mm512_maskz_shuffle_f32x4(0xFFFF, x0, y0, 0xDD);
    t[4 + c] = _mm512_maskz_shuffle_f32x4(0xFFFF, x1, y1, 0x88);
    t[12 + c] = _mm512_maskz_shuffle_f32x4(0xFFFF, x1, y1, 0xDD);
  }
  for (int i = 0; i < 16; ++i) v[i] = t[i];
}

}  // namespace

}  // namespace bidora::cpu::kernels
