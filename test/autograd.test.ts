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

describe('gradient rules of the layer ops against central differences', () => {
  it('gelu, relu, tanh', () => {
    tidy(() => {
      checkGradients('gelu', ([x]) => ops.gelu(x), [leaf([3, 5])]);
      // Keep ReLU's inputs away from the kink, where differences straddle it.
      const away = Tensor.from(
        randomTensor([3, 5])
          .toFloat32Array()
          .map((value) => (Math.abs(value) < 0.05 ? 0.5 : value)),
        [3, 5],
      ).requireGrad();
      checkGradients('relu', ([x]) => ops.relu(x), [away]);
      checkGradients('tanh', ([x]) => ops.tanh(x), [leaf([3, 5])]);
    });
  });

  it('layerNorm for input, gamma and beta', () => {
    tidy(() => {
      checkGradients('layerNorm', ([x, gamma, beta]) => ops.layerNorm(x, gamma, beta, 1e-5), [
        leaf([2, 3, 6]),
        leaf([6]),
        leaf([6]),
      ]);
    });
  });

  it('softmax with and without a padding mask', () => {
    tidy(() => {
      checkGradients('softmax', ([x]) => ops.softmax(x), [leaf([2, 5])]);
      const mask = Tensor.from([1, 1, 0, 1, 1, 1, 1, 0], [2, 4]);
      checkGradients('masked softmax', ([x]) => ops.softmax(x, mask), [leaf([2, 3, 2, 4])]);
    });
  });

  it('embedding (repeated ids), narrow, select, permute and the head split/merge', () => {
    tidy(() => {
      const ids = Int32Array.from([3, 1, 3, 0, 2, 3]);
      checkGradients('embedding', ([table]) => ops.embedding(table, ids, [2, 3]), [leaf([5, 4])]);
      checkGradients('narrow', ([x]) => ops.narrow(x, 1, 1, 2), [leaf([2, 4, 3])]);
      checkGradients('select', ([x]) => ops.select(x, 1, 0), [leaf([2, 4, 3])]);
      checkGradients('permute0213', ([x]) => ops.permute0213(x), [leaf([2, 3, 4, 2])]);
      checkGradients('split and merge heads', ([x]) => ops.mul(ops.mergeHeads(ops.splitHeads(x, 2)), x), [
        leaf([2, 3, 4]),
      ]);
    });
  });

  it('dropout with a fixed seed', () => {
    tidy(() => {
      checkGradients('dropout', ([x]) => ops.dropout(x, 0.4, 77), [leaf([4, 6])]);
    });
  });

  it('cross-entropy (with an ignored label) and MSE', () => {
    tidy(() => {
      const labels = Int32Array.from([2, -100, 0, 1]);
      checkGradients('crossEntropy', ([logits]) => ops.crossEntropy(logits, labels), [leaf([4, 3])]);
      checkGradients('mseLoss', ([prediction, target]) => ops.mseLoss(prediction, target), [leaf([5]), leaf([5])]);
    });
  });

  it('the fused DoRA and LoRA layers through autograd, frozen weight', () => {
    tidy(() => {
      const weight = randomTensor([6, 5]);
      const scale = 1.5;
      checkGradients(
        'doraLinear',
        ([input, loraA, loraB, magnitude, bias]) =>
          ops.doraLinear({ input, weight, bias, loraA, loraB, magnitude, scale, detachNorm: false }),
        [leaf([2, 3, 5]), leaf([2, 5]), leaf([6, 2]), leaf([6]), leaf([6])],
      );
      checkGradients('loraLinear', ([input, loraA, loraB]) => ops.loraLinear({ input, weight, loraA, loraB, scale }), [
        leaf([4, 5]),
        leaf([2, 5]),
        leaf([6, 2]),
      ]);
      expect(() =>
        ops.doraLinear({
          input: randomTensor([1, 5]),
          weight: leaf([6, 5]),
          loraA: leaf([2, 5]),
          loraB: leaf([6, 2]),
          magnitude: leaf([6]),
          scale,
        }),
      ).toThrow(/weight must be frozen/);
    });
  });
});
