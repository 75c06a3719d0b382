// Host test of the CUDA kernels' shared math (the .cuh headers, built here with a plain C++ compiler): replays the
// GEMM kernels' tiling, split-K included, and runs the DoRA row math, the row kernels' lane-strided loops (RMS norm's
// too), AdamW and the hypergradient and SGD against plain double references on fresh random inputs, and the layout
// kernels' index maps and dropout's mask. Needs no GPU. Exit status 0: all pass. BIDORA_TEST_SEED pins the seed; it is
// printed either way.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../common/position_math.h"
#include "dora_math.cuh"
#include "gemm_tiles.cuh"
#include "nn_math.cuh"
#include "random_math.cuh"
#include "shape_math.cuh"

namespace {

using namespace bidora::cuda;
using Vector = std::vector<float>;

constexpr int kLanes = 32;  // what the row kernels run with: one warp per row
const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::mt19937_64 rng;
int failures = 0;

Vector random_vector(int64_t count, float spread = 1.0f) {
  std::normal_distribution<float> normal(0.0f, spread);
  Vector values(count);
  for (float& value : values) value = normal(rng);
  return values;
}

int64_t random_size(int64_t low, int64_t high) { return std::uniform_int_distribution<int64_t>(low, high)(rng); }

// max|actual − expected| / max|expected| (NaN counts as infinite), as the TypeScript tests measure.
double relative_error(const Vector& actual, const std::vector<double>& expected) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double diff = std::fabs(actual[i] - expected[i]);
    max_diff = std::isnan(diff) ? INFINITY : std::max(max_diff, diff);
    max_ref = std::max(max_ref, std::fabs(expected[i]));
  }
  return max_ref == 0 ? max_diff : max_diff / max_ref;
}

// Each failed check prints once (a wrong index fails thousands of times); all of them are counted.
void expect(bool condition, const char* what) {
  static std::set<std::string> reported;
  if (condition) return;
  ++failures;
  if (reported.insert(what).second) std::printf("FAIL %s\n", what);
}

void expect_close(const Vector& actual, const std::vector<double>& expected, double tolerance, const char* what) {
  const double error = relative_error(actual, expected);
  if (!(error <= tolerance)) {
    std::printf("FAIL %s: relative error %.3g > %.3g\n", what, error, tolerance);
    ++failures;
  }
}

// Σ over the 32 lanes of a strided partial, in lane order (the kernels use a shuffle tree: same terms, other order).
double over_lanes(const std::function<double(int, int)>& partial) {
  double total = 0;
  for (int lane = 0; lane < kLanes; ++lane) total += partial(lane, kLanes);
  return total;
}

void for_lanes(const std::function<void(int, int)>& body) {
  for (int lane = 0; lane < kLanes; ++lane) body(lane, kLanes);
}

// ---- GEMM tiling ----------------------------------------------------------------------------------------------------

struct GemmCase {
  int64_t m, n, k;
  bool a_transposed, b_transposed;
  float alpha, beta;
  Vector a, b, c;
};

GemmCase random_gemm_case(int64_t max_m, int64_t max_n, int64_t max_k) {
  GemmCase g;
  g.m = random_size(1, max_m);
  g.n = random_size(1, max_n);
  g.k = random_size(0, max_k);
  g.a_transposed = rng() & 1;
  g.b_transposed = rng() & 1;
  g.alpha = random_vector(1)[0];
  g.beta = (rng() & 1) ? 0.0f : random_vector(1)[0];
  g.a = random_vector(g.m * g.k);
  g.b = random_vector(g.k * g.n);
  g.c = random_vector(g.m * g.n);
  if (g.beta == 0.0f) std::fill(g.c.begin(), g.c.end(), kNaN);  // beta 0 must never read C
  return g;
}

std::vector<double> gemm_reference(const GemmCase& g) {
  std::vector<double> out(g.m * g.n);
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double total = 0;
      for (int64_t p = 0; p < g.k; ++p) {
        total += static_cast<double>(g.a[operand_offset(i, p, g.m, g.k, g.a_transposed)]) *
                 g.b[operand_offset(p, j, g.k, g.n, g.b_transposed)];
      }
      out[i * g.n + j] = g.alpha * total + (g.beta == 0.0f ? 0.0 : g.beta * static_cast<double>(g.c[i * g.n + j]));
    }
  }
  return out;
}

// The kernels' epilogue (store_output in gemm.cu).
void store_output(Vector& c, int64_t row, int64_t col, float acc, const GemmCase& g, float alpha, float beta) {
  if (row >= g.m || col >= g.n) return;
  float& target = c[row * g.n + col];
  target = beta == 0.0f ? alpha * acc : alpha * acc + beta * target;
}

// Loads of one block's op(A) and op(B) tiles exactly as the kernels do; the tiles are (row, depth) and (depth, col).
void load_tiles(std::vector<float>& a_tile, std::vector<float>& b_tile, const GemmCase& g, int64_t row0, int64_t col0,
                int64_t k0, int64_t k_end, int block_rows, int block_cols, int block_depth, int threads) {
  std::vector<int> seen_a(block_rows * block_depth, 0), seen_b(block_depth * block_cols, 0);
  for (int thread = 0; thread < threads; ++thread) {
    for (int index = thread; index < block_rows * block_depth; index += threads) {
      const TileCoord at = tile_load_coord(index, g.a_transposed, block_rows, block_depth);
      const int64_t depth = k0 + at.col;
      a_tile[at.row * block_depth + at.col] =
          depth < k_end ? load_or_zero(g.a.data(), row0 + at.row, depth, g.m, g.k, g.a_transposed) : 0.0f;
      ++seen_a[at.row * block_depth + at.col];
    }
    for (int index = thread; index < block_depth * block_cols; index += threads) {
      const TileCoord at = tile_load_coord(index, g.b_transposed, block_depth, block_cols);
      const int64_t depth = k0 + at.row;
      b_tile[at.row * block_cols + at.col] =
          depth < k_end ? load_or_zero(g.b.data(), depth, col0 + at.col, g.k, g.n, g.b_transposed) : 0.0f;
      ++seen_b[at.row * block_cols + at.col];
    }
  }
  for (int count : seen_a) expect(count == 1, "every A tile element is loaded by exactly one thread");
  for (int count : seen_b) expect(count == 1, "every B tile element is loaded by exactly one thread");
}

