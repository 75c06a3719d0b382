// Matrix products: matmul (optionally batched, either operand transposed) and linear (input · weightᵀ + bias).
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';

export interface MatmulOptions {
  /** Read `a` as its transpose (its last two dims swapped). */
  transposeA?: boolean;
  /** Read `b` as its transpose. */
  transposeB?: boolean;
}

/**
 * a [..., M, K] · b [..., K, N] → [..., M, N]. Batch dims must be equal, or `b` rank 2 and shared by every batch.
 * Throws TypeError for a non-tensor or disposed tensor, RangeError for mismatched dims (naming both shapes).
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  return tensorOf(
    native.matmul(
      handleOf(a, 'matmul', 'a'),
      handleOf(b, 'matmul', 'b'),
      options.transposeA ?? false,
      options.transposeB ?? false,
    ),
  );
}

/**
 * input [..., in] · weightᵀ + bias → [..., out], with `weight` stored (out, in) as in PyTorch and `bias` of shape
 * [out]. Throws TypeError or RangeError naming the argument.
 */
export function linear(input: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  return tensorOf(
    native.linear(
      handleOf(input, 'linear', 'input'),
      handleOf(weight, 'linear', 'weight'),
      bias === undefined ? undefined : handleOf(bias, 'linear', 'bias'),
    ),
  );
}
