// matmul and linear against float64 references: every transpose combination, odd sizes, every ISA path, threads.
import { afterAll, describe, expect, it } from 'vitest';

import { ops, setIsa, setNumThreads, Tensor, tidy, memory, buildInfo } from '../lib/index';
import { baseSeed, isaPaths, matmulReference, randomTensor, relativeError } from './helpers';

const initialIsa = buildInfo().isa;
afterAll(() => {
  setIsa(initialIsa);
});

// (m, n, k): each odd size appears in every position, plus one product with every dim above 1024.
const shapes: [number, number, number][] = [
  [1, 1, 1],
  [7, 33, 130],
  [33, 257, 7],
  [130, 7, 257],
  [257, 130, 33],
  [1, 257, 130],
  [257, 1, 7],
  [7, 130, 1],
  [1031, 1029, 1033],
];
const transposes: [boolean, boolean][] = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];

function stored(rows: number, cols: number, transposed: boolean): number[] {
  return transposed ? [cols, rows] : [rows, cols];
}

describe.each(isaPaths)('matmul on the %s path', (isa) => {
  it.each(shapes)('m=%i n=%i k=%i matches float64 for all four transpose combinations', (m, n, k) => {
    setIsa(isa);
    for (const [transposeA, transposeB] of transposes) {
      tidy(() => {
        const a = randomTensor(stored(m, k, transposeA));
        const b = randomTensor(stored(k, n, transposeB));
        const product = ops.matmul(a, b, { transposeA, transposeB });
        expect(product.shape).toEqual([m, n]);
        const expected = matmulReference(a.toFloat32Array(), transposeA, b.toFloat32Array(), transposeB, m, n, k);
        const error = relativeError(product.toFloat32Array(), expected);
        expect(error, `seed ${baseSeed}, transposeA=${transposeA}, transposeB=${transposeB}`).toBeLessThan(1e-5);
      });
    }
  });

  // [rows, out, in]: the GEMM adds the bias as it first stores each register tile, on whichever form the shape takes:
  // rows split between threads, columns split (few rows), several depth blocks (in > KC), the thin-C dot form (few
  // outputs) and the transposed form (fewer outputs than a tile is wide).
  it.each([
    [33, 257, 130],
    [4, 257, 700],
    [300, 70, 1000],
    [9, 5, 200],
    [100, 20, 30],
  ])('linear with %i rows, %i outputs and %i inputs equals input · weightᵀ + bias, bias added once', (rows, out, k) => {
    setIsa(isa);
    tidy(() => {
      const input = randomTensor([3, rows, k]);
      const weight = randomTensor([out, k]);
      const bias = randomTensor([out]);
      const biasValues = bias.toFloat32Array();
      const product = matmulReference(input.toFloat32Array(), false, weight.toFloat32Array(), true, 3 * rows, out, k);
      const withBias = Float64Array.from(product, (value, index) => value + biasValues[index % out]);
      const plain = ops.linear(input, weight);
      const biased = ops.linear(input, weight, bias);
      expect(plain.shape).toEqual([3, rows, out]);
      expect(relativeError(plain.toFloat32Array(), product), `seed ${baseSeed}`).toBeLessThan(1e-5);
      expect(relativeError(biased.toFloat32Array(), withBias), `seed ${baseSeed}`).toBeLessThan(1e-5);
      // With bfloat16 weights the products round their inputs; the bias still lands once, in its own column. Added
      // to the first depth block's sum, it changes only how the later ones round: a few float32 ulps of the terms.
      const narrow = weight.to('bfloat16');
      const plainNarrow = ops.linear(input, narrow).toFloat32Array();
      const biasedNarrow = ops.linear(input, narrow, bias).toFloat32Array();
      const absolute = (values: Float32Array) => values.map(Math.abs);
      const termSizes = matmulReference(
        absolute(input.toFloat32Array()),
        false,
        absolute(weight.toFloat32Array()),
        true,
        3 * rows,
        out,
        k,
      );
      for (let index = 0; index < biasedNarrow.length; index++) {
        const added = biasedNarrow[index] - plainNarrow[index];
        const bound = 2 ** -21 * (termSizes[index] + Math.abs(biasValues[index % out]));
        expect(Math.abs(added - biasValues[index % out]), `element ${index}, seed ${baseSeed}`).toBeLessThanOrEqual(
          bound,
        );
      }
    });
  });

  it('batched matmul multiplies each batch, and a rank-2 b is shared by every batch', () => {
    setIsa(isa);
    tidy(() => {
      const a = randomTensor([2, 3, 17, 9]);
      const b = randomTensor([2, 3, 13, 9]);
      const shared = randomTensor([9, 5]);
      const batched = ops.matmul(a, b, { transposeB: true }).toFloat32Array();
      const sharedProduct = ops.matmul(a, shared).toFloat32Array();
      const aData = a.toFloat32Array();
      const bData = b.toFloat32Array();
      for (let batch = 0; batch < 6; batch++) {
        const aSlice = aData.subarray(batch * 153, (batch + 1) * 153);
        const expected = matmulReference(
          aSlice,
          false,
          bData.subarray(batch * 117, (batch + 1) * 117),
          true,
          17,
          13,
          9,
        );
        expect(relativeError(batched.subarray(batch * 221, (batch + 1) * 221), expected)).toBeLessThan(1e-5);
        const expectedShared = matmulReference(aSlice, false, shared.toFloat32Array(), false, 17, 5, 9);
        expect(relativeError(sharedProduct.subarray(batch * 85, (batch + 1) * 85), expectedShared)).toBeLessThan(1e-5);
      }
    });
  });
});

describe('matmul determinism', () => {
  it('gives the same bits twice, and the same bits with 1 and 2 threads, on every path', () => {
    for (const isa of isaPaths) {
      setIsa(isa);
      tidy(() => {
        const a = randomTensor([513, 1100]);
        const b = randomTensor([1100, 259]);
        const first = ops.matmul(a, b).toFloat32Array();
        const second = ops.matmul(a, b).toFloat32Array();
        const previous = setNumThreads(1);
        const single = ops.matmul(a, b).toFloat32Array();
        setNumThreads(previous);
        expect(second).toEqual(first);
        expect(relativeError(single, first), isa).toBeLessThan(1e-6);
      });
    }
  });

  it('writes every element when k is 0 (an empty sum is 0) and handles empty outputs', () => {
    tidy(() => {
      const product = ops.matmul(Tensor.zeros([3, 0]), Tensor.zeros([0, 4]));
      expect(Array.from(product.toFloat32Array())).toEqual(new Array(12).fill(0));
      expect(ops.matmul(Tensor.zeros([0, 5]), randomTensor([5, 3])).shape).toEqual([0, 3]);
    });
  });

  it('leaves no native memory behind', () => {
    const before = memory().tensors;
    tidy(() => {
      ops.matmul(randomTensor([64, 64]), randomTensor([64, 64]));
    });
    expect(memory().tensors).toBe(before);
  });
});