// The float32 kernel, one grid layer (a K slice) into `out`.
void replay_simt_layer(Vector& out, const GemmCase& g, int64_t k_begin, int64_t k_end, float alpha, float beta) {
  using namespace simt;
  std::vector<float> a_tile(kBlockRows * kBlockDepth), b_tile(kBlockDepth * kBlockCols);
  for (int64_t row0 = 0; row0 < g.m; row0 += kBlockRows) {
    for (int64_t col0 = 0; col0 < g.n; col0 += kBlockCols) {
      std::vector<float> acc(kThreads * kThreadTile * kThreadTile, 0.0f);
      for (int64_t k0 = k_begin; k0 < k_end; k0 += kBlockDepth) {
        load_tiles(a_tile, b_tile, g, row0, col0, k0, k_end, kBlockRows, kBlockCols, kBlockDepth, kThreads);
        for (int thread = 0; thread < kThreads; ++thread) {
          for (int kk = 0; kk < kBlockDepth; ++kk) {
            for (int i = 0; i < kThreadTile; ++i) {
              for (int j = 0; j < kThreadTile; ++j) {
                acc[(thread * kThreadTile + i) * kThreadTile + j] +=
                    a_tile[thread_out_row(thread, i) * kBlockDepth + kk] *
                    b_tile[kk * kBlockCols + thread_out_col(thread, j)];
              }
            }
          }
        }
      }
      std::vector<int> owned(kBlockRows * kBlockCols, 0);
      for (int thread = 0; thread < kThreads; ++thread) {
        for (int i = 0; i < kThreadTile; ++i) {
          for (int j = 0; j < kThreadTile; ++j) {
            ++owned[thread_out_row(thread, i) * kBlockCols + thread_out_col(thread, j)];
            store_output(out, row0 + thread_out_row(thread, i), col0 + thread_out_col(thread, j),
                         acc[(thread * kThreadTile + i) * kThreadTile + j], g, alpha, beta);
          }
        }
      }
      for (int count : owned) expect(count == 1, "every output of a float32 block tile has exactly one thread");
    }
  }
}

// The tensor-core kernel's warp and fragment layout (the 16 x 16 products as plain float loops), one grid layer.
void replay_wmma_layer(Vector& out, const GemmCase& g, int64_t k_begin, int64_t k_end, float alpha, float beta) {
  using namespace wmma_tile;
  std::vector<float> a_tile(kBlockRows * kBlockDepth), b_tile(kBlockDepth * kBlockCols);
  for (int64_t row0 = 0; row0 < g.m; row0 += kBlockRows) {
    for (int64_t col0 = 0; col0 < g.n; col0 += kBlockCols) {
      std::vector<float> acc(kBlockRows * kBlockCols, 0.0f);  // indexed by the block tile position each warp owns
      std::vector<int> owned(kBlockRows * kBlockCols, 0);
      for (int64_t k0 = k_begin; k0 < k_end; k0 += kBlockDepth) {
        load_tiles(a_tile, b_tile, g, row0, col0, k0, k_end, kBlockRows, kBlockCols, kBlockDepth, kThreads);
        for (int warp = 0; warp < kWarps; ++warp) {
          for (int i = 0; i < kFragmentsDown; ++i) {
            for (int j = 0; j < kFragmentsAcross; ++j) {
              const int fragment_row = warp_origin_row(warp) + i * kFragment;
              const int fragment_col = warp_origin_col(warp) + j * kFragment;
              for (int r = 0; r < kFragment; ++r) {
                for (int c = 0; c < kFragment; ++c) {
                  float total = 0;
                  for (int kk = 0; kk < kBlockDepth; ++kk) {
                    total += a_tile[(fragment_row + r) * kBlockDepth + kk] * b_tile[kk * kBlockCols + fragment_col + c];
                  }
                  acc[(fragment_row + r) * kBlockCols + fragment_col + c] += total;
                }
              }
            }
          }
        }
      }
      for (int warp = 0; warp < kWarps; ++warp) {
        for (int i = 0; i < kFragmentsDown; ++i) {
          for (int j = 0; j < kFragmentsAcross; ++j) {
            for (int lane = 0; lane < 32; ++lane) {
              for (int element = lane; element < kFragment * kFragment; element += 32) {
                const TileCoord at = staging_coord(element);
                const int row = warp_origin_row(warp) + i * kFragment + at.row;
                const int col = warp_origin_col(warp) + j * kFragment + at.col;
                ++owned[row * kBlockCols + col];
                store_output(out, row0 + row, col0 + col, acc[row * kBlockCols + col], g, alpha, beta);
              }
            }
          }
        }
      }
      for (int count : owned) expect(count == 1, "every output of a tensor-core block tile has exactly one lane");
    }
  }
}

// The launcher's split-K plan: layers into partial slabs, then the ordered sum with beta.
using LayerReplay = void (*)(Vector&, const GemmCase&, int64_t, int64_t, float, float);
Vector replay_gemm(const GemmCase& g, LayerReplay layer, int block_rows, int block_cols, int block_depth) {
  Vector c = g.c;
  const int splits = split_k_count(ceil_div(g.m, block_rows) * ceil_div(g.n, block_cols), g.k);
  if (splits == 1) {
    layer(c, g, 0, g.k, g.alpha, g.beta);
    return c;
  }
  const int64_t depth = split_k_depth(g.k, splits, block_depth);
  std::vector<Vector> partials(splits, Vector(g.m * g.n, kNaN));
  for (int split = 0; split < splits; ++split) {
    const int64_t begin = std::min(g.k, split * depth), end = std::min(g.k, begin + depth);
    layer(partials[split], g, begin, end, g.alpha, 0.0f);
  }
  for (int64_t index = 0; index < g.m * g.n; ++index) {
    float total = 0;
    for (int split = 0; split < splits; ++split) total += partials[split][index];
    c[index] = g.beta == 0.0f ? total : total + g.beta * c[index];
  }
  return c;
}

