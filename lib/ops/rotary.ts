// Rotary position embeddings (RoFormer; ESM-2, Llama): queries and keys turned, pair of features by pair, by angles
// that grow with the token's position, so attention scores depend on relative positions.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';

/** Options of `rotary`: the frequency base and the token positions. */
export interface RotaryOptions {
  /** The frequency base (rope_theta), default 10000: pair i of a d-wide head turns base^(−2i/d) radians per position. */
  base?: number;
  /**
   * Each token's position, [batch][seq] or flattened (Int32Array); 0, 1, ... along every row by default. Decoders
   * give left-padded rows positions counted from their first real token, and cached decoding the offset.
   */
  positions?: Int32Array | readonly (readonly number[])[];
}

/**
 * x [batch, heads, seq, d] with each (token, head) row's pairs (x_i, x_{i+d/2}) rotated by position·base^(−2i/d),
 * as transformers' `x·cos + rotate_half(x)·sin`. Differentiable: the gradient is the inverse rotation.
 */
export function rotary(x: Tensor, options: RotaryOptions = {}): Tensor {
  const fn = 'rotary';
  const handle = handleOf(x, fn, 'x');
  if (x.rank !== 4) throw new RangeError(`${fn}: expected x of rank 4 [batch, heads, seq, d], got shape [${x.shape}]`);
  const [batch, , seq] = x.shape;
  const base = options.base ?? 10_000;
  const positions = positionsOf(options.positions, batch, seq, fn);
  const output = tensorOf(native.rotary({ x: handle, positions, base, inverse: false }));
  return record(output, fn, [x], () => (gradOutput) => [
    tensorOf(native.rotary({ x: handleOf(gradOutput, fn, 'gradOutput'), positions, base, inverse: true })),
  ]);
}

function positionsOf(given: RotaryOptions['positions'], batch: number, seq: number, fn: string): Int32Array {
  if (given === undefined) return Int32Array.from({ length: batch * seq }, (_, index) => index % seq);
  if (given instanceof Int32Array) return given.slice();
  if (
    !Array.isArray(given) ||
    given.length !== batch ||
    given.some((row) => !Array.isArray(row) || row.length !== seq)
  ) {
    throw new RangeError(
      `${fn}: positions must be ${batch} rows of ${seq} positions, or an Int32Array of ${batch * seq}`,
    );
  }
  return Int32Array.from(given.flat(), (position) => {
    if (!Number.isInteger(position) || position < 0 || position >= 2 ** 31) {
      throw new RangeError(`${fn}: positions must be integers in [0, 2^31), got ${position}`);
    }
    return position;
  });
}
