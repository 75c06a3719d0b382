// Bad input: every documented misuse throws a TypeError or RangeError naming the argument, through the library and
// straight through the addon (which must never crash the process).
import { describe, expect, it } from 'vitest';

import { native } from '../lib/binding';
import { ops, setIsa, setNumThreads, Tensor, tidy } from '../lib/index';

type ErrorClass = typeof TypeError | typeof RangeError;

const cases: [string, () => unknown, ErrorClass, RegExp][] = [
  ['data not a Float32Array', () => Tensor.from(new Float64Array(4) as never, [4]), TypeError, /Tensor\.from: data/],
  ['data with a non-number', () => Tensor.from([1, 'x'] as never, [2]), TypeError, /data\[1\]/],
  ['data length vs shape', () => Tensor.from(new Float32Array(5), [2, 3]), RangeError, /data has 5.*\[2, 3\]/],
  ['NaN dimension', () => Tensor.zeros([2, NaN]), RangeError, /shape: dimension 1 is NaN/],
  ['negative dimension', () => Tensor.zeros([-1]), RangeError, /shape: dimension 0 is -1/],
  ['fractional dimension', () => Tensor.zeros([2.5]), RangeError, /shape: dimension 0 is 2.5/],
  ['string dimension', () => Tensor.zeros(['3'] as never), TypeError, /shape: dimension 0 must be a number/],
  ['rank above 4', () => Tensor.zeros([1, 1, 1, 1, 1]), RangeError, /shape: rank 5/],
  ['shape not an array', () => Tensor.zeros(3 as never), TypeError, /shape must be an array/],
  ['seed not an integer', () => Tensor.randn([2], { seed: 1.5 }), RangeError, /seed/],
  ['matmul inner dims', () => ops.matmul(Tensor.zeros([2, 3]), Tensor.zeros([4, 5])), RangeError, /\[2, 3\].*\[4, 5\]/],
  ['matmul rank 1', () => ops.matmul(Tensor.zeros([3]), Tensor.zeros([3, 2])), RangeError, /a has shape \[3\]/],
  [
    'matmul batch dims',
    () => ops.matmul(Tensor.zeros([2, 3, 4]), Tensor.zeros([3, 4, 5])),
    RangeError,
    /batch dimensions differ.*\[2, 3, 4\].*\[3, 4, 5\]/,
  ],
  [
    'matmul non-tensor',
    () => ops.matmul([[1]] as never, Tensor.zeros([1, 1])),
    TypeError,
    /matmul: a must be a Tensor/,
  ],
  [
    'linear in-features',
    () => ops.linear(Tensor.zeros([2, 3]), Tensor.zeros([4, 5])),
    RangeError,
    /input.*\[2, 3\].*weight.*\[4, 5\]/,
  ],
  [
    'linear weight rank',
    () => ops.linear(Tensor.zeros([2, 3]), Tensor.zeros([3])),
    RangeError,
    /weight has shape \[3\]/,
  ],
  [
    'linear bias shape',
    () => ops.linear(Tensor.zeros([2, 3]), Tensor.zeros([4, 3]), Tensor.zeros([3])),
    RangeError,
    /bias of shape \[4\].*bias has shape \[3\]/,
  ],
  ['add shapes', () => ops.add(Tensor.zeros([2, 3]), Tensor.zeros([2])), RangeError, /add:.*\[2, 3\].*\[2\]/],
  [
    'axpy shapes',
    () => ops.axpy(Tensor.zeros([3]), 1, Tensor.zeros([4])),
    RangeError,
    /axpy:.*y has shape \[3\].*x has shape \[4\]/,
  ],
  ['scale NaN', () => ops.scale(Tensor.zeros([3]), NaN), RangeError, /scale: alpha must be finite/],
  ['sum axis', () => ops.sum(Tensor.zeros([2, 3]), { axis: 2 }), RangeError, /sum: axis/],
  [
    'globalNorm entry',
    () => ops.globalNorm([Tensor.zeros([1]), 3 as never]),
    TypeError,
    /tensors\[1\] must be a Tensor/,
  ],
  ['setIsa unknown', () => setIsa('sse9' as never), RangeError, /setIsa: isa/],
  ['setNumThreads zero', () => setNumThreads(0), RangeError, /setNumThreads: threads/],
];

describe('bad input through the library', () => {
  it.each(cases)('%s', (_, call, errorClass, message) => {
    tidy(() => {
      expect(call).toThrow(errorClass);
      expect(call).toThrow(message);
    });
  });

  it('a disposed tensor is refused by every op, naming the argument', () => {
    const disposed = Tensor.ones([2, 2]);
    disposed.dispose();
    tidy(() => {
      const live = Tensor.ones([2, 2]);
      expect(() => ops.matmul(live, disposed)).toThrow(/matmul: b is a disposed Tensor/);
      expect(() => ops.linear(disposed, live)).toThrow(TypeError);
      expect(() => ops.add(live, disposed)).toThrow(/add: b is a disposed Tensor/);
      expect(() => ops.globalNorm([live, disposed])).toThrow(/tensors\[1\] is a disposed Tensor/);
    });
  });
});

describe('bad input straight to the addon', () => {
  const junk: unknown[] = [undefined, null, 0, NaN, 'x', {}, [], new Float32Array(1), () => 0];

  it('every function throws a TypeError or RangeError for junk arguments, never crashing', () => {
    const functions = Object.entries(native).filter(
      ([name, value]) => typeof value === 'function' && name !== 'TensorHandle',
    ) as [string, (...args: unknown[]) => unknown][];
    expect(functions.length).toBeGreaterThan(15);
    const harmless = new Set(['buildInfo', 'memory', 'resetPeakMemory']);
    for (const [name, fn] of functions) {
      if (harmless.has(name)) continue;
      for (const value of junk) {
        const args = [value, value, value, value];
        let thrown: unknown;
        try {
          const result = fn(...args);
          if (result !== null && typeof result === 'object' && 'dispose' in result) {
            (result as { dispose(): void }).dispose();
          }
        } catch (error) {
          thrown = error;
        }
        if (thrown !== undefined) {
          expect(thrown instanceof TypeError || thrown instanceof RangeError, `${name}(${String(value)})`).toBe(true);
        }
      }
    }
  });

  it('a handle cannot be constructed from JavaScript, and handles are checked by class', () => {
    expect(() => new (native.TensorHandle as unknown as new () => unknown)()).toThrow(TypeError);
    const impostor = { shape: [2, 2], disposed: false, read: () => new Float32Array(4) };
    expect(() => native.matmul({ a: impostor as never, b: impostor as never })).toThrow(/matmul: a must be a Tensor/);
    expect(() => native.fromFloat32Array({ data: new Float32Array(2), shape: [1, 2, 3] as never })).toThrow(RangeError);
  });
});