void test_tile_coverage() {
  for (bool transposed : {false, true}) {
    const int rows = static_cast<int>(random_size(1, 40)), cols = static_cast<int>(random_size(1, 40));
    std::vector<int> seen(rows * cols, 0);
    for (int linear = 0; linear < rows * cols; ++linear) {
      const TileCoord at = tile_load_coord(linear, transposed, rows, cols);
      expect(at.row >= 0 && at.row < rows && at.col >= 0 && at.col < cols, "tile_load_coord stays in the tile");
      if (at.row >= 0 && at.row < rows && at.col >= 0 && at.col < cols) ++seen[at.row * cols + at.col];
      // Consecutive threads walk the stored rows: the next linear index is the next address in memory.
      if (linear + 1 < rows * cols && (linear + 1) % (transposed ? rows : cols) != 0) {
        const TileCoord next = tile_load_coord(linear + 1, transposed, rows, cols);
        expect(transposed ? next.row == at.row + 1 : next.col == at.col + 1, "tile loads coalesce");
      }
    }
    for (int count : seen) expect(count == 1, "tile_load_coord covers each element once");
  }
}

void test_gemm_replays() {
  for (int trial = 0; trial < 6; ++trial) {
    const GemmCase g = random_gemm_case(150, 150, 90);
    expect_close(replay_gemm(g, replay_simt_layer, simt::kBlockRows, simt::kBlockCols, simt::kBlockDepth),
                 gemm_reference(g), 1e-5, "float32 GEMM tiling (edges, transposes)");
  }
  for (int trial = 0; trial < 3; ++trial) {
    const GemmCase g = random_gemm_case(200, 200, 80);
    expect_close(
        replay_gemm(g, replay_wmma_layer, wmma_tile::kBlockRows, wmma_tile::kBlockCols, wmma_tile::kBlockDepth),
        gemm_reference(g), 1e-5, "tensor-core GEMM tiling (edges, transposes)");
  }
  // Skinny outputs with a long K take the split-K path (as the rank-sized products of DoRA's backward do).
  GemmCase skinny = random_gemm_case(1, 1, 1);
  skinny.m = random_size(3, 20);
  skinny.n = random_size(3, 70);
  skinny.k = random_size(1500, 2600);
  skinny.a = random_vector(skinny.m * skinny.k);
  skinny.b = random_vector(skinny.k * skinny.n);
  skinny.c = random_vector(skinny.m * skinny.n);
  skinny.beta = 0.5f;
  expect(split_k_count(1, skinny.k) > 1, "a single-tile product with a long K splits");
  expect_close(replay_gemm(skinny, replay_simt_layer, simt::kBlockRows, simt::kBlockCols, simt::kBlockDepth),
               gemm_reference(skinny), 1e-5, "split-K float32 GEMM");
  expect_close(
      replay_gemm(skinny, replay_wmma_layer, wmma_tile::kBlockRows, wmma_tile::kBlockCols, wmma_tile::kBlockDepth),
      gemm_reference(skinny), 1e-5, "split-K tensor-core GEMM");
  for (int64_t k : {1, 7, 511, 4096, 100000}) {
    for (int splits = 1; splits <= 16; ++splits) {
      const int64_t depth = split_k_depth(k, splits, 32);
      expect(depth % 32 == 0 && depth * splits >= k && depth * (splits - 1) < k + 32 * splits,
             "split-K slices cover K with whole block depths");
    }
  }
}

// ---- DoRA ---------------------------------------------------------------------------------------------------------

