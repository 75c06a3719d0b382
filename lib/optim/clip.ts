// Gradient clipping by the global L2 norm, as torch.nn.utils.clip_grad_norm_.
import { scaleList } from '../ops/multi';
import { globalNorm } from '../ops/reduce';
import { Tensor } from '../tensor';

/**
 * Scales the `.grad` of `params` (those that have one) in place so that their global L2 norm is at most `maxNorm`,
 * by maxNorm / (norm + 1e-6) when that is below 1; returns the norm before clipping.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  const fn = 'clipGradNorm';
  if (!Array.isArray(params)) throw new TypeError(`${fn}: params must be an array of Tensors`);
  if (typeof maxNorm !== 'number' || !Number.isFinite(maxNorm) || maxNorm < 0) {
    throw new RangeError(`${fn}: maxNorm must be a finite number of at least 0, got ${String(maxNorm)}`);
  }
  const grads = new Set<Tensor>();
  params.forEach((param, index) => {
    if (!(param instanceof Tensor)) throw new TypeError(`${fn}: params[${index}] must be a Tensor`);
    if (param.grad !== undefined) grads.add(param.grad);
  });
  if (grads.size === 0) return 0;
  const list = [...grads];
  const total = globalNorm(list);
  const coefficient = maxNorm / (total + 1e-6);
  if (coefficient < 1) scaleList(list, coefficient);
  return total;
}
