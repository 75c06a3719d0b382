// Reductions with gradients: sum over an axis (or everything), mean, and the global L2 norm of a list of tensors.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Shape, type Tensor, tensorOf } from '../tensor';
import { scale } from './elementwise';
import { reshape } from './shape';

/** Which axis `sum` reduces, and whether it stays as length 1 (to broadcast the result back). */
export interface SumOptions {
  /** The axis to sum over (negative counts from the end); all elements when omitted. */
  axis?: number;
  /** Keep the summed axis with length 1. */
  keepDims?: boolean;
}

/** Sums over one axis, or over every element into a rank-0 tensor. Accumulates in double. */
export function sum(a: Tensor, options: SumOptions = {}): Tensor {
  const output = tensorOf(
    native.sum({ a: handleOf(a, 'sum', 'a'), axis: options.axis, keepDims: options.keepDims ?? false }),
  );
  const shape = a.shape;
  return record(output, 'sum', [a], () => (gradOutput) => [
    tensorOf(native.broadcastAxis({ a: handleOf(gradOutput, 'sum', 'gradOutput'), shape, axis: options.axis })),
  ]);
}

/** The mean over one axis, or over every element. */
export function mean(a: Tensor, options: SumOptions = {}): Tensor {
  const count = options.axis === undefined ? a.size : (a.shape.at(options.axis) ?? 1);
  const total = sum(a, options);
  const output = scale(total, count === 0 ? 0 : 1 / count);
  // The graph keeps the node of `total`, not its values: scale's gradient does not read them.
  total.dispose();
  return output;
}

/** Sums `gradient` down to `shape`, its trailing dims: the gradient of a broadcast operand. */
export function sumToShape(gradient: Tensor, shape: Shape): Tensor {
  const size = shape.reduce((total, dim) => total * dim, 1);
  // A copy, never a view: leaves accumulate into their gradient in place.
  if (size === gradient.size) return reshape(scale(gradient, 1), shape);
  return reshape(sum(reshape(gradient, [-1, size]), { axis: 0 }), shape);
}

/** sqrt(Σ x²) over every element of every tensor (as gradient clipping needs), accumulated in double. */
export function globalNorm(tensors: readonly Tensor[]): number {
  if (!Array.isArray(tensors)) throw new TypeError('globalNorm: tensors must be an array of Tensors');
  return native.globalNorm({
    tensors: tensors.map((tensor, index) => handleOf(tensor, 'globalNorm', `tensors[${index}]`)),
  });
}