void test_dora_rows() {
  const int64_t m = random_size(3, 12), k = random_size(5, 70), r = random_size(1, 9);
  const float scale = 0.5f + static_cast<float>(random_size(0, 100)) / 100.0f, eps = 1e-6f;
  const Vector weight = random_vector(m * k), lora_a = random_vector(r * k, 0.3f);
  Vector lora_b = random_vector(m * r, 0.3f);
  Vector weight_for_norm = weight;
  // The last row has a zero direction (W0 row and B row zero): its norm must floor at eps, and it is a constant.
  for (int64_t c = 0; c < k; ++c) weight_for_norm[(m - 1) * k + c] = 0.0f;
  for (int64_t p = 0; p < r; ++p) lora_b[(m - 1) * r + p] = 0.0f;

  Vector weight_lora_a(m * r), gram(r * r), sq_norms(m);
  for (int64_t j = 0; j < m; ++j) {
    double sq = 0;
    for (int64_t c = 0; c < k; ++c) sq += static_cast<double>(weight_for_norm[j * k + c]) * weight_for_norm[j * k + c];
    sq_norms[j] = static_cast<float>(sq);
    for (int64_t p = 0; p < r; ++p) {
      double total = 0;
      for (int64_t c = 0; c < k; ++c) total += static_cast<double>(weight_for_norm[j * k + c]) * lora_a[p * k + c];
      weight_lora_a[j * r + p] = static_cast<float>(total);
    }
  }
  for (int64_t p = 0; p < r; ++p) {
    for (int64_t q = 0; q < r; ++q) {
      double total = 0;
      for (int64_t c = 0; c < k; ++c) total += static_cast<double>(lora_a[p * k + c]) * lora_a[q * k + c];
      gram[p * r + q] = static_cast<float>(total);
    }
  }
  // V formed explicitly in double: the reference for the norm and for the norm's share of dL/dB.
  std::vector<double> direction(m * k), norm_ref(m);
  for (int64_t j = 0; j < m; ++j) {
    double sq = 0;
    for (int64_t c = 0; c < k; ++c) {
      double value = weight_for_norm[j * k + c];
      for (int64_t p = 0; p < r; ++p) value += static_cast<double>(scale) * lora_b[j * r + p] * lora_a[p * k + c];
      direction[j * k + c] = value;
      sq += value * value;
    }
    norm_ref[j] = std::max(std::sqrt(sq), static_cast<double>(eps));
  }
  Vector norm(m);
  for (int64_t j = 0; j < m; ++j) {
    norm[j] = dora_row_norm(&weight_lora_a[j * r], gram.data(), &lora_b[j * r], sq_norms[j], scale, eps, r);
  }
  expect_close(norm, norm_ref, 1e-5, "factored DoRA row norm");
  expect(norm[m - 1] == eps, "a zero direction's norm floors at eps");

  const Vector magnitude = random_vector(m), dots = random_vector(m);
  Vector coefficient(m);
  std::vector<double> coefficient_ref(m);
  for (int64_t j = 0; j < m; ++j) {
    coefficient[j] = dora_norm_coefficient(magnitude[j], dots[j], norm[j], eps);
    const bool floored = norm_ref[j] <= eps;
    coefficient_ref[j] = floored ? 0.0 : -magnitude[j] * static_cast<double>(dots[j]) / std::pow(norm_ref[j], 3);
  }
  expect_close(coefficient, coefficient_ref, 1e-5, "DoRA norm coefficient (and 0 when floored)");

  // s c_j (V Aᵀ)_jp from the factors against V Aᵀ formed explicitly.
  Vector term(m * r);
  std::vector<double> term_ref(m * r);
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t p = 0; p < r; ++p) {
      term[j * r + p] =
          dora_lora_b_norm_term(&weight_lora_a[j * r], gram.data(), &lora_b[j * r], coefficient[j], scale, p, r);
      double va = 0;
      for (int64_t c = 0; c < k; ++c) va += direction[j * k + c] * lora_a[p * k + c];
      term_ref[j * r + p] = scale * coefficient_ref[j] * va;
    }
  }
  expect_close(term, term_ref, 1e-5, "DoRA norm term of dL/dB");
}

// ---- row kernels ----------------------------------------------------------------------------------------------------

void test_softmax_rows() {
  for (int trial = 0; trial < 4; ++trial) {
    const int64_t d = random_size(1, 200);
    const Vector x = random_vector(d, 3.0f);
    Vector mask(d);
    for (float& value : mask) value = (rng() % 4 == 0) ? 0.0f : 1.0f;
    if (trial == 3) std::fill(mask.begin(), mask.end(), 0.0f);  // every key masked: a zero row
    const bool use_mask = trial > 0;
    const float* mask_ptr = use_mask ? mask.data() : nullptr;
    double max_ref = -INFINITY;
    for (int64_t j = 0; j < d; ++j) {
      if (!use_mask || mask[j] != 0.0f) max_ref = std::max(max_ref, static_cast<double>(x[j]));
    }
    std::vector<double> expected(d, 0.0);
    double total = 0;
    for (int64_t j = 0; j < d; ++j) {
      if (max_ref != -INFINITY && (!use_mask || mask[j] != 0.0f)) total += expected[j] = std::exp(x[j] - max_ref);
    }
    for (double& value : expected) value = total > 0 ? value / total : 0.0;

    Vector out(d, kNaN);
    float max = -INFINITY;
    for_lanes(
        [&](int lane, int lanes) { max = std::fmax(max, strided_masked_max(x.data(), mask_ptr, d, lane, lanes)); });
    const double sum = over_lanes(
        [&](int lane, int lanes) { return softmax_exp_partial(out.data(), x.data(), mask_ptr, max, d, lane, lanes); });
    for_lanes([&](int lane, int lanes) { scale_strided(out.data(), softmax_normalizer(sum), d, lane, lanes); });
    expect_close(out, expected, 1e-5, "masked softmax row");
    if (use_mask) {
      for (int64_t j = 0; j < d; ++j) expect(mask[j] != 0.0f || out[j] == 0.0f, "masked keys are exactly 0");
    }

    // Backward: dx = y ⊙ (dy − Σ dy·y).
    const Vector grad_out = random_vector(d);
    double dot_ref = 0;
    for (int64_t j = 0; j < d; ++j) dot_ref += grad_out[j] * expected[j];
    std::vector<double> grad_ref(d);
    for (int64_t j = 0; j < d; ++j) grad_ref[j] = expected[j] * (grad_out[j] - dot_ref);
    const float dot = static_cast<float>(
        over_lanes([&](int lane, int lanes) { return strided_dot(grad_out.data(), out.data(), d, lane, lanes); }));
    Vector grad(d, kNaN);
    for_lanes([&](int lane, int lanes) {
      softmax_backward_apply(grad.data(), out.data(), grad_out.data(), dot, d, lane, lanes);
    });
    expect_close(grad, grad_ref, 1e-5, "softmax backward row");
  }
}

