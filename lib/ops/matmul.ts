// Matrix products with their gradients: matmul (optionally batched, either operand transposed) and linear
// (input · weightᵀ + bias). A frozen weight gets no gradient and its gradient product is never computed.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';
import { sumToShape } from './reduce';
import { reshape } from './shape';

/** How `matmul` reads its operands; neither is copied to transpose it. */
export interface MatmulOptions {
  /** Read `a` as its transpose (its last two dims swapped). */
  transposeA?: boolean;
  /** Read `b` as its transpose. */
  transposeB?: boolean;
}

function product(a: Tensor, b: Tensor, transposeA: boolean, transposeB: boolean): Tensor {
  return tensorOf(
    native.matmul({ a: handleOf(a, 'matmul', 'a'), b: handleOf(b, 'matmul', 'b'), transposeA, transposeB }),
  );
}

/**
 * a [..., M, K] · b [..., K, N] → [..., M, N]. Batch dims must be equal, or `b` rank 2 and shared by every batch.
 * Throws TypeError for a non-tensor or disposed tensor, RangeError for mismatched dims (naming both shapes).
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const transposeA = options.transposeA ?? false;
  const transposeB = options.transposeB ?? false;
  const output = product(a, b, transposeA, transposeB);
  const sharedB = b.rank === 2 && a.rank > 2;
  if (sharedB && transposeA && b.requiresGrad) {
    throw new RangeError('matmul: the gradient of a shared rank-2 b is not supported with transposeA');
  }
  return record(output, 'matmul', [a, b], (saved) => {
    const savedA = b.requiresGrad ? saved.save(a, 'a') : undefined;
    const savedB = a.requiresGrad ? saved.save(b, 'b') : undefined;
    return (gradOutput, [needA, needB]) => [
      needA ? gradientOfA(gradOutput, savedB!, transposeA, transposeB) : undefined,
      needB ? gradientOfB(gradOutput, savedA!, transposeA, transposeB, sharedB) : undefined,
    ];
  });
}

// C = op(A) op(B): dop(A) = G op(B)ᵀ, dop(B) = op(A)ᵀ G, transposed back into each operand's stored layout.
function gradientOfA(gradOutput: Tensor, b: Tensor, transposeA: boolean, transposeB: boolean): Tensor {
  return transposeA ? product(b, gradOutput, transposeB, true) : product(gradOutput, b, false, !transposeB);
}

function gradientOfB(gradOutput: Tensor, a: Tensor, transposeA: boolean, transposeB: boolean, shared: boolean): Tensor {
  if (shared) {
    // Every batch used the same b: fold the batches into rows and let one product sum over them.
    const k = a.shape.at(-1)!;
    return gradientOfB(
      reshape(gradOutput, [-1, gradOutput.shape.at(-1)!]),
      reshape(a, [-1, k]),
      false,
      transposeB,
      false,
    );
  }
  return transposeB ? product(gradOutput, a, true, transposeA) : product(a, gradOutput, !transposeA, false);
}

/**
 * input [..., in] · weightᵀ + bias → [..., out], with `weight` stored (out, in) as in PyTorch and `bias` of shape
 * [out]. Throws TypeError or RangeError naming the argument.
 */
export function linear(input: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const output = tensorOf(
    native.linear({
      input: handleOf(input, 'linear', 'input'),
      weight: handleOf(weight, 'linear', 'weight'),
      bias: bias === undefined ? undefined : handleOf(bias, 'linear', 'bias'),
    }),
  );
  return record(output, 'linear', [input, weight, bias], (saved) => {
    const savedInput = weight.requiresGrad ? saved.save(input, 'input') : undefined;
    const savedWeight = input.requiresGrad ? saved.save(weight, 'weight') : undefined;
    return (gradOutput, [needInput, needWeight, needBias]) => {
      const rows = reshape(gradOutput, [-1, gradOutput.shape.at(-1)!]);
      return [
        needInput ? product(gradOutput, savedWeight!, false, false) : undefined,
        needWeight ? product(rows, reshape(savedInput!, [-1, savedInput!.shape.at(-1)!]), true, false) : undefined,
        needBias ? sumToShape(gradOutput, bias!.shape) : undefined,
      ];
    };
  });
}
