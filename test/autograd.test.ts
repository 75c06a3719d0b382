// Reverse-mode autograd: finite-difference checks of every op's gradient rule, accumulation, noGrad, grad(),
// restricted backward, frozen weights, and memory returning to its baseline.
import { describe, expect, it } from 'vitest';

import { grad, memory, noGrad, ops, Tensor, tidy } from '../lib/index';
import { checkGradients } from './gradcheck';
import { randomTensor } from './helpers';

const leaf = (shape: number[]) => randomTensor(shape).requireGrad();

describe('gradient rules against central differences', () => {
  it('matmul in all four transpose combinations, batched, and with a shared rank-2 b', () => {
    for (const [transposeA, transposeB] of [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ]) {
      tidy(() => {
        const a = leaf(transposeA ? [4, 3] : [3, 4]);
        const b = leaf(transposeB ? [5, 4] : [4, 5]);
        checkGradients(`matmul ${transposeA} ${transposeB}`, ([x, y]) => ops.matmul(x, y, { transposeA, transposeB }), [
          a,
          b,
        ]);
      });
    }
    tidy(() => {
      checkGradients('batched matmul', ([x, y]) => ops.matmul(x, y, { transposeB: true }), [
        leaf([2, 3, 4]),
        leaf([2, 5, 4]),
      ]);
      checkGradients('shared b', ([x, y]) => ops.matmul(x, y), [leaf([2, 3, 4]), leaf([4, 2])]);
    });
  });

  it('linear with and without bias, rank-3 input', () => {
    tidy(() => {
      checkGradients('linear', ([x, w, b]) => ops.linear(x, w, b), [leaf([2, 3, 5]), leaf([4, 5]), leaf([4])]);
      checkGradients('linear without bias', ([x, w]) => ops.linear(x, w), [leaf([3, 5]), leaf([2, 5])]);
    });
  });

  it('add, sub and mul with a broadcast operand, scale, reshape', () => {
    tidy(() => {
      checkGradients('add', ([x, y]) => ops.add(x, y), [leaf([3, 4]), leaf([4])]);
      checkGradients('sub', ([x, y]) => ops.sub(x, y), [leaf([2, 3, 4]), leaf([3, 4])]);
      checkGradients('mul', ([x, y]) => ops.mul(x, y), [leaf([3, 4]), leaf([4])]);
      checkGradients('mul same shape', ([x, y]) => ops.mul(x, y), [leaf([3, 4]), leaf([3, 4])]);
      checkGradients('scale', ([x]) => ops.scale(x, -1.7), [leaf([5])]);
      checkGradients('reshape', ([x]) => ops.mul(ops.reshape(x, [2, -1]), ops.reshape(x, [2, 6])), [leaf([3, 4])]);
    });
  });

  it('sum and mean over an axis, with keepDims, and over everything', () => {
    tidy(() => {
      for (const axis of [0, 1, -1]) {
        checkGradients(`sum axis ${axis}`, ([x]) => ops.sum(x, { axis }), [leaf([3, 4, 2])]);
        checkGradients(`mean axis ${axis}`, ([x]) => ops.mean(x, { axis, keepDims: true }), [leaf([3, 4, 2])]);
      }
      checkGradients('sum all', ([x]) => ops.sum(x), [leaf([3, 4])]);
      checkGradients('mean all', ([x]) => ops.mean(x), [leaf([3, 4])]);
    });
  });
});

describe('autograd semantics', () => {
  it('accumulates into .grad across backward calls and reuses of one tensor', () => {
    tidy(() => {
      const x = Tensor.from([1, 2, 3]).requireGrad();
      ops.sum(ops.mul(x, x)).backward();
      expect(Array.from(x.grad!.toFloat32Array())).toEqual([2, 4, 6]);
      ops.sum(ops.add(x, x)).backward();
      expect(Array.from(x.grad!.toFloat32Array())).toEqual([4, 6, 8]);
    });
  });

  it('noGrad records nothing; a frozen weight gets no gradient', () => {
    tidy(() => {
      const x = leaf([2, 3]);
      const frozen = randomTensor([4, 3]);
      const y = noGrad(() => ops.linear(x, frozen));
      expect(y.requiresGrad).toBe(false);
      const z = ops.linear(x, frozen);
      ops.sum(z).backward();
      expect(frozen.grad).toBeUndefined();
      expect(x.grad).toBeDefined();
    });
  });

  it('grad() returns gradients for the chosen tensors only, leaving .grad alone', () => {
    tidy(() => {
      const a = leaf([3]);
      const b = leaf([3]);
      const loss = ops.sum(ops.mul(a, b));
      const [gradA] = grad(loss, [a]);
      expect(Array.from(gradA.toFloat32Array())).toEqual(Array.from(b.toFloat32Array()));
      expect(a.grad).toBeUndefined();
      expect(b.grad).toBeUndefined();
      const restricted = ops.sum(ops.mul(a, b));
      restricted.backward({ inputs: [b] });
      expect(a.grad).toBeUndefined();
      expect(Array.from(b.grad!.toFloat32Array())).toEqual(Array.from(a.toFloat32Array()));
    });
  });

  it('a second backward needs retainGraph; non-scalar roots need a gradient', () => {
    tidy(() => {
      const x = leaf([2]);
      const loss = ops.sum(ops.mul(x, x));
      loss.backward({ retainGraph: true });
      loss.backward();
      expect(() => loss.backward()).toThrow(/already freed/);
      expect(() => ops.mul(x, x).backward()).toThrow(RangeError);
    });
  });

  it('frees intermediate and saved values: memory returns to its baseline after backward', () => {
    const before = memory();
    const parameters = [leaf([8, 6]), leaf([8]), leaf([8, 3])];
    tidy(() => {
      const [weight, bias, head] = parameters;
      const input = randomTensor([5, 6]);
      const hidden = ops.linear(input, weight, bias);
      const loss = ops.mean(ops.matmul(hidden, head, { transposeB: false }));
      loss.backward();
    });
    for (const parameter of parameters) {
      expect(parameter.grad).toBeDefined();
      parameter.grad!.dispose();
      parameter.dispose();
    }
    expect(memory().tensors).toBe(before.tensors);
    expect(memory().bytes).toBe(before.bytes);
  });

  it('users may dispose intermediates before backward: the graph keeps what it saved', () => {
    tidy(() => {
      const x = Tensor.from([1, 2]).requireGrad();
      const loss = tidy(() => ops.sum(ops.mul(ops.scale(x, 3), x)));
      loss.backward();
      expect(Array.from(x.grad!.toFloat32Array())).toEqual([6, 12]);
    });
  });
});