void test_layer_norm_rows() {
  // D >= 3: at D = 2 x̂ is ±1 whatever x, the true gradient is ~0 and any float rounding is a large relative error.
  const int64_t d = random_size(3, 300);
  const float eps = 1e-5f;
  Vector x = random_vector(d, 2.0f);
  for (float& value : x) value += 3.0f;  // an offset mean: the two-pass variance must not cancel
  const Vector gamma = random_vector(d), beta = random_vector(d), grad_out = random_vector(d);
  double mean_ref = 0, var_ref = 0;
  for (float value : x) mean_ref += value;
  mean_ref /= d;
  for (float value : x) var_ref += (value - mean_ref) * (value - mean_ref);
  var_ref /= d;
  const double rstd_ref = 1.0 / std::sqrt(var_ref + eps);
  std::vector<double> out_ref(d), grad_ref(d);
  double sum_g = 0, sum_g_xhat = 0;
  for (int64_t j = 0; j < d; ++j) {
    const double xhat = (x[j] - mean_ref) * rstd_ref;
    out_ref[j] = xhat * gamma[j] + beta[j];
    sum_g += static_cast<double>(grad_out[j]) * gamma[j];
    sum_g_xhat += static_cast<double>(grad_out[j]) * gamma[j] * xhat;
  }
  for (int64_t j = 0; j < d; ++j) {
    const double xhat = (x[j] - mean_ref) * rstd_ref;
    grad_ref[j] = rstd_ref * (static_cast<double>(grad_out[j]) * gamma[j] - sum_g / d - xhat * sum_g_xhat / d);
  }

  const double mean_double =
      over_lanes([&](int lane, int lanes) { return strided_sum(x.data(), d, lane, lanes); }) / static_cast<double>(d);
  const float rstd = layer_norm_rstd(
      over_lanes([&](int lane, int lanes) { return strided_squared_deviation(x.data(), mean_double, d, lane, lanes); }),
      d, eps);
  const float mean = static_cast<float>(mean_double);
  Vector out(d, kNaN);
  for_lanes([&](int lane, int lanes) {
    layer_norm_apply(out.data(), x.data(), gamma.data(), beta.data(), mean, rstd, d, lane, lanes);
  });
  expect_close(out, out_ref, 1e-5, "layer norm row");

  LayerNormSums sums{0, 0};
  for_lanes([&](int lane, int lanes) {
    const LayerNormSums part =
        layer_norm_backward_partial(grad_out.data(), x.data(), gamma.data(), mean, rstd, d, lane, lanes);
    sums.g += part.g;
    sums.g_normalized += part.g_normalized;
  });
  Vector grad(d, kNaN);
  for_lanes([&](int lane, int lanes) {
    layer_norm_backward_apply(grad.data(), grad_out.data(), x.data(), gamma.data(), mean, rstd, sums, d, lane, lanes);
  });
  expect_close(grad, grad_ref, 1e-5, "layer norm backward row");

  // D = 1: x̂ = 0 and g − mean(g) must be exactly 0 (eps 1e-12 makes rstd 1e6, amplifying any rounding).
  const float one_x = x[0], one_grad = grad_out[0], one_gamma = gamma[0];
  const float one_rstd = layer_norm_rstd(0.0f, 1, 1e-12f);
  const LayerNormSums one_sums = layer_norm_backward_partial(&one_grad, &one_x, &one_gamma, one_x, one_rstd, 1, 0, 1);
  float one_result = kNaN;
  layer_norm_backward_apply(&one_result, &one_grad, &one_x, &one_gamma, one_x, one_rstd, one_sums, 1, 0, 1);
  expect(one_result == 0.0f, "layer norm backward of a one-element row is exactly 0");
}

void test_rms_norm_rows() {
  const int64_t d = random_size(2, 300);
  const float eps = 1e-6f;
  Vector x = random_vector(d, 2.0f);
  for (float& value : x) value += 3.0f;  // RMSNorm keeps the mean: an offset must come through scaled, not removed
  const Vector weight = random_vector(d), grad_out = random_vector(d);
  double squares = 0;
  for (float value : x) squares += static_cast<double>(value) * value;
  const double rstd_ref = 1.0 / std::sqrt(squares / d + eps);
  std::vector<double> out_ref(d), grad_ref(d);
  double sum_g_xhat = 0;
  for (int64_t j = 0; j < d; ++j) {
    out_ref[j] = weight[j] * x[j] * rstd_ref;
    sum_g_xhat += static_cast<double>(grad_out[j]) * weight[j] * x[j] * rstd_ref;
  }
  for (int64_t j = 0; j < d; ++j) {
    grad_ref[j] = rstd_ref * (static_cast<double>(grad_out[j]) * weight[j] - x[j] * rstd_ref * sum_g_xhat / d);
  }

  const float rstd = rms_norm_rstd(
      over_lanes([&](int lane, int lanes) { return strided_dot(x.data(), x.data(), d, lane, lanes); }), d, eps);
  expect_close({rstd}, {rstd_ref}, 1e-6, "rms norm rstd");
  Vector out(d, kNaN);
  for_lanes([&](int lane, int lanes) { rms_norm_apply(out.data(), x.data(), weight.data(), rstd, d, lane, lanes); });
  expect_close(out, out_ref, 1e-5, "rms norm row");
  const double sum_g_x = over_lanes([&](int lane, int lanes) {
    return rms_norm_backward_partial(grad_out.data(), x.data(), weight.data(), d, lane, lanes);
  });
  Vector grad(d, kNaN);
  for_lanes([&](int lane, int lanes) {
    rms_norm_backward_apply(grad.data(), grad_out.data(), x.data(), weight.data(), rstd, sum_g_x, d, lane, lanes);
  });
  expect_close(grad, grad_ref, 1e-5, "rms norm backward row");
}

void test_cross_entropy_row() {
  const int64_t c = random_size(2, 500);
  const Vector logits = random_vector(c, 4.0f);
  const int32_t label = static_cast<int32_t>(random_size(0, c - 1));
  const float row_scale = 0.37f;
  double max_ref = -INFINITY, total = 0;
  for (float value : logits) max_ref = std::max(max_ref, static_cast<double>(value));
  for (float value : logits) total += std::exp(value - max_ref);
  const double loss_ref = max_ref + std::log(total) - logits[label];
  std::vector<double> grad_ref(c);
  for (int64_t j = 0; j < c; ++j) grad_ref[j] = row_scale * (std::exp(logits[j] - max_ref) / total - (j == label));

  float max = -INFINITY;
  for_lanes(
      [&](int lane, int lanes) { max = std::fmax(max, strided_masked_max(logits.data(), nullptr, c, lane, lanes)); });
  const double exp_sum =
      over_lanes([&](int lane, int lanes) { return strided_exp_sum(logits.data(), max, c, lane, lanes); });
  expect_close({cross_entropy_row_loss(max, exp_sum, logits[label])}, {loss_ref}, 1e-5, "cross-entropy row loss");
  Vector grad(c, kNaN);
  for_lanes([&](int lane, int lanes) {
    cross_entropy_backward_apply(grad.data(), logits.data(), max, exp_sum, row_scale, label, c, lane, lanes);
  });
  expect_close(grad, grad_ref, 1e-5, "cross-entropy backward row");
}

