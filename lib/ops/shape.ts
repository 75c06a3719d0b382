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
  const output = tensorOf(native.reshape({ x: handleOf(tensor, 'reshape', 'tensor'), shape: resolved }));
  const original = tensor.shape;
  return record(output, 'reshape', [tensor], () => (gradOutput) => [reshape(gradOutput, original)]);
}

/** A copy of `length` entries from `start` along `axis` (negative counts from the end). */
export function narrow(tensor: Tensor, axis: number, start: number, length: number): Tensor {
  const output = tensorOf(native.narrow({ a: handleOf(tensor, 'narrow', 'tensor'), axis, start, length }));
  const shape = tensor.shape;
  return record(output, 'narrow', [tensor], () => (gradOutput) => [
    tensorOf(native.narrowBackward({ grad: handleOf(gradOutput, 'narrow', 'gradOutput'), shape, axis, start })),
  ]);
}

/** Entry `index` along `axis`, that axis removed: e.g. the first token's hidden state, [batch, seq, H] → [batch, H]. */
export function select(tensor: Tensor, axis: number, index: number): Tensor {
  const picked = narrow(tensor, axis, index, 1);
  const resolvedAxis = axis < 0 ? axis + tensor.rank : axis;
  const output = reshape(
    picked,
    tensor.shape.filter((_, position) => position !== resolvedAxis),
  );
  picked.dispose();
  return output;
}

/** [a, b, c, d] → [a, c, b, d]: the head split ([batch, seq, heads, dim] → [batch, heads, seq, dim]) and merge. */
export function permute0213(tensor: Tensor): Tensor {
  const output = tensorOf(native.permute0213({ x: handleOf(tensor, 'permute0213', 'tensor') }));
  // The permutation is its own inverse.
  return record(output, 'permute0213', [tensor], () => (gradOutput) => [permute0213(gradOutput)]);
}

/** [batch, seq, heads · dim] → [batch, heads, seq, dim]. */
export function splitHeads(tensor: Tensor, heads: number): Tensor {
  const [batch, seq, hidden] = tensor.shape;
  if (tensor.rank !== 3 || hidden % heads !== 0) {
    throw new RangeError(
      `splitHeads: expected [batch, seq, hidden] with hidden divisible by ${heads} heads, got [${tensor.shape.join(', ')}]`,
    );
  }
  const grouped = reshape(tensor, [batch, seq, heads, hidden / heads]);
  const output = permute0213(grouped);
  grouped.dispose();
  return output;
}

/** [batch, heads, seq, dim] → [batch, seq, heads · dim]. */
export function mergeHeads(tensor: Tensor): Tensor {
  const [batch, heads, seq, dim] = tensor.shape;
  const permuted = permute0213(tensor);
  const output = reshape(permuted, [batch, seq, heads * dim]);
  permuted.dispose();
  return output;
}

function checkAxis(fn: string, tensor: Tensor, axis: number): number {
  if (!Number.isInteger(axis) || axis < -tensor.rank || axis >= tensor.rank) {
    throw new RangeError(`${fn}: axis must be an integer in [${-tensor.rank}, ${tensor.rank}), got ${axis}`);
  }
  return axis < 0 ? axis + tensor.rank : axis;
}

/**
 * `first` and `second` joined along `axis` (every other dim equal), as torch.cat of two: how a decoder's key/value
 * cache grows by the new tokens. Each part is written into its place by the padding that narrow's gradient uses;
 * the gradient hands each part its slice back.
 */
export function concat(first: Tensor, second: Tensor, axis: number): Tensor {
  const fn = 'concat';
  const firstHandle = handleOf(first, fn, 'first');
  const secondHandle = handleOf(second, fn, 'second');
  const resolved = checkAxis(fn, first, axis);
  if (
    first.rank !== second.rank ||
    first.shape.some((dim, index) => index !== resolved && dim !== second.shape[index])
  ) {
    throw new RangeError(
      `${fn}: shapes [${first.shape.join(', ')}] and [${second.shape.join(', ')}] differ outside axis ${resolved}`,
    );
  }
  const firstLength = first.shape[resolved];
  const secondLength = second.shape[resolved];
  const shape = first.shape.map((dim, index) => (index === resolved ? dim + secondLength : dim));
  const placedFirst = native.narrowBackward({ grad: firstHandle, shape, axis: resolved, start: 0 });
  const placedSecond = native.narrowBackward({ grad: secondHandle, shape, axis: resolved, start: firstLength });
  let joined;
  try {
    joined = native.add({ a: placedFirst, b: placedSecond });
  } finally {
    placedFirst.dispose();
    placedSecond.dispose();
  }
  return record(tensorOf(joined), fn, [first, second], () => (gradOutput) => [
    narrow(gradOutput, resolved, 0, firstLength),
    narrow(gradOutput, resolved, firstLength, secondLength),
  ]);
}

/** The transpose of a matrix [rows, cols] → [cols, rows], as a copy (the head permute on a [1, rows, cols, 1] view). */
export function transpose2d(matrix: Tensor): Tensor {
  if (matrix.rank !== 2) throw new RangeError(`transpose2d: expected a matrix, got shape [${matrix.shape.join(', ')}]`);
  const [rows, cols] = matrix.shape;
  const view = reshape(matrix, [1, rows, cols, 1]);
  const swapped = permute0213(view);
  view.dispose();
  const output = reshape(swapped, [cols, rows]);
  swapped.dispose();
  return output;
}
