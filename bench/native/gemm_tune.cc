// Standalone correctness check and tuning bench for bidora's GEMM against OpenBLAS cblas_sgemm, without Node.
//
// Build (from the repository root; objects go to /tmp):
//   g++ -O3 -std=c++17 -pthread -c native/cpu/gemm.cc -o /tmp/gemm.o
//   g++ -O3 -std=c++17 -pthread -c native/cpu/gemm_avx2.cc -mavx2 -mfma -mf16c -o /tmp/gemm_avx2.o
//   g++ -O3 -std=c++17 -pthread -c native/cpu/gemm_avx512.cc -o /tmp/gemm_avx512.o
//       -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma   (same command line as above, continued)
//   g++ -O3 -std=c++17 -pthread bench/native/gemm_tune.cc native/core/*.cc /tmp/gemm*.o -o /tmp/gemm_tune -lopenblas
// Run:
//   /tmp/gemm_tune check                        every path, transposes, odd sizes, strides, alpha/beta, 1 vs 2 threads
//   /tmp/gemm_tune check-stacked                gemm_stacked only (also part of check)
//   OPENBLAS_CORETYPE=SkylakeX /tmp/gemm_tune bench [repeats]       square and LoRA-adapter shapes, 1 and 2 threads
//   OPENBLAS_CORETYPE=SkylakeX /tmp/gemm_tune shape m n k ta tb threads [repeats]
//   BIDORA_GEMM_BLOCKING=kc,mc,nc overrides the active path's block sizes (for sweeps).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../native/core/cpu_features.h"
#include "../../native/core/threadpool.h"
#include "../../native/cpu/gemm.h"
#include "../../native/cpu/gemm_kernels.h"

extern "C" void openblas_set_num_threads(int);

