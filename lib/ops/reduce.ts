// Reductions: sum over an axis (or everything) and the global L2 norm of a list of tensors.
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';

export interface SumOptions {
  /** The axis to sum over (negative counts from the end); all elements when omitted. */
  axis?: number;
  /** Keep the summed axis with length 1. */
  keepDims?: boolean;
}

/** Sums over one axis, or over every element into a rank-0 tensor. Accumulates in double. */
export function sum(a: Tensor, options: SumOptions = {}): Tensor {
  return tensorOf(native.sum(handleOf(a, 'sum', 'a'), options.axis, options.keepDims ?? false));
}

/** sqrt(Σ x²) over every element of every tensor (as gradient clipping needs), accumulated in double. */
export function globalNorm(tensors: readonly Tensor[]): number {
  if (!Array.isArray(tensors)) throw new TypeError('globalNorm: tensors must be an array of Tensors');
  return native.globalNorm(tensors.map((tensor, index) => handleOf(tensor, 'globalNorm', `tensors[${index}]`)));
}
