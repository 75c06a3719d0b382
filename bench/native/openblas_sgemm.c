/* Times OpenBLAS cblas_sgemm (row-major) on one shape so the benchmark suite can compare bidora's GEMM against it. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float* random_matrix(long count, unsigned* state) {
  float* data = malloc((size_t)(count > 0 ? count : 1) * sizeof(float));
  if (!data) {
    fprintf(stderr, "openblas_sgemm: out of memory\n");
    exit(1);
  }
  for (long i = 0; i < count; ++i) {
    *state = *state * 1664525u + 1013904223u;
    data[i] = (float)((*state >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0);
  }
  return data;
}

int main(int argc, char** argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: openblas_sgemm <m> <n> <k> <transA 0|1> <transB 0|1> <repeats>\n");
    return 2;
  }
  const long m = atol(argv[1]), n = atol(argv[2]), k = atol(argv[3]);
  const int trans_a = atoi(argv[4]), trans_b = atoi(argv[5]);
  const int repeats = atoi(argv[6]);
  if (m < 1 || n < 1 || k < 1 || repeats < 1) {
    fprintf(stderr, "openblas_sgemm: m, n, k and repeats must be positive\n");
    return 2;
  }
  unsigned state = 12345u;
  float* a = random_matrix(m * k, &state);
  float* b = random_matrix(k * n, &state);
  float* c = random_matrix(m * n, &state);
  /* Row-major storage: A is m x k (or k x m when transposed), B is k x n (or n x k). */
  const int lda = trans_a ? (int)m : (int)k;
  const int ldb = trans_b ? (int)k : (int)n;
  const enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;

  cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0f, a, lda, b, ldb, 0.0f, c, (int)n);
  double* seconds = malloc((size_t)repeats * sizeof(double));
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const double start = now_seconds();
    cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0f, a, lda, b, ldb, 0.0f, c, (int)n);
    seconds[r] = now_seconds() - start;
    if (seconds[r] < best) best = seconds[r];
  }
  printf("{\"m\":%ld,\"n\":%ld,\"k\":%ld,\"transA\":%d,\"transB\":%d,\"seconds\":[", m, n, k, trans_a, trans_b);
  for (int r = 0; r < repeats; ++r) printf(r ? ",%.9g" : "%.9g", seconds[r]);
  printf("],\"gflops\":%.3f}\n", 2.0 * (double)m * (double)n * (double)k / best * 1e-9);
  free(seconds);
  free(a);
  free(b);
  free(c);
  return 0;
}