// The shared activation rules (../common/nn_math.h: the CPU's and the GPU's) against double references.
void test_gelu() {
  Vector x = random_vector(400, 3.0f);
  x.push_back(-9.0f);  // deep in the tail, where 1 + erf would lose everything
  std::vector<double> value_ref, grad_ref;
  Vector value, grad;
  for (float v : x) {
    const double cdf = 0.5 * std::erfc(-v / std::sqrt(2.0));
    value_ref.push_back(v * cdf);
    grad_ref.push_back(cdf + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI));
    value.push_back(gelu(v));
    grad.push_back(gelu_backward(v, 1.0f));
  }
  expect_close(value, value_ref, 1e-5, "GELU");
  expect_close(grad, grad_ref, 1e-5, "GELU gradient");
  expect(std::fabs(gelu(-9.0f) / (-9.0 * 0.5 * std::erfc(9.0 / std::sqrt(2.0))) - 1.0) < 1e-4, "GELU tail is relative");
  Vector tanh_value, exp_value;
  std::vector<double> tanh_ref, exp_ref;
  for (float v : x) {
    tanh_value.push_back(tanh_approx(v));
    tanh_ref.push_back(std::tanh(static_cast<double>(v)));
    exp_value.push_back(exp_approx(-std::fabs(v)));
    exp_ref.push_back(std::exp(-std::fabs(static_cast<double>(v))));
  }
  expect_close(tanh_value, tanh_ref, 1e-6, "tanh");
  expect_close(exp_value, exp_ref, 1e-6, "exp");
  expect(exp_approx(-100.0f) == 0.0f && relu(-1.0f) == 0.0f && relu_backward(2.0f, 3.0f) == 3.0f,
         "exp underflows to 0, ReLU and its gradient");
}

// GELU's tanh form, SiLU and SwiGLU (../common/nn_math.h) against double references, tails included.
void test_decoder_activations() {
  Vector x = random_vector(400, 4.0f);
  for (float tail : {-90.0f, -30.0f, -9.0f, 9.0f, 30.0f, 90.0f}) x.push_back(tail);
  const Vector up = random_vector(x.size()), grad_out = random_vector(x.size());
  const double c = std::sqrt(2.0 / M_PI);
  std::vector<double> gelu_ref, gelu_grad_ref, silu_ref, silu_grad_ref, swiglu_ref, gate_ref, up_ref;
  Vector gelu_value, gelu_grad, silu_value, silu_grad, swiglu_value, gate_grad, up_grad;
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i], t = std::tanh(c * (v + 0.044715 * v * v * v));
    const double sigma = 1.0 / (1.0 + std::exp(-v)), silu_prime = sigma * (1.0 + v * (1.0 - sigma));
    gelu_ref.push_back(0.5 * v * (1.0 + t));
    gelu_grad_ref.push_back(grad_out[i] *
                            (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * v * v)));
    silu_ref.push_back(v * sigma);
    silu_grad_ref.push_back(grad_out[i] * silu_prime);
    swiglu_ref.push_back(v * sigma * up[i]);
    gate_ref.push_back(static_cast<double>(grad_out[i]) * up[i] * silu_prime);
    up_ref.push_back(grad_out[i] * v * sigma);
    gelu_value.push_back(gelu_tanh(x[i]));
    gelu_grad.push_back(gelu_tanh_backward(x[i], grad_out[i]));
    silu_value.push_back(silu(x[i]));
    silu_grad.push_back(silu_backward(x[i], grad_out[i]));
    swiglu_value.push_back(swiglu(x[i], up[i]));
    gate_grad.push_back(swiglu_backward_gate(x[i], up[i], grad_out[i]));
    up_grad.push_back(swiglu_backward_up(x[i], grad_out[i]));
  }
  expect_close(gelu_value, gelu_ref, 1e-6, "GELU (tanh form)");
  expect_close(gelu_grad, gelu_grad_ref, 1e-6, "GELU (tanh form) gradient");
  expect_close(silu_value, silu_ref, 1e-6, "SiLU");
  expect_close(silu_grad, silu_grad_ref, 1e-6, "SiLU gradient");
  expect_close(swiglu_value, swiglu_ref, 1e-6, "SwiGLU");
  expect_close(gate_grad, gate_ref, 1e-6, "SwiGLU gate gradient");
  expect_close(up_grad, up_ref, 1e-6, "SwiGLU up gradient");
}

// ---- optimizer and hypergradient ------------------------------------------------------------------------------------

// The shared rule (../common/optim_math.h, the CPU's and the GPU's) against PyTorch's AdamW in double, in both lerp
// forms (β1 = 0.9 and β1 = 0.3 take the two sides of PyTorch's switch at weight 0.5).
void test_adamw() {
  const int steps = 5;
  const double lr = 1e-3, b2 = 0.999, eps = 1e-8, decay = 0.01;
  for (const double b1 : {0.9, 0.3}) {
    Vector param = random_vector(64), moment1(64, 0.0f), moment2(64, 0.0f);
    std::vector<double> p_ref(param.begin(), param.end()), m_ref(64, 0.0), v_ref(64, 0.0);
    for (int t = 1; t <= steps; ++t) {
      const Vector grad = random_vector(64);
      const AdamwScalars scalars = adamw_scalars(lr, b1, b2, eps, decay, t);
      for (int i = 0; i < 64; ++i) {
        adamw_update(param[i], moment1[i], moment2[i], grad[i], scalars);
        p_ref[i] *= 1.0 - lr * decay;
        m_ref[i] = b1 * m_ref[i] + (1.0 - b1) * grad[i];
        v_ref[i] = b2 * v_ref[i] + (1.0 - b2) * static_cast<double>(grad[i]) * grad[i];
        const double c1 = 1.0 - std::pow(b1, t), c2 = 1.0 - std::pow(b2, t);
        p_ref[i] -= lr / c1 * m_ref[i] / (std::sqrt(v_ref[i]) / std::sqrt(c2) + eps);
      }
    }
    expect_close(param, p_ref, 1e-5, "AdamW parameters after 5 steps");
    expect_close(moment1, m_ref, 1e-5, "AdamW first moments");
    expect_close(moment2, v_ref, 1e-5, "AdamW second moments");
  }
}

