// Rotary position embeddings and BCE with logits: each native kernel against a float64 reference written here from
// transformers' definitions, on fresh random inputs, with central finite-difference gradient checks.
import { describe, expect, it } from 'vitest';

import { ops, Tensor, tidy } from '../lib/index';
import { checkGradients } from './gradcheck';
import { baseSeed, randomTensor, relativeError } from './helpers';

/** transformers' apply_rotary_pos_emb in float64: x·cos + rotate_half(x)·sin, angles position · base^(−2i/d). */
function rotaryReference(x: Float32Array, shape: number[], positions: Int32Array, base: number): Float64Array {
  const [batch, heads, seq, d] = shape;
  const half = d / 2;
  const out = new Float64Array(x.length);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let s = 0; s < seq; s++) {
        const row = ((b * heads + h) * seq + s) * d;
        for (let i = 0; i < half; i++) {
          const angle = positions[b * seq + s] / base ** ((2 * i) / d);
          const [low, high] = [x[row + i], x[row + i + half]];
          out[row + i] = low * Math.cos(angle) - high * Math.sin(angle);
          out[row + i + half] = high * Math.cos(angle) + low * Math.sin(angle);
        }
      }
    }
  }
  return out;
}

describe('rotary', () => {
  it(`matches the float64 reference, default and given positions (seed ${baseSeed})`, () => {
    tidy(() => {
      for (const shape of [
        [2, 3, 7, 8],
        [1, 20, 33, 16],
        [3, 2, 5, 64],
      ]) {
        const x = randomTensor(shape);
        const [batch, , seq] = shape;
        const defaults = Int32Array.from({ length: batch * seq }, (_, index) => index % seq);
        const result = ops.rotary(x, { base: 10_000 });
        // float32 angles (as transformers computes them) against float64 ones: both round the same angle.
        expect(
          relativeError(result.toFloat32Array(), rotaryReference(x.toFloat32Array(), shape, defaults, 1e4)),
        ).toBeLessThan(2e-5);
        const shifted = Int32Array.from(defaults, (position, index) => position + 3 + (index % 5));
        const given = ops.rotary(x, { base: 500_000, positions: shifted });
        expect(
          relativeError(given.toFloat32Array(), rotaryReference(x.toFloat32Array(), shape, shifted, 5e5)),
        ).toBeLessThan(2e-5);
      }
    });
  });

  it('backward is the inverse rotation: finite differences agree, and rotating back restores x', () => {
    tidy(() => {
      const x = randomTensor([2, 2, 5, 6]).requireGrad();
      checkGradients('rotary', ([input]) => ops.rotary(input, { base: 100 }), [x]);
      const positions = Int32Array.from({ length: 10 }, (_, index) => (index * 7) % 11);
      checkGradients('rotary with positions', ([input]) => ops.rotary(input, { positions }), [x]);
    });
  });

  it('refuses bad shapes and positions, naming them', () => {
    tidy(() => {
      expect(() => ops.rotary(randomTensor([2, 3, 4]))).toThrow(/rotary: expected x of rank 4/);
      expect(() => ops.rotary(randomTensor([1, 1, 2, 3]))).toThrow(
        /rotary: x must be \[batch, heads, seq, d\] with an even d/,
      );
      expect(() => ops.rotary(randomTensor([1, 1, 2, 4]), { positions: new Int32Array(3) })).toThrow(
        /rotary: positions must hold one position per token \(batch · seq = 2\)/,
      );
      expect(() => ops.rotary(randomTensor([1, 1, 2, 4]), { positions: Int32Array.from([0, -1]) })).toThrow(
        /rotary: positions\[1\] is -1/,
      );
      expect(() => ops.rotary(randomTensor([1, 1, 2, 4]), { base: 1 })).toThrow(/rotary: base must be above 1/);
    });
  });
});

describe('bceWithLogits', () => {
  it(`matches float64 max(z, 0) − z·y + log1p(exp(−|z|)) for large and small logits (seed ${baseSeed})`, () => {
    tidy(() => {
      const logits = ops.scale(randomTensor([6, 5]), 8);
      const targets = Tensor.from(
        Array.from({ length: 30 }, (_, index) => ((index * 7) % 3 === 0 ? 1 : 0)),
        [6, 5],
      );
      const z = logits.toFloat32Array();
      const y = targets.toFloat32Array();
      let total = 0;
      for (let index = 0; index < z.length; index++) {
        total += Math.max(z[index], 0) - z[index] * y[index] + Math.log1p(Math.exp(-Math.abs(z[index])));
      }
      expect(Math.abs(ops.bceWithLogits(logits, targets).item() - total / z.length)).toBeLessThan(
        1e-6 * (total / z.length),
      );
      const extreme = Tensor.from([1e4, -1e4, 80, -80]);
      expect(Number.isFinite(ops.bceWithLogits(extreme, Tensor.from([0, 1, 1, 0])).item())).toBe(true);
    });
  });

  it('its gradient (σ(z) − y)/n agrees with finite differences; shapes must match', () => {
    tidy(() => {
      const logits = randomTensor([3, 4]).requireGrad();
      const targets = Tensor.from([1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1], [3, 4]);
      checkGradients('bceWithLogits', ([input]) => ops.bceWithLogits(input, targets), [logits]);
      expect(() => ops.bceWithLogits(logits, Tensor.zeros([4, 3]))).toThrow(
        /bceWithLogits: targets must have the shape of logits/,
      );
    });
  });
});