namespace {

using bidora::Isa;
using bidora::cpu::GemmOperands;

std::vector<float> random_vector(size_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Row-major A (m x k, or k x m stored when trans_a), B likewise, with padded leading dimensions when `pad`, and C
// with a column stride of `c_col` (2 exercises strided C columns).
struct Case {
  int64_t m, n, k;
  bool ta, tb;
  float alpha, beta;
  int64_t pad;
  int64_t c_col;
  bool c_transposed;  // C stored column-major
};

int check_case(const Case& cs, Isa isa, std::mt19937& rng) {
  const int64_t a_rows = cs.ta ? cs.k : cs.m, a_cols = cs.ta ? cs.m : cs.k;
  const int64_t b_rows = cs.tb ? cs.n : cs.k, b_cols = cs.tb ? cs.k : cs.n;
  const int64_t lda = a_cols + cs.pad, ldb = b_cols + cs.pad;
  auto a = random_vector(a_rows * lda + 1, rng);
  auto b = random_vector(b_rows * ldb + 1, rng);
  int64_t c_row, c_col, c_size;
  if (cs.c_transposed) {
    c_row = 1;
    c_col = cs.m + cs.pad;
    c_size = cs.n * c_col;
  } else {
    c_col = cs.c_col;
    c_row = cs.n * cs.c_col + cs.pad;
    c_size = cs.m * c_row;
  }
  auto c0 = random_vector(c_size + 1, rng);
  if (cs.beta == 0.0f) std::fill(c0.begin(), c0.end(), std::nanf(""));
  GemmOperands ops{nullptr,         c_row, c_col, a.data(), cs.ta ? 1 : lda, cs.ta ? lda : 1, b.data(), cs.tb ? 1 : ldb,
                   cs.tb ? ldb : 1, cs.m,  cs.n,  cs.k,     cs.alpha,        cs.beta};
  auto ref = c0;
  ops.c = ref.data();
  bidora::cpu::gemm_reference(ops);
  auto got = c0;
  ops.c = got.data();
  bidora::set_thread_limit(1);
  bidora::cpu::gemm(ops, isa);
  auto got2 = c0;
  ops.c = got2.data();
  bidora::set_thread_limit(64);
  bidora::cpu::gemm(ops, isa);
  double max_ref = 0.0, max_diff = 0.0;
  bool untouched_ok = true;
  for (int64_t i = 0; i < cs.m; ++i) {
    for (int64_t j = 0; j < cs.n; ++j) {
      const int64_t at = i * c_row + j * c_col;
      max_ref = std::max(max_ref, (double)std::fabs(ref[at]));
      const double diff = std::fabs((double)ref[at] - got[at]);
      max_diff = std::max(max_diff, std::isnan(diff) ? 1e30 : diff);
    }
  }
  // Elements outside C (padding) must be untouched; NaN-filled padding compares by bits.
  std::vector<char> inside(c0.size(), 0);
  for (int64_t i = 0; i < cs.m; ++i)
    for (int64_t j = 0; j < cs.n; ++j) inside[i * c_row + j * c_col] = 1;
  for (size_t e = 0; e < c0.size(); ++e) {
    if (!inside[e] && std::memcmp(&got[e], &c0[e], 4) != 0) untouched_ok = false;
  }
  const bool same_threads = std::memcmp(got.data(), got2.data(), got.size() * sizeof(float)) == 0;
  // max|diff| / max|ref|, except that a C of one or two elements can cancel to almost nothing: then the typical size
  // of a dot product of k values uniform in [-1, 1] (sqrt(k) / 3, times alpha) is the scale instead.
  const double typical = std::fabs(cs.alpha) * std::sqrt((double)cs.k) / 3.0;
  const double rel = max_diff / std::max({max_ref, typical, 1e-30});
  const bool ok = rel < 1e-5 && same_threads && untouched_ok;
  if (!ok) {
    std::printf(
        "FAIL %s m=%ld n=%ld k=%ld ta=%d tb=%d alpha=%g beta=%g pad=%ld c_col=%ld ct=%d rel=%g threads_equal=%d "
        "untouched=%d\n",
        bidora::isa_name(isa), (long)cs.m, (long)cs.n, (long)cs.k, cs.ta, cs.tb, cs.alpha, cs.beta, (long)cs.pad,
        (long)cs.c_col, cs.c_transposed, rel, same_threads, untouched_ok);
  }
  return ok ? 0 : 1;
}

int run_checks() {
  std::mt19937 rng(7);
  const int64_t sizes[] = {1, 7, 33, 130, 257, 1100};
  int failures = 0, total = 0;
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512}) {
    if (!bidora::isa_supported(isa)) continue;
    int64_t index = 0;
    for (int64_t m : sizes)
      for (int64_t n : sizes)
        for (int64_t k : sizes) {
          // The full cube with 1100 everywhere is slow in the reference: keep at most one 1100 per case.
          if ((m == 1100) + (n == 1100) + (k == 1100) > 1) continue;
          for (int t = 0; t < 4; ++t) {
            ++index;
            Case cs{m, n, k, (t & 1) != 0, (t & 2) != 0, 1.0f, 0.0f, 0, 1, false};
            switch (index % 5) {
              case 1:
                cs.alpha = -0.75f;
                cs.beta = 0.5f;
                break;
              case 2:
                cs.pad = 3;
                cs.beta = 1.0f;
                break;
              case 3:
                cs.c_col = 2;
                cs.alpha = 2.0f;
                cs.beta = -1.5f;
                break;
              case 4:
                cs.c_transposed = true;
                cs.pad = 5;
                cs.beta = 0.25f;
                break;
              default:
                break;
            }
            failures += check_case(cs, isa, rng);
            ++total;
          }
        }
    // The adapter shapes in every transpose combination, plain and with alpha/beta.
    const int64_t adapter[][3] = {{512, 8, 1024}, {512, 1024, 8}, {8, 1024, 512}, {1024, 8, 512}};
    for (auto& s : adapter)
      for (int t = 0; t < 4; ++t)
        for (int variant = 0; variant < 3; ++variant) {
          Case cs{s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0, 1.0f, 0.0f, 0, 1, false};
          if (variant == 1) {
            cs.alpha = 0.5f;
            cs.beta = 2.0f;
            cs.pad = 1;
          }
          if (variant == 2) {
            cs.c_transposed = true;
            cs.beta = 1.0f;
          }
          failures += check_case(cs, isa, rng);
          ++total;
        }
  }
  std::printf("%d of %d cases passed\n", total - failures, total);
  return failures == 0 ? 0 : 1;
}