void test_hypergradient() {
  const Vector grad = random_vector(50), plus = random_vector(50), minus = random_vector(50);
  const float norm = 3.0f + static_cast<float>(random_size(0, 100)) / 10.0f, radius = 0.01f, xi = 0.7f;
  const float epsilon = perturbation_epsilon(radius, norm);
  expect_close({epsilon}, {0.01 / norm}, 1e-6, "perturbation epsilon = radius / ||v||");
  expect(perturbation_epsilon(radius, 0.0f) == 0.0f, "a zero direction gives epsilon 0");
  // The factor as lib/train/bilevel.ts forms it and both backends take it: xi / (2 eps).
  const float factor = xi / (2.0f * epsilon);
  Vector out;
  std::vector<double> expected;
  for (int i = 0; i < 50; ++i) {
    out.push_back(hypergradient_combine(grad[i], plus[i], minus[i], factor));
    expected.push_back(grad[i] - xi * (static_cast<double>(plus[i]) - minus[i]) / (2.0 * epsilon));
  }
  expect_close(out, expected, 1e-5, "hypergradient g - xi (g+ - g-) / (2 eps)");
}

// Rotary embeddings' pair rule (../common/position_math.h) against the rotation in double; the inverse undoes it.
void test_rotary_pairs() {
  const int64_t d = 2 * random_size(1, 32);
  const Vector x = random_vector(d);
  const int position = static_cast<int>(random_size(0, 2000));
  Vector out(d), back(d);
  std::vector<double> expected(d), original(x.begin(), x.end());
  for (int64_t pair = 0; pair < d / 2; ++pair) {
    const float angle = static_cast<float>(position) * bidora::math::rotary_inverse_frequency(pair, d, 10000.0f);
    bidora::math::rotate_pair(x[pair], x[pair + d / 2], angle, false, &out[pair], &out[pair + d / 2]);
    bidora::math::rotate_pair(out[pair], out[pair + d / 2], angle, true, &back[pair], &back[pair + d / 2]);
    const double exact = position / std::pow(10000.0, 2.0 * pair / d);
    expected[pair] = x[pair] * std::cos(exact) - x[pair + d / 2] * std::sin(exact);
    expected[pair + d / 2] = x[pair + d / 2] * std::cos(exact) + x[pair] * std::sin(exact);
  }
  // Angles up to 2000 radians in float32 carry ~1e-4 absolute rounding, as transformers' do.
  expect_close(out, expected, 1e-3, "rotary pairs against the double rotation");
  expect_close(back, original, 1e-5, "the inverse rotation restores x");
}

// BCE with logits' term and gradient against log1p / exp in double, far into both tails.
void test_bce_with_logits() {
  Vector terms, gradients;
  std::vector<double> expected_terms, expected_gradients;
  for (const float z : {-90.0f, -20.0f, -1.5f, -0.1f, 0.0f, 0.3f, 2.0f, 17.0f, 88.0f}) {
    for (const float y : {0.0f, 1.0f, 0.25f}) {
      terms.push_back(static_cast<float>(bidora::math::bce_with_logits_term(z, y)));
      gradients.push_back(bidora::math::bce_with_logits_gradient(z, y));
      expected_terms.push_back(std::max<double>(z, 0.0) - static_cast<double>(z) * y +
                               std::log1p(std::exp(-std::fabs(z))));
      expected_gradients.push_back(1.0 / (1.0 + std::exp(-static_cast<double>(z))) - y);
    }
  }
  expect_close(terms, expected_terms, 1e-6, "BCE with logits terms");
  expect_close(gradients, expected_gradients, 1e-6, "BCE with logits gradients");
}

void test_embedding_plan() {
  const int64_t v = random_size(1, 30), n = random_size(0, 200);
  std::vector<int32_t> ids(n), order(n), row_start(v + 1);
  for (int32_t& id : ids) id = static_cast<int32_t>(random_size(0, v - 1));
  embedding_backward_plan(order.data(), row_start.data(), ids.data(), n, v);
  expect(row_start[0] == 0 && row_start[v] == n, "embedding plan spans every position");
  for (int64_t id = 0; id < v; ++id) {
    for (int32_t slot = row_start[id]; slot < row_start[id + 1]; ++slot) {
      expect(ids[order[slot]] == id, "embedding plan groups positions by id");
      expect(slot == row_start[id] || order[slot - 1] < order[slot], "embedding plan keeps positions ascending");
    }
  }
}

}  // namespace

// SGD's element rule against a double reference, in all three modes (plain, momentum, Nesterov), with decay.
void test_sgd() {
  const int64_t n = 1000;
  const Vector param = random_vector(n), grad = random_vector(n), buffer = random_vector(n);
  for (const bool nesterov : {false, true}) {
    for (const float momentum : {0.0f, 0.9f}) {
      if (nesterov && momentum == 0.0f) continue;
      const SgdScalars step{0.05f, momentum, 0.01f, nesterov};
      Vector p = param, b = buffer;
      std::vector<double> expected_p(n), expected_b(n);
      for (int64_t i = 0; i < n; ++i) {
        double direction = static_cast<double>(grad[i]) + 0.01 * param[i];
        double velocity = buffer[i];
        if (momentum != 0.0f) {
          velocity = momentum * velocity + direction;
          direction = nesterov ? direction + momentum * velocity : velocity;
        }
        expected_p[i] = param[i] - 0.05 * direction;
        expected_b[i] = velocity;
        sgd_update(p[i], momentum != 0.0f ? &b[i] : nullptr, grad[i], step);
      }
      expect_close(p, expected_p, 1e-6, "sgd param");
      expect_close(b, expected_b, 1e-6, "sgd momentum buffer");
    }
  }
}

