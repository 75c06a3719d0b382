// add, sub, mul (with bias broadcast), scale, axpy, sum over an axis and globalNorm against float64, on every path.
import { afterAll, describe, expect, it } from 'vitest';

import { buildInfo, ops, setIsa, setNumThreads, tidy } from '../lib/index';
import { baseSeed, isaPaths, randomTensor, relativeError } from './helpers';

const initialIsa = buildInfo().isa;
afterAll(() => {
  setIsa(initialIsa);
});

// Sizes around vector widths and the threading threshold.
const shapes = [[1], [7], [33, 130], [257, 301], [3, 5, 7, 9]];

describe.each(isaPaths)('elementwise on the %s path', (isa) => {
  it.each(shapes)('binary ops, scale and axpy match float64 for shape %j', (...shape: number[]) => {
    setIsa(isa);
    tidy(() => {
      const a = randomTensor(shape);
      const b = randomTensor(shape);
      const x = Array.from(a.toFloat32Array());
      const y = Array.from(b.toFloat32Array());
      // Each result may carry one float32 rounding of its operands' size: measured against that size, not against
      // the result, which cancellation can make arbitrarily small (a one-element x + y with y ≈ −x).
      const operandScale = Math.max(...x.map((value, index) => Math.abs(value) + 1.7 * Math.abs(y[index])));
      const check = (actual: Float32Array, expected: number[]) => {
        const worst = Math.max(...Array.from(actual, (value, index) => Math.abs(value - expected[index])));
        expect(worst / operandScale, `seed ${baseSeed}`).toBeLessThan(1e-6);
      };
      check(
        ops.add(a, b).toFloat32Array(),
        x.map((value, index) => value + y[index]),
      );
      check(
        ops.sub(a, b).toFloat32Array(),
        x.map((value, index) => value - y[index]),
      );
      check(
        ops.mul(a, b).toFloat32Array(),
        x.map((value, index) => value * y[index]),
      );
      check(
        ops.scale(a, -0.37).toFloat32Array(),
        x.map((value) => -0.37 * value),
      );
      const target = ops.scale(b, 1);
      expect(ops.axpy(target, 1.7, a)).toBe(target);
      check(
        target.toFloat32Array(),
        y.map((value, index) => value + 1.7 * x[index]),
      );
    });
  });

  it('broadcasts a trailing-dims b over the leading dims of a (a bias over rows)', () => {
    setIsa(isa);
    tidy(() => {
      const a = randomTensor([4, 300, 257]);
      const bias = randomTensor([257]);
      const plane = randomTensor([300, 257]);
      const x = a.toFloat32Array();
      const b = bias.toFloat32Array();
      const p = plane.toFloat32Array();
      const sum = ops.add(a, bias).toFloat32Array();
      expect(
        relativeError(
          sum,
          Array.from(x, (value, index) => value + b[index % 257]),
        ),
      ).toBeLessThan(1e-6);
      const product = ops.mul(a, plane).toFloat32Array();
      expect(
        relativeError(
          product,
          Array.from(x, (value, index) => value * p[index % (300 * 257)]),
        ),
      ).toBeLessThan(1e-6);
    });
  });

  it('sums over each axis (negative too, keepDims) and over everything', () => {
    setIsa(isa);
    tidy(() => {
      const dims = [5, 130, 3, 17];
      const a = randomTensor(dims);
      const data = a.toFloat32Array();
      for (let axis = 0; axis < 4; axis++) {
        const outer = dims.slice(0, axis).reduce((total, dim) => total * dim, 1);
        const length = dims[axis];
        const inner = dims.slice(axis + 1).reduce((total, dim) => total * dim, 1);
        const expected = new Float64Array(outer * inner);
        for (let o = 0; o < outer; o++) {
          for (let j = 0; j < length; j++) {
            for (let i = 0; i < inner; i++) expected[o * inner + i] += data[(o * length + j) * inner + i];
          }
        }
        const summed = ops.sum(a, { axis });
        expect(summed.shape).toEqual(dims.filter((_, index) => index !== axis));
        expect(relativeError(summed.toFloat32Array(), expected), `axis ${axis}`).toBeLessThan(1e-6);
        const kept = ops.sum(a, { axis: axis - 4, keepDims: true });
        expect(kept.shape).toEqual(dims.map((dim, index) => (index === axis ? 1 : dim)));
      }
      const total = ops.sum(a);
      expect(total.shape).toEqual([]);
      const expectedTotal = data.reduce((sum, value) => sum + value, 0);
      expect(Math.abs(total.item() - expectedTotal)).toBeLessThan(1e-4 * Math.max(1, Math.abs(expectedTotal)));
      // One wide slab: the column-split path.
      const wide = randomTensor([300, 1000]);
      const wideData = wide.toFloat32Array();
      const columns = new Float64Array(1000);
      for (let row = 0; row < 300; row++) for (let i = 0; i < 1000; i++) columns[i] += wideData[row * 1000 + i];
      expect(relativeError(ops.sum(wide, { axis: 0 }).toFloat32Array(), columns)).toBeLessThan(1e-6);
    });
  });

  it('globalNorm equals the float64 norm over a list of tensors, independent of threads', () => {
    setIsa(isa);
    tidy(() => {
      const tensors = [randomTensor([300, 301]), randomTensor([7]), randomTensor([2, 70_000])];
      let squares = 0;
      for (const tensor of tensors) for (const value of tensor.toFloat32Array()) squares += value * value;
      const norm = ops.globalNorm(tensors);
      expect(Math.abs(norm - Math.sqrt(squares)) / Math.sqrt(squares)).toBeLessThan(1e-12);
      const previous = setNumThreads(1);
      expect(ops.globalNorm(tensors)).toBe(norm);
      setNumThreads(previous);
      expect(ops.globalNorm([])).toBe(0);
    });
  });
});