// gemm_stacked: blocks of assorted heights, A orientations, C layouts and alpha/beta against one shared B. Each block
// must match the reference, 1 and 2 threads must agree bitwise, padding must stay untouched, and a block whose plain
// call takes the untransposed packed form (contiguous C columns, n >= 32, m > 16) must match that call bitwise.
int check_stacked_case(Isa isa, int64_t n, int64_t k, bool tb, const std::vector<int64_t>& heights, std::mt19937& rng) {
  const int count = static_cast<int>(heights.size());
  auto b = random_vector(k * n + 1, rng);
  const int64_t b_rs = tb ? 1 : n, b_cs = tb ? k : 1;
  std::vector<std::vector<float>> as(count), c0(count);
  std::vector<GemmOperands> ops(count);
  std::vector<char> padded(count);
  for (int i = 0; i < count; ++i) {
    const int64_t m = heights[i];
    const bool ta = (i + n) % 2 == 1;
    as[i] = random_vector(m * k + 1, rng);
    const int layout = (i * 7 + static_cast<int>(k)) % 3;  // 0 row-major, 1 strided columns, 2 column-major
    int64_t crs, ccs, size;
    if (layout == 0) {
      crs = n + 2, ccs = 1, size = m * crs;
    } else if (layout == 1) {
      crs = 2 * n, ccs = 2, size = m * crs;
    } else {
      crs = 1, ccs = m + 3, size = n * ccs;
    }
    c0[i] = random_vector(size + 1, rng);
    const float alphas[] = {1.0f, -0.75f, 2.0f, 0.0f};
    const float betas[] = {0.0f, 1.0f, 0.5f, -1.5f};
    const float alpha = alphas[(i + count) % 4 == 3 && i % 2 == 0 ? 3 : i % 3];
    const float beta = betas[(i + static_cast<int>(n)) % 4];
    if (beta == 0.0f) std::fill(c0[i].begin(), c0[i].end(), std::nanf(""));
    ops[i] = GemmOperands{nullptr, crs, ccs, as[i].data(), ta ? 1 : k, ta ? m : 1, b.data(), b_rs, b_cs,
                          m,       n,   k,   alpha,        beta};
    padded[i] = layout == 0 ? 1 : 0;
  }
  auto run = [&](int threads, bool stacked) {
    std::vector<std::vector<float>> out = c0;
    for (int i = 0; i < count; ++i) ops[i].c = out[i].data();
    bidora::set_thread_limit(threads);
    if (stacked) {
      bidora::cpu::gemm_stacked(ops.data(), count, isa);
    } else {
      for (int i = 0; i < count; ++i) bidora::cpu::gemm(ops[i], isa);
    }
    bidora::set_thread_limit(64);
    return out;
  };
  const auto one = run(1, true), two = run(2, true), plain = run(2, false);
  int failures = 0;
  for (int i = 0; i < count; ++i) {
    auto ref = c0[i];
    GemmOperands o = ops[i];
    o.c = ref.data();
    bidora::cpu::gemm_reference(o);
    double max_ref = 0, max_diff = 0;
    for (size_t e = 0; e < ref.size(); ++e) {
      const bool untouched = std::memcmp(&ref[e], &c0[i][e], 4) == 0 && std::isnan(ref[e]);
      if (untouched) continue;  // padding, or NaN where beta == 0 would have overwritten it (none remain)
      max_ref = std::max(max_ref, (double)std::fabs(ref[e]));
      const double diff = std::fabs((double)ref[e] - one[i][e]);
      max_diff = std::max(max_diff, std::isnan(diff) ? 1e30 : diff);
    }
    const double typical = std::fabs(o.alpha) * std::sqrt((double)k) / 3.0;
    const double rel = max_diff / std::max({max_ref, typical, 1e-30});
    const bool threads_equal = std::memcmp(one[i].data(), two[i].data(), one[i].size() * 4) == 0;
    // Padding (row-major C's last two columns per row, the strided layouts' gaps) must keep its bits.
    bool untouched_ok = true;
    std::vector<char> inside(c0[i].size(), 0);
    for (int64_t r = 0; r < o.m; ++r)
      for (int64_t j = 0; j < n; ++j) inside[r * o.c_row_stride + j * o.c_col_stride] = 1;
    for (size_t e = 0; e < c0[i].size(); ++e) {
      if (!inside[e] && std::memcmp(&one[i][e], &c0[i][e], 4) != 0) untouched_ok = false;
    }
    const bool expect_bits = o.c_col_stride == 1 && n >= 32 && o.m > 16;
    const bool bits_ok = !expect_bits || std::memcmp(one[i].data(), plain[i].data(), one[i].size() * 4) == 0;
    if (!(rel < 1e-5 && threads_equal && untouched_ok && bits_ok)) {
      std::printf(
          "FAIL stacked %s n=%ld k=%ld tb=%d block %d/%d m=%ld alpha=%g beta=%g ccs=%ld rel=%g threads=%d "
          "untouched=%d bits=%d\n",
          bidora::isa_name(isa), (long)n, (long)k, tb, i, count, (long)o.m, o.alpha, o.beta, (long)o.c_col_stride, rel,
          threads_equal, untouched_ok, bits_ok);
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}

int run_stacked_checks() {
  std::mt19937 rng(11);
  int failures = 0, total = 0;
  const std::vector<std::vector<int64_t>> stacks = {
      {40, 16}, {5, 0, 130}, {1, 1, 1}, {257, 13, 7}, {12, 12, 12, 12}, {33, 4, 9, 2, 100, 1, 17, 30, 5, 64}};
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512}) {
    if (!bidora::isa_supported(isa)) continue;
    for (int64_t n : {7, 33, 130, 520})
      for (int64_t k : {1, 64, 400, 1100})
        for (int tb = 0; tb < 2; ++tb)
          for (const auto& heights : stacks) {
            failures += check_stacked_case(isa, n, k, tb != 0, heights, rng);
            ++total;
          }
  }
  std::printf("%d of %d stacked cases passed\n", total - failures, total);
  return failures == 0 ? 0 : 1;
}

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Timing {
  double bidora, openblas;  // best GFLOP/s
};

