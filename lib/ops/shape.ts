// Shape ops: reshape (a view, no copy) and the head split/merge permute of attention, with their gradients.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Shape, type Tensor, tensorOf } from '../tensor';

/** Resolves one -1 entry from the size, and checks the rest. */
function resolveShape(tensor: Tensor, shape: Shape): number[] {
  if (!Array.isArray(shape)) throw new TypeError('reshape: shape must be an array of dimensions');
  const inferred = shape.indexOf(-1);
  if (inferred === -1 || shape.indexOf(-1, inferred + 1) !== -1) return [...shape];
  const known = shape.reduce((total, dim, index) => (index === inferred ? total : total * dim), 1);
  if (known === 0 || tensor.size % known !== 0) {
    throw new RangeError(`reshape: cannot infer -1 in [${shape.join(', ')}] for a tensor of ${tensor.size} elements`);
  }
  const resolved = [...shape];
  resolved[inferred] = tensor.size / known;
  return resolved;
}

/** The same values with another shape of the same size (one dim may be -1): a view over the same storage. */
export function reshape(tensor: Tensor, shape: Shape): Tensor {
  const resolved = resolveShape(tensor, shape);
  const output = tensorOf(native.reshape(handleOf(tensor, 'reshape', 'tensor'), resolved));
  const original = tensor.shape;
  return record(output, 'reshape', [tensor], () => (gradOutput) => [reshape(gradOutput, original)]);
}
