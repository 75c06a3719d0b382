// Cross-entropy over class logits, mean squared error and BCE with logits: forward and backward, sums kept in double
// and added in a fixed order so the loss has the same bits for any thread count.
#include <algorithm>
#include <vector>

#include "../common/position_math.h"
#include "../core/threadpool.h"
#include "nn.h"
#include "nn_kernels.h"

namespace bidora::cpu {

namespace {

constexpr int64_t kParallelElements = 1 << 15;

int64_t min_parallel_rows(int64_t d) { return std::max<int64_t>(1, kParallelElements / std::max<int64_t>(d, 1)); }

int64_t counted_rows(const int32_t* labels, int32_t ignore_index, int64_t rows) {
  int64_t count = 0;
  for (int64_t row = 0; row < rows; ++row) count += labels[row] != ignore_index;
  return count;
}

}  // namespace

void cross_entropy_forward(float* loss, const float* logits, const int32_t* labels, int32_t ignore_index, int64_t rows,
                           int64_t c) {
  const auto log_sum_exp_row = nn_kernels(active_isa()).log_sum_exp_row;
  std::vector<double> row_loss(rows, 0.0);
  parallel_for(rows, 1, min_parallel_rows(c), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      if (labels[row] == ignore_index) continue;
      const float* row_logits = logits + row * c;
      row_loss[row] = log_sum_exp_row(row_logits, c) - row_logits[labels[row]];
    }
  });
  double total = 0;
  for (double value : row_loss) total += value;
  const int64_t count = counted_rows(labels, ignore_index, rows);
  *loss = count == 0 ? 0.0f : static_cast<float>(total / static_cast<double>(count));
}

void cross_entropy_backward(float* grad_logits, const float* logits, const int32_t* labels, int32_t ignore_index,
                            float grad_loss, int64_t rows, int64_t c) {
  const auto softmax_row = nn_kernels(active_isa()).softmax_row;
  const int64_t count = counted_rows(labels, ignore_index, rows);
  const float row_scale = count == 0 ? 0.0f : static_cast<float>(static_cast<double>(grad_loss) / count);
  parallel_for(rows, 1, min_parallel_rows(c), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* row_grad = grad_logits + row * c;
      if (labels[row] == ignore_index) {
        std::fill(row_grad, row_grad + c, 0.0f);
        continue;
      }
      softmax_row(row_grad, logits + row * c, nullptr, row_scale, c);
      row_grad[labels[row]] -= row_scale;
    }
  });
}

void mse_loss_forward(float* loss, const float* prediction, const float* target, int64_t n) {
  // Fixed-size chunks summed in chunk order: the same bits whatever the thread count.
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks, 0.0);
  parallel_for(chunks, 1, 4, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t start = chunk * kChunk, stop = std::min(n, start + kChunk);
      double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t index = start;
      for (; index + 8 <= stop; index += 8) {
        for (int lane = 0; lane < 8; ++lane) {
          const double difference = static_cast<double>(prediction[index + lane]) - target[index + lane];
          lanes[lane] += difference * difference;
        }
      }
      double total = 0;
      for (; index < stop; ++index) {
        const double difference = static_cast<double>(prediction[index]) - target[index];
        total += difference * difference;
      }
      for (int lane = 0; lane < 8; ++lane) total += lanes[lane];
      partial[chunk] = total;
    }
  });
  double total = 0;
  for (double value : partial) total += value;
  *loss = n == 0 ? 0.0f : static_cast<float>(total / static_cast<double>(n));
}

void mse_loss_backward(float* grad_prediction, const float* prediction, const float* target, float grad_loss,
                       int64_t n) {
  const float factor = n == 0 ? 0.0f : static_cast<float>(2.0 * grad_loss / static_cast<double>(n));
  parallel_for(n, 1024, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      grad_prediction[index] = factor * (prediction[index] - target[index]);
    }
  });
}

void bce_with_logits_forward(float* loss, const float* logits, const float* targets, int64_t n) {
  // Fixed-size chunks summed in chunk order, as the MSE: the same bits whatever the thread count.
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks, 0.0);
  parallel_for(chunks, 1, 4, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      double total = 0.0;
      for (int64_t index = chunk * kChunk; index < std::min(n, (chunk + 1) * kChunk); ++index) {
        total += math::bce_with_logits_term(logits[index], targets[index]);
      }
      partial[chunk] = total;
    }
  });
  double total = 0.0;
  for (const double value : partial) total += value;
  *loss = n == 0 ? 0.0f : static_cast<float>(total / static_cast<double>(n));
}

void bce_with_logits_backward(float* grad_logits, const float* logits, const float* targets, float grad_loss,
                              int64_t n) {
  const float factor = n == 0 ? 0.0f : static_cast<float>(grad_loss / static_cast<double>(n));
  parallel_for(n, 1024, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      grad_logits[index] = factor * math::bce_with_logits_gradient(logits[index], targets[index]);
    }
  });
}

}  // namespace bidora::cpu