Timing time_shape(int64_t m, int64_t n, int64_t k, bool ta, bool tb, int threads, int repeats) {
  std::mt19937 rng(1);
  auto a = random_vector(m * k, rng), b = random_vector(k * n, rng), c = random_vector(m * n, rng);
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;
  GemmOperands ops{c.data(),     n, 1, a.data(), ta ? 1 : lda, ta ? lda : 1, b.data(), tb ? 1 : ldb,
                   tb ? ldb : 1, m, n, k,        1.0f,         0.0f};
  bidora::set_thread_limit(threads);
  openblas_set_num_threads(threads);
  const double flops = 2.0 * m * n * k;
  // Enough calls per sample that tiny shapes are not dominated by clock resolution.
  const int inner = std::max<int>(1, std::min<double>(200, 4e9 / flops));
  auto run_ours = [&] {
    for (int i = 0; i < inner; ++i) bidora::cpu::gemm(ops);
  };
  auto run_blas = [&] {
    for (int i = 0; i < inner; ++i)
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
                  1.0f, a.data(), (int)lda, b.data(), (int)ldb, 0.0f, c.data(), (int)n);
  };
  run_blas();
  run_ours();
  double best_ours = 1e30, best_blas = 1e30;
  for (int r = 0; r < repeats; ++r) {
    // OpenBLAS workers busy-wait for a while after each call and would steal the second core from ours.
    std::this_thread::sleep_for(std::chrono::milliseconds(threads > 1 ? 150 : 0));
    double t0 = seconds_now();
    run_ours();
    best_ours = std::min(best_ours, (seconds_now() - t0) / inner);
    t0 = seconds_now();
    run_blas();
    best_blas = std::min(best_blas, (seconds_now() - t0) / inner);
  }
  return {flops / best_ours * 1e-9, flops / best_blas * 1e-9};
}

void print_timing(const char* label, int64_t m, int64_t n, int64_t k, bool ta, bool tb, int threads, int repeats) {
  const Timing t = time_shape(m, n, k, ta, tb, threads, repeats);
  std::printf("%-10s %5ld %5ld %5ld  tA=%d tB=%d  thr=%d  bidora %7.1f  openblas %7.1f  ratio %.2f\n", label, (long)m,
              (long)n, (long)k, ta, tb, threads, t.bidora, t.openblas, t.bidora / t.openblas);
  std::fflush(stdout);
}

void run_bench(int repeats) {
  for (int threads : {2, 1}) {
    for (int64_t s : {512, 1024, 2048}) print_timing("square", s, s, s, false, false, threads, repeats);
  }
  for (int t = 1; t < 4; ++t) print_timing("square", 2048, 2048, 2048, t & 1, t & 2, 2, repeats);
  for (int threads : {2, 1}) {
    print_timing("x.A^T", 512, 8, 1024, false, true, threads, repeats * 3);
    print_timing("h.B^T", 512, 1024, 8, false, true, threads, repeats * 3);
    print_timing("g^T.x", 8, 1024, 512, true, false, threads, repeats * 3);
    print_timing("gy^T.h", 1024, 8, 512, true, false, threads, repeats * 3);
    print_timing("gy.B", 512, 8, 1024, false, false, threads, repeats * 3);
    print_timing("gh.A", 512, 1024, 8, false, false, threads, repeats * 3);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* blocking = std::getenv("BIDORA_GEMM_BLOCKING")) {
    long kc, mc, nc;
    if (std::sscanf(blocking, "%ld,%ld,%ld", &kc, &mc, &nc) == 3) {
      bidora::cpu::kernels::override_blocking(static_cast<int>(bidora::active_isa()), kc, mc, nc);
    }
  }
  const std::string mode = argc > 1 ? argv[1] : "check";
  if (mode == "check") return run_checks() | run_stacked_checks();
  if (mode == "check-stacked") return run_stacked_checks();
  if (mode == "bench") {
    run_bench(argc > 2 ? std::atoi(argv[2]) : 5);
    return 0;
  }
  if (mode == "shape" && argc >= 8) {
    print_timing("shape", std::atol(argv[2]), std::atol(argv[3]), std::atol(argv[4]), std::atoi(argv[5]) != 0,
                 std::atoi(argv[6]) != 0, std::atoi(argv[7]), argc > 8 ? std::atoi(argv[8]) : 5);
    return 0;
  }
  std::fprintf(stderr, "usage: gemm_tune check | bench [repeats] | shape m n k ta tb threads [repeats]\n");
  return 2;
}