// The layout kernels' index maps against nested loops over the output's coordinates, on random shapes.
void test_layout_maps() {
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t outer = random_size(1, 5), axis = random_size(1, 9), inner = random_size(1, 7);
    const int64_t start = random_size(0, axis - 1), length = random_size(0, axis - start);
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t j = 0; j < axis; ++j) {
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t full = (o * axis + j) * inner + i;
          // broadcast: [outer, axis, inner] repeats [outer, inner] along the axis.
          expect(broadcast_source(full, axis, inner) == o * inner + i, "broadcast_source");
          const int64_t back = narrow_backward_source(full, axis, inner, start, length);
          if (j >= start && j < start + length) {
            expect(back == (o * length + j - start) * inner + i, "narrow_backward_source inside the range");
          } else {
            expect(back == -1, "narrow_backward_source outside the range");
          }
        }
      }
      for (int64_t j = 0; j < length; ++j) {
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t index = (o * length + j) * inner + i;
          expect(narrow_source(index, axis, inner, start, length) == (o * axis + start + j) * inner + i,
                 "narrow_source");
        }
      }
    }
    const int64_t pa = random_size(1, 3), pb = random_size(1, 6), pc = random_size(1, 5), pd = random_size(1, 9);
    for (int64_t ai = 0; ai < pa; ++ai) {
      for (int64_t ci = 0; ci < pc; ++ci) {
        for (int64_t bi = 0; bi < pb; ++bi) {
          for (int64_t di = 0; di < pd; ++di) {
            const int64_t index = ((ai * pc + ci) * pb + bi) * pd + di;
            expect(permute_0213_source(index, pb, pc, pd) == ((ai * pb + bi) * pc + ci) * pd + di,
                   "permute_0213_source");
          }
        }
      }
    }
  }
}

// Dropout's counter-based mask: keeps about 1 − p of the elements, and a seed decides it alone.
void test_dropout_mask() {
  for (const float p : {0.1f, 0.5f, 0.9f}) {
    const uint64_t key = dropout_key(42), other = dropout_key(43), threshold = dropout_threshold(p);
    const int64_t n = 200000;
    int64_t kept = 0, same = 0;
    for (int64_t index = 0; index < n; ++index) {
      const bool keeps = dropout_keeps(key, index, threshold);
      kept += keeps;
      same += keeps == dropout_keeps(other, index, threshold);
      // The integer test is the open-interval uniform draw's u >= p, but for draws within 2^-53 of p.
      const double uniform = random_unit_open(random_mix(key + static_cast<uint64_t>(index)));
      expect(keeps == (uniform >= p) || std::fabs(uniform - p) < 1e-15, "dropout keeps where the uniform draw >= p");
    }
    const double rate = static_cast<double>(kept) / n;
    expect(std::fabs(rate - (1.0 - p)) < 0.005, "dropout keeps 1 - p of the elements");
    // Two seeds agree as often as independent masks do: p² + (1 − p)².
    const double agreement = static_cast<double>(same) / n, expected = p * p + (1.0 - p) * (1.0 - p);
    expect(std::fabs(agreement - expected) < 0.005, "dropout masks of two seeds are independent");
  }
  expect(dropout_keep_scale(0.25f) == 1.0f / 0.75f && dropout_keep_scale(1.0f) == 0.0f, "dropout keep scale");
  expect(dropout_threshold(0.0f) == 0 && dropout_threshold(1.0f) == (uint64_t{1} << 53),
         "dropout keeps all at p = 0, none at p = 1");
}

// Attention's visible keys (../common/nn_math.h) against the causal rule written out: query i of Lq sees key j of Lk
// when j <= i + Lk − Lq, every key without the causal mask; the count is a prefix, 0 to Lk.
void test_attention_visible_keys() {
  bool ok = true;
  for (int64_t lq = 0; lq <= 9; ++lq)
    for (int64_t lk = 0; lk <= 9; ++lk)
      for (int64_t i = 0; i < lq; ++i) {
        int64_t causal = 0;
        for (int64_t j = 0; j < lk; ++j) causal += j <= i + lk - lq ? 1 : 0;
        ok = ok && bidora::math::attention_visible_keys(i, lq, lk, true) == causal &&
             bidora::math::attention_visible_keys(i, lq, lk, false) == lk;
      }
  expect(ok, "attention visible keys follow the end-aligned causal rule");
}

int main() {
  const char* pinned = std::getenv("BIDORA_TEST_SEED");
  const uint64_t seed = pinned != nullptr ? std::strtoull(pinned, nullptr, 10) : std::random_device{}();
  rng.seed(seed);
  std::printf("cuda host math test, seed %llu\n", static_cast<unsigned long long>(seed));
  test_tile_coverage();
  test_gemm_replays();
  test_dora_rows();
  test_softmax_rows();
  test_layer_norm_rows();
  test_rms_norm_rows();
  test_cross_entropy_row();
  test_gelu();
  test_decoder_activations();
  test_adamw();
  test_hypergradient();
  test_embedding_plan();
  test_rotary_pairs();
  test_bce_with_logits();
  test_sgd();
  test_layout_maps();
  test_dropout_mask();
  test_attention_visible_keys();
  if (failures > 0) {
    std::printf("%d failure(s) (seed %llu)\n", failures, static_cast<unsigned long long>(seed));
    return 1;
  }
  std::printf("all passed\n");
  return 0;
}
