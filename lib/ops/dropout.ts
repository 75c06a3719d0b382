// Inverted dropout with a seeded mask, which backward regenerates instead of storing.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';

/** x ⊙ keep / (1 − p) with keep drawn from `seed`; p = 0 returns x unchanged. */
export function dropout(x: Tensor, p: number, seed: number): Tensor {
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout: p must be in [0, 1), got ${p}`);
  if (p === 0) return x;
  const output = tensorOf(native.dropout({ x: handleOf(x, 'dropout', 'x'), p, seed }));
  return record(output, 'dropout', [x], () => (gradOutput) => [
    tensorOf(native.dropout({ x: handleOf(gradOutput, 'dropout', 'gradOutput'), p, seed })),
  ]);
}
