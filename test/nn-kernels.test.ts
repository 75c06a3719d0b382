// The nn kernels through the native binding: activations, layer norm, softmax (masked too), embedding, the head
// permute, cross-entropy, MSE and dropout against float64 references written here, central differences of every
// backward on the float32 kernels themselves, thread-count independence, and bad input naming its argument.
import { afterAll, describe, expect, it } from 'vitest';

import { native, type NativeTensorHandle } from '../lib/binding';
import { buildInfo, setIsa, setNumThreads, Tensor, tidy } from '../lib/index';
import { handleOf, tensorOf } from '../lib/tensor';
import { baseSeed, isaPaths, randomTensor, relativeError } from './helpers';

const initialIsa = buildInfo().isa;
const initialThreads = buildInfo().threads;
afterAll(() => {
  setIsa(initialIsa);
  setNumThreads(initialThreads);
});

type Handle = NativeTensorHandle;
const handle = (tensor: Tensor): Handle => handleOf(tensor, 'test', 'tensor');
/** The contents of a fresh handle, wrapped so that the enclosing tidy frees it. */
const read = (result: Handle): Float32Array => tensorOf(result).toFloat32Array();
const rowsOf = (shape: readonly number[]) => shape.slice(0, -1).reduce((count, dim) => count * dim, 1);
const seedNote = `seed ${baseSeed}`;

/** Reproducible integers in [0, limit) from the run's base seed (mulberry32). */
let intState = baseSeed ^ 0x5bd1e995;
function randomInts(count: number, limit: number): Int32Array {
  return Int32Array.from({ length: count }, () => {
    intState = (intState + 0x6d2b79f5) | 0;
    let value = Math.imul(intState ^ (intState >>> 15), 1 | intState);
    value ^= value + Math.imul(value ^ (value >>> 7), 61 | value);
    return (((value ^ (value >>> 14)) >>> 0) % limit) | 0;
  });
}

// ---- float64 references ----

/** erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (2n+1)!!: every term positive, so no cancellation at any x. */
function erf(x: number): number {
  const magnitude = Math.abs(x);
  if (magnitude > 6) return Math.sign(x);
  let term = magnitude;
  let sum = magnitude;
  for (let n = 1; term > 1e-17 * sum; n++) {
    term *= (2 * magnitude * magnitude) / (2 * n + 1);
    sum += term;
  }
  return ((Math.sign(x) * 2) / Math.sqrt(Math.PI)) * Math.exp(-magnitude * magnitude) * sum;
}

/** erfc(z), with full relative precision for large z (a continued fraction there, where 1 − erf(z) cancels). */
function erfc(z: number): number {
  if (z < 3) return 1 - erf(z);
  let fraction = z;
  for (let k = 100; k >= 1; k--) fraction = z + k / 2 / fraction;
  return Math.exp(-z * z) / Math.sqrt(Math.PI) / fraction;
}

/** The standard normal CDF Φ(x) = erfc(−x/√2) / 2, accurate relative to itself deep into the lower tail. */
const normalCdf = (x: number) => 0.5 * erfc(-x / Math.SQRT2);
const geluReference = (x: number) => x * normalCdf(x);
const geluDerivative = (x: number) => normalCdf(x) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);

function layerNormReference(x: Float32Array, gamma: Float32Array, beta: Float32Array, eps: number, d: number) {
  const rows = x.length / d;
  const output = new Float64Array(x.length);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let row = 0; row < rows; row++) {
    let sum = 0;
    for (let j = 0; j < d; j++) sum += x[row * d + j];
    mean[row] = sum / d;
    let squares = 0;
    for (let j = 0; j < d; j++) squares += (x[row * d + j] - mean[row]) ** 2;
    rstd[row] = 1 / Math.sqrt(squares / d + eps);
    for (let j = 0; j < d; j++) {
      output[row * d + j] = (x[row * d + j] - mean[row]) * rstd[row] * gamma[j] + beta[j];
    }
  }
  return { output, mean, rstd };
}

function layerNormBackwardReference(
  gradOutput: Float32Array,
  x: Float32Array,
  gamma: Float32Array,
  eps: number,
  d: number,
) {
  const rows = x.length / d;
  const { mean, rstd } = layerNormReference(x, gamma, gamma, eps, d);
  const input = new Float64Array(x.length);
  const gradGamma = new Float64Array(d);
  const gradBeta = new Float64Array(d);
  for (let row = 0; row < rows; row++) {
    let sumG = 0;
    let sumGNormalized = 0;
    for (let j = 0; j < d; j++) {
      const normalized = (x[row * d + j] - mean[row]) * rstd[row];
      const g = gradOutput[row * d + j] * gamma[j];
      sumG += g;
      sumGNormalized += g * normalized;
      gradGamma[j] += gradOutput[row * d + j] * normalized;
      gradBeta[j] += gradOutput[row * d + j];
    }
    for (let j = 0; j < d; j++) {
      const normalized = (x[row * d + j] - mean[row]) * rstd[row];
      const g = gradOutput[row * d + j] * gamma[j];
      input[row * d + j] = rstd[row] * (g - sumG / d - (normalized * sumGNormalized) / d);
    }
  }
  return { input, gamma: gradGamma, beta: gradBeta };
}

/** Softmax over rows of d; mask [batch, d] (0 masks) shared by the rows of each of the `batch` leading blocks. */
function softmaxReference(x: Float32Array, d: number, mask?: Float32Array, batch = 1): Float64Array {
  const rows = x.length / d;
  const perBatch = rows / batch;
  const out = new Float64Array(x.length);
  for (let row = 0; row < rows; row++) {
    const attends = (j: number) => mask === undefined || mask[Math.floor(row / perBatch) * d + j] !== 0;
    let max = -Infinity;
    for (let j = 0; j < d; j++) if (attends(j)) max = Math.max(max, x[row * d + j]);
    if (max === -Infinity) continue;
    let sum = 0;
    for (let j = 0; j < d; j++) if (attends(j)) sum += Math.exp(x[row * d + j] - max);
    for (let j = 0; j < d; j++) out[row * d + j] = attends(j) ? Math.exp(x[row * d + j] - max) / sum : 0;
  }
  return out;
}

function crossEntropyReference(logits: Float32Array, labels: Int32Array, ignoreIndex: number, c: number) {
  let total = 0;
  let count = 0;
  const probabilities = softmaxReference(logits, c);
  const grad = new Float64Array(logits.length);
  labels.forEach((label, row) => {
    if (label === ignoreIndex) return;
    let max = -Infinity;
    for (let j = 0; j < c; j++) max = Math.max(max, logits[row * c + j]);
    let sum = 0;
    for (let j = 0; j < c; j++) sum += Math.exp(logits[row * c + j] - max);
    total += max + Math.log(sum) - logits[row * c + label];
    count++;
  });
  labels.forEach((label, row) => {
    if (label === ignoreIndex) return;
    for (let j = 0; j < c; j++) grad[row * c + j] = (probabilities[row * c + j] - (j === label ? 1 : 0)) / count;
  });
  return { loss: count === 0 ? 0 : total / count, grad };
}

// ---- central differences of the float32 kernels ----

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let total = 0;
  for (let index = 0; index < a.length; index++) total += a[index] * b[index];
  return total;
}

/**
 * Checks `gradient` (of a scalar loss at `base`) against (loss(base + δ) − loss(base − δ)) / 2 along a random
 * direction, with δ the float32-rounded steps actually taken. The error is measured against Σ|gᵢ δᵢ|, a scale that
 * stays meaningful when the directional derivative itself happens to be small.
 */
function checkDirectional(
  loss: (input: Tensor) => number,
  base: Tensor,
  gradient: Float32Array,
  step: number,
  label: string,
  tolerance = 1e-3,
): void {
  tidy(() => {
    const values = base.toFloat32Array();
    const direction = randomTensor(base.shape).toFloat32Array();
    const plus = Float32Array.from(values, (value, index) => value + step * direction[index]);
    const minus = Float32Array.from(values, (value, index) => value - step * direction[index]);
    const numeric = (loss(Tensor.from(plus, base.shape)) - loss(Tensor.from(minus, base.shape))) / 2;
    const taken = Float64Array.from(plus, (value, index) => (value - minus[index]) / 2);
    const analytic = dot(gradient, taken);
    let scale = 0;
    for (let index = 0; index < taken.length; index++) scale += Math.abs(gradient[index] * taken[index]);
    expect(Math.abs(numeric - analytic) / Math.max(scale, 1e-30), `${label} ${seedNote}`).toBeLessThan(tolerance);
  });
}

/** Σ weights · kernel(input), in float64 from the kernel's float32 output. */
const weightedSum = (weights: Float32Array, run: (input: Tensor) => Handle) => (input: Tensor) =>
  tidy(() => dot(read(run(input)), weights));

// ---- per-ISA kernels ----

/** A random tensor scaled by 3, so activations and softmax see values well past ±1 too. */
function widened(tensor: Tensor): Tensor {
  return Tensor.from(
    tensor.toFloat32Array().map((value) => 3 * value),
    tensor.shape,
  );
}

const activationShapes = [[1], [7, 17], [130, 257], [2, 3, 5, 7]];
const rowShapes = [
  [1, 1],
  [7, 17],
  [130, 257],
  [2, 5, 768],
];

describe.each(isaPaths)('nn kernels on the %s path', (isa) => {
  it.each(activationShapes)('GELU, ReLU and tanh forward and backward match float64 for shape %j', (...shape) => {
    setIsa(isa);
    tidy(() => {
      const x = widened(randomTensor(shape));
      const gradOutput = randomTensor(shape);
      const xs = x.toFloat32Array();
      const gy = gradOutput.toFloat32Array();
      const label = `${isa} ${JSON.stringify(shape)} ${seedNote}`;

      expect(relativeError(read(native.gelu({ x: handle(x) })), Array.from(xs, geluReference)), label).toBeLessThan(
        1e-5,
      );
      const geluGrad = read(native.geluBackward({ x: handle(x), gradOutput: handle(gradOutput) }));
      const geluExpected = Array.from(xs, (value, index) => gy[index] * geluDerivative(value));
      expect(relativeError(geluGrad, geluExpected), label).toBeLessThan(1e-4);

      expect(
        relativeError(
          read(native.relu({ x: handle(x) })),
          Array.from(xs, (v) => Math.max(v, 0)),
        ),
        label,
      ).toBe(0);
      const reluGrad = read(native.reluBackward({ x: handle(x), gradOutput: handle(gradOutput) }));
      expect(
        relativeError(
          reluGrad,
          Array.from(xs, (value, index) => (value > 0 ? gy[index] : 0)),
        ),
        label,
      ).toBe(0);

      const tanhOutput = read(native.tanh({ x: handle(x) }));
      expect(relativeError(tanhOutput, Array.from(xs, Math.tanh)), label).toBeLessThan(1e-5);
      const tanhGrad = read(
        native.tanhBackward({
          output: handle(tensorOf(native.tanh({ x: handle(x) }))),
          gradOutput: handle(gradOutput),
        }),
      );
      const tanhExpected = Array.from(tanhOutput, (y, index) => gy[index] * (1 - y * y));
      expect(relativeError(tanhGrad, tanhExpected), label).toBeLessThan(1e-4);
    });
  });

  it('GELU, its gradient and tanh keep their relative accuracy far into the tails and near zero', () => {
    setIsa(isa);
    tidy(() => {
      const points = [-40, -12, -9, -5.5, -3, -1, -0.31, -0.29, -1e-3, -1e-30, 0, 1e-30, 1e-4, 0.3, 0.7, 2, 6, 9, 40];
      // A dense sweep too, through the tail down to where Φ(x) leaves float's normal range.
      for (let value = -12.5; value <= 12.5; value += 0.01) points.push(Math.fround(value));
      const x = Tensor.from(points);
      const ones = Tensor.full([points.length], 1);
      const gelu = read(native.gelu({ x: handle(x) }));
      const geluGrad = read(native.geluBackward({ x: handle(x), gradOutput: handle(ones) }));
      const tanh = read(native.tanh({ x: handle(x) }));
      // x² / 2 rounded to float moves e^(−x²/2) by up to x² · 2^-25 relative: allowed for on top of a few ulps.
      const allowed = (value: number) => 1e-6 + value * value * 3e-8;
      points.forEach((value, index) => {
        const check = (name: string, actual: number, expected: number, bound: number, scale = Math.abs(expected)) =>
          expect(Math.abs(actual - expected), `${name}(${value}) = ${actual}, not ${expected}`).toBeLessThanOrEqual(
            bound * scale + 1e-37,
          );
        check('gelu', gelu[index], geluReference(value), allowed(value));
        // Φ(x) + x φ(x) crosses 0 near x = −0.75: measure against the size of its two terms there.
        const terms = normalCdf(value) + Math.abs(value) * Math.exp(-0.5 * value * value) * 0.3989422804014327;
        check('gelu′', geluGrad[index], geluDerivative(value), allowed(value) + 1e-6, terms);
        check('tanh', tanh[index], Math.tanh(value), 5e-7);
      });
    });
  });

  it('the activation backwards agree with central differences of their own forwards', () => {
    setIsa(isa);
    tidy(() => {
      const shape = [9, 33];
      const weights = randomTensor(shape);
      const w = weights.toFloat32Array();
      const x = randomTensor(shape);
      // ReLU's kink must not fall inside a step: keep every input at least 0.1 away from 0.
      const xs = x.toFloat32Array().map((value) => (value < 0 ? value - 0.1 : value + 0.1));
      const shifted = Tensor.from(xs, shape);
      const cases: [string, (input: Handle) => Handle, (input: Tensor) => Float32Array][] = [
        [
          'gelu',
          (input) => native.gelu({ x: input }),
          (input) => read(native.geluBackward({ x: handle(input), gradOutput: handle(weights) })),
        ],
        [
          'relu',
          (input) => native.relu({ x: input }),
          (input) => read(native.reluBackward({ x: handle(input), gradOutput: handle(weights) })),
        ],
        [
          'tanh',
          (input) => native.tanh({ x: input }),
          (input) =>
            read(
              native.tanhBackward({
                output: handle(tensorOf(native.tanh({ x: handle(input) }))),
                gradOutput: handle(weights),
              }),
            ),
        ],
      ];
      for (const [name, forward, backward] of cases) {
        const loss = weightedSum(w, (input) => forward(handle(input)));
        checkDirectional(loss, shifted, backward(shifted), 1e-2, `${name} ${isa}`);
      }
    });
  });

  it.each(rowShapes)('layer norm forward and backward match float64 for shape %j', (...shape) => {
    setIsa(isa);
    for (const eps of [1e-5, 1e-12]) {
      tidy(() => {
        const d = shape.at(-1)!;
        const x = randomTensor(shape);
        const gamma = randomTensor([d]);
        const beta = randomTensor([d]);
        const gradOutput = randomTensor(shape);
        const [xs, gs, bs] = [x, gamma, beta].map((tensor) => tensor.toFloat32Array());
        const label = `${isa} ${JSON.stringify(shape)} eps ${eps} ${seedNote}`;
        const result = native.layerNorm({ x: handle(x), gamma: handle(gamma), beta: handle(beta), eps });
        const expected = layerNormReference(xs, gs, bs, eps, d);
        const mean = tensorOf(result.mean);
        const rstd = tensorOf(result.rstd);
        expect(mean.shape).toEqual([rowsOf(shape)]);
        expect(relativeError(read(result.output), expected.output), label).toBeLessThan(1e-5);
        expect(relativeError(mean.toFloat32Array(), expected.mean), label).toBeLessThan(1e-5);
        // A width-1 row has zero variance: rstd is 1/√eps, which float32 holds to its own rounding.
        expect(relativeError(rstd.toFloat32Array(), expected.rstd), label).toBeLessThan(1e-5);

        const grads = native.layerNormBackward({
          gradOutput: handle(gradOutput),
          x: handle(x),
          gamma: handle(gamma),
          mean: handle(mean),
          rstd: handle(rstd),
        });
        const expectedGrads = layerNormBackwardReference(gradOutput.toFloat32Array(), xs, gs, eps, d);
        expect(relativeError(read(grads.input), expectedGrads.input), `input ${label}`).toBeLessThan(1e-4);
        expect(relativeError(read(grads.gamma), expectedGrads.gamma), `gamma ${label}`).toBeLessThan(1e-4);
        expect(relativeError(read(grads.beta), expectedGrads.beta), `beta ${label}`).toBeLessThan(1e-4);
      });
    }
  });

  it('layer norm backward agrees with central differences for x, gamma and beta', () => {
    setIsa(isa);
    tidy(() => {
      const shape = [6, 37];
      const x = randomTensor(shape);
      const gamma = randomTensor([37]);
      const beta = randomTensor([37]);
      const weights = randomTensor(shape);
      const w = weights.toFloat32Array();
      const eps = 1e-5;
      const forward = (input: { x?: Tensor; gamma?: Tensor; beta?: Tensor }) =>
        native.layerNorm({
          x: handle(input.x ?? x),
          gamma: handle(input.gamma ?? gamma),
          beta: handle(input.beta ?? beta),
          eps,
        });
      const saved = forward({});
      tensorOf(saved.output);
      const grads = native.layerNormBackward({
        gradOutput: handle(weights),
        x: handle(x),
        gamma: handle(gamma),
        mean: handle(tensorOf(saved.mean)),
        rstd: handle(tensorOf(saved.rstd)),
      });
      const lossOf = (change: (input: Tensor) => { x?: Tensor; gamma?: Tensor; beta?: Tensor }) =>
        weightedSum(w, (input) => {
          const result = forward(change(input));
          tensorOf(result.mean);
          tensorOf(result.rstd);
          return result.output;
        });
      checkDirectional(
        lossOf((input) => ({ x: input })),
        x,
        read(grads.input),
        1e-2,
        `x ${isa}`,
      );
      checkDirectional(
        lossOf((input) => ({ gamma: input })),
        gamma,
        read(grads.gamma),
        1e-2,
        `gamma ${isa}`,
      );
      checkDirectional(
        lossOf((input) => ({ beta: input })),
        beta,
        read(grads.beta),
        1e-2,
        `beta ${isa}`,
      );
    });
  });

  it.each(rowShapes)('softmax forward and backward match float64 for shape %j', (...shape) => {
    setIsa(isa);
    tidy(() => {
      const d = shape.at(-1)!;
      const x = widened(randomTensor(shape));
      const gradOutput = randomTensor(shape);
      const label = `${isa} ${JSON.stringify(shape)} ${seedNote}`;
      const output = read(native.softmax({ x: handle(x) }));
      const expected = softmaxReference(x.toFloat32Array(), d);
      expect(relativeError(output, expected), label).toBeLessThan(1e-5);
      const gy = gradOutput.toFloat32Array();
      const expectedGrad = new Float64Array(output.length);
      for (let row = 0; row < output.length / d; row++) {
        const offset = row * d;
        const inner = dot(gy.subarray(offset, offset + d), output.subarray(offset, offset + d));
        for (let j = 0; j < d; j++) expectedGrad[offset + j] = output[offset + j] * (gy[offset + j] - inner);
      }
      const grad = read(
        native.softmaxBackward({ output: handle(Tensor.from(output, shape)), gradOutput: handle(gradOutput) }),
      );
      expect(relativeError(grad, expectedGrad), label).toBeLessThan(1e-4);
    });
  });

  it('masked softmax: partial masks, fully masked rows (zeros, no NaN), masked values ignored', () => {
    setIsa(isa);
    for (const shape of [
      [2, 3, 5, 17],
      [3, 2, 7, 130],
      [4, 33],
    ]) {
      tidy(() => {
        const batch = shape[0];
        const d = shape.at(-1)!;
        const maskValues = Float32Array.from(randomTensor([batch, d]).toFloat32Array(), (value) => (value > 0 ? 1 : 0));
        maskValues.fill(0, 0, d); // batch entry 0: every key masked
        maskValues.fill(1, d, 2 * d - 1); // batch entry 1: only the last key masked
        maskValues[2 * d - 1] = 0;
        const mask = Tensor.from(maskValues, [batch, d]);
        const xs = randomTensor(shape).toFloat32Array();
        const perBatch = xs.length / d / batch;
        // Huge values behind the mask must not leak into the max or the sum.
        xs.forEach((_, index) => {
          const row = Math.floor(index / d);
          if (maskValues[Math.floor(row / perBatch) * d + (index % d)] === 0) xs[index] = 1e30;
        });
        const x = Tensor.from(xs, shape);
        const output = read(native.softmax({ x: handle(x), mask: handle(mask) }));
        const label = `${isa} ${JSON.stringify(shape)} ${seedNote}`;
        expect(output.every(Number.isFinite), label).toBe(true);
        expect(relativeError(output, softmaxReference(xs, d, maskValues, batch)), label).toBeLessThan(1e-5);
        output.forEach((value, index) => {
          const row = Math.floor(index / d);
          if (maskValues[Math.floor(row / perBatch) * d + (index % d)] === 0) expect(value, label).toBe(0);
        });
        // Unmasked rows still sum to 1.
        for (let row = perBatch; row < output.length / d; row++) {
          const sum = output.subarray(row * d, row * d + d).reduce((total, value) => total + value, 0);
          const maskRow = Math.floor(row / perBatch) * d;
          if (maskValues.subarray(maskRow, maskRow + d).some((value) => value !== 0)) {
            expect(Math.abs(sum - 1), label).toBeLessThan(1e-5);
          }
        }
        // Backward through a masked output leaves masked entries at exactly 0 too.
        const grad = read(
          native.softmaxBackward({
            output: handle(Tensor.from(output, shape)),
            gradOutput: handle(randomTensor(shape)),
          }),
        );
        grad.forEach((value, index) => {
          if (output[index] === 0) expect(value === 0, `${label} at ${index}`).toBe(true);
        });
      });
    }
  });

  it('softmax backward agrees with central differences of the forward', () => {
    setIsa(isa);
    tidy(() => {
      const shape = [5, 29];
      const x = randomTensor(shape);
      const weights = randomTensor(shape);
      const output = tensorOf(native.softmax({ x: handle(x) }));
      const grad = read(native.softmaxBackward({ output: handle(output), gradOutput: handle(weights) }));
      const loss = weightedSum(weights.toFloat32Array(), (input) => native.softmax({ x: handle(input) }));
      checkDirectional(loss, x, grad, 1e-2, `softmax ${isa}`);
    });
  });

  it('cross-entropy forward and backward match float64, with ignored labels', () => {
    setIsa(isa);
    const ignoreIndex = -100;
    for (const [rows, classes] of [
      [1, 1],
      [7, 17],
      [130, 257],
      [3, 1100],
    ]) {
      tidy(() => {
        const logits = widened(randomTensor([rows, classes]));
        const labels = randomInts(rows, classes);
        if (rows > 1) labels[1] = ignoreIndex;
        if (rows > 5) labels[5] = ignoreIndex;
        const label = `${isa} [${rows}, ${classes}] ${seedNote}`;
        const expected = crossEntropyReference(logits.toFloat32Array(), labels, ignoreIndex, classes);
        const loss = tensorOf(native.crossEntropy({ logits: handle(logits), labels, ignoreIndex }));
        expect(loss.shape).toEqual([]);
        expect(relativeError(loss.toFloat32Array(), [expected.loss]), label).toBeLessThan(1e-5);
        const gradLoss = 1.7;
        const grad = read(native.crossEntropyBackward({ logits: handle(logits), labels, ignoreIndex, gradLoss }));
        const scaled = expected.grad.map((value) => gradLoss * value);
        expect(relativeError(grad, scaled), label).toBeLessThan(1e-4);
        if (rows > 1) expect(grad.subarray(classes, 2 * classes).every((value) => value === 0)).toBe(true);
      });
    }
  });

  it('cross-entropy with every row ignored is 0 with a zero gradient; its backward matches central differences', () => {
    setIsa(isa);
    tidy(() => {
      const logits = randomTensor([4, 9]);
      const ignored = new Int32Array(4).fill(-1);
      expect(read(native.crossEntropy({ logits: handle(logits), labels: ignored, ignoreIndex: -1 }))).toEqual(
        new Float32Array([0]),
      );
      expect(
        read(
          native.crossEntropyBackward({ logits: handle(logits), labels: ignored, ignoreIndex: -1, gradLoss: 1 }),
        ).every((value) => value === 0),
      ).toBe(true);

      const labels = randomInts(6, 23);
      labels[2] = 7;
      const x = randomTensor([6, 23]);
      const gradLoss = 0.8;
      const grad = read(native.crossEntropyBackward({ logits: handle(x), labels, ignoreIndex: 7, gradLoss }));
      const loss = (input: Tensor) =>
        tidy(() => gradLoss * read(native.crossEntropy({ logits: handle(input), labels, ignoreIndex: 7 }))[0]);
      checkDirectional(loss, x, grad, 1e-2, `cross-entropy ${isa}`, 2e-3);
    });
  });
});

// ---- portable kernels ----

describe('portable nn kernels', () => {
  it('embedding gathers rows and its backward scatter-adds repeated ids', () => {
    tidy(() => {
      for (const [vocab, d, count] of [
        [1, 1, 1],
        [11, 17, 40],
        [300, 257, 130],
      ]) {
        const weight = randomTensor([vocab, d]);
        const ws = weight.toFloat32Array();
        const ids = randomInts(count, vocab);
        ids[count - 1] = ids[0]; // at least one repeat
        const out = tensorOf(native.embedding({ weight: handle(weight), ids }));
        expect(out.shape).toEqual([count, d]);
        const expected = Array.from(
          { length: count * d },
          (_, index) => ws[ids[Math.floor(index / d)] * d + (index % d)],
        );
        expect(relativeError(out.toFloat32Array(), expected)).toBe(0);

        const gradOutput = randomTensor([count, d]);
        const gy = gradOutput.toFloat32Array();
        const grad = tensorOf(native.embeddingBackward({ gradOutput: handle(gradOutput), ids, vocabSize: vocab }));
        expect(grad.shape).toEqual([vocab, d]);
        const scattered = new Float64Array(vocab * d);
        ids.forEach((id, position) => {
          for (let j = 0; j < d; j++) scattered[id * d + j] += gy[position * d + j];
        });
        expect(relativeError(grad.toFloat32Array(), scattered), seedNote).toBeLessThan(1e-5);
        // Linear in weight: the backward is the exact adjoint of the forward.
        const loss = weightedSum(gy, (input) => native.embedding({ weight: handle(input), ids }));
        checkDirectional(loss, weight, grad.toFloat32Array(), 1e-2, `embedding [${vocab}, ${d}]`);
      }
      // A gradient of shape [batch, seq, D] for ids of batch·seq positions is read row by row.
      const grad3 = randomTensor([2, 3, 5]);
      const ids = Int32Array.from([4, 0, 4, 4, 1, 0]);
      const flat = read(
        native.embeddingBackward({
          gradOutput: handle(Tensor.from(grad3.toFloat32Array(), [6, 5])),
          ids,
          vocabSize: 6,
        }),
      );
      expect(read(native.embeddingBackward({ gradOutput: handle(grad3), ids, vocabSize: 6 }))).toEqual(flat);
      // Ids given as a view into a larger buffer are read from its offset.
      const view = new Int32Array(Int32Array.from([9, 9, 4, 0, 4, 4, 1, 0]).buffer, 8, 6);
      expect(read(native.embeddingBackward({ gradOutput: handle(grad3), ids: view, vocabSize: 6 }))).toEqual(flat);
    });
  });

  it('permute0213 moves [a, b, c, d] to [a, c, b, d] and back', () => {
    tidy(() => {
      for (const shape of [
        [1, 1, 1, 1],
        [2, 7, 3, 5],
        [3, 130, 12, 64],
      ]) {
        const [a, b, c, d] = shape;
        const x = randomTensor(shape);
        const xs = x.toFloat32Array();
        const out = tensorOf(native.permute0213({ x: handle(x) }));
        expect(out.shape).toEqual([a, c, b, d]);
        const expected = new Float32Array(xs.length);
        for (let i = 0; i < a; i++) {
          for (let j = 0; j < b; j++) {
            for (let k = 0; k < c; k++) {
              for (let l = 0; l < d; l++) expected[((i * c + k) * b + j) * d + l] = xs[((i * b + j) * c + k) * d + l];
            }
          }
        }
        expect(out.toFloat32Array()).toEqual(expected);
        const back = tensorOf(native.permute0213({ x: handle(out) }));
        expect(back.shape).toEqual(shape);
        expect(back.toFloat32Array()).toEqual(xs);
      }
    });
  });

  it('MSE loss and its backward match float64 and central differences', () => {
    tidy(() => {
      for (const shape of [[1], [7, 17], [130, 257], [2, 3, 5, 7]]) {
        const prediction = randomTensor(shape);
        const target = randomTensor(shape);
        const p = prediction.toFloat32Array();
        const t = target.toFloat32Array();
        const squares = p.reduce((total, value, index) => total + (value - t[index]) ** 2, 0);
        const loss = tensorOf(native.mseLoss({ prediction: handle(prediction), target: handle(target) }));
        expect(loss.shape).toEqual([]);
        expect(relativeError(loss.toFloat32Array(), [squares / p.length]), seedNote).toBeLessThan(1e-5);
        const grad = read(
          native.mseLossBackward({ prediction: handle(prediction), target: handle(target), gradLoss: 0.6 }),
        );
        const expected = Array.from(p, (value, index) => (2 * 0.6 * (value - t[index])) / p.length);
        expect(relativeError(grad, expected), seedNote).toBeLessThan(1e-4);
        const lossAt = (input: Tensor) =>
          tidy(() => 0.6 * read(native.mseLoss({ prediction: handle(input), target: handle(target) }))[0]);
        checkDirectional(lossAt, prediction, grad, 1e-2, `mse ${JSON.stringify(shape)}`);
      }
      const empty = Tensor.zeros([0, 3]);
      expect(read(native.mseLoss({ prediction: handle(empty), target: handle(empty) }))).toEqual(new Float32Array([0]));
    });
  });

  it('dropout keeps each element with probability 1 − p, scales by 1/(1 − p) and repeats its mask for a seed', () => {
    tidy(() => {
      const x = randomTensor([300, 257]);
      const xs = x.toFloat32Array();
      const p = 0.3;
      const first = read(native.dropout({ x: handle(x), p, seed: 1234 }));
      expect(read(native.dropout({ x: handle(x), p, seed: 1234 }))).toEqual(first);
      expect(read(native.dropout({ x: handle(x), p, seed: 1235 }))).not.toEqual(first);
      let kept = 0;
      first.forEach((value, index) => {
        if (value !== 0) {
          kept++;
          expect(Math.abs(value - xs[index] / (1 - p))).toBeLessThanOrEqual(1e-6 * Math.abs(value));
        }
      });
      // 77100 draws: the kept fraction is within 5 standard deviations (about 0.8%) of 0.7.
      expect(Math.abs(kept / xs.length - (1 - p))).toBeLessThan(0.008);
      // Backward is dropout of the gradient with the same seed: the adjoint of the forward.
      const gradOutput = randomTensor([300, 257]);
      const grad = read(native.dropout({ x: handle(gradOutput), p, seed: 1234 }));
      expect(Math.abs(dot(first, gradOutput.toFloat32Array()) - dot(xs, grad))).toBeLessThan(1e-6 * xs.length);
      expect(read(native.dropout({ x: handle(x), p: 0, seed: 5 }))).toEqual(xs);
      expect(read(native.dropout({ x: handle(x), p: 1, seed: 5 })).every((value) => value === 0)).toBe(true);
    });
  });

  it('dropout draws the same mask on every ISA path (odd lengths exercise the vector tails)', () => {
    tidy(() => {
      const x = randomTensor([3, 1001]);
      const masks = isaPaths.map((isa) => {
        setIsa(isa);
        return read(native.dropout({ x: handle(x), p: 0.45, seed: 99 }));
      });
      setIsa(initialIsa);
      for (const mask of masks.slice(1)) expect(mask).toEqual(masks[0]);
    });
  });

  it('results do not depend on the thread count', () => {
    tidy(() => {
      const x = randomTensor([130, 257]);
      const gamma = randomTensor([257]);
      const gradOutput = randomTensor([130, 257]);
      const ids = randomInts(130, 20);
      const labels = randomInts(130, 257);
      const run = () => {
        const norm = native.layerNorm({ x: handle(x), gamma: handle(gamma), beta: handle(gamma), eps: 1e-5 });
        const grads = native.layerNormBackward({
          gradOutput: handle(gradOutput),
          x: handle(x),
          gamma: handle(gamma),
          mean: handle(tensorOf(norm.mean)),
          rstd: handle(tensorOf(norm.rstd)),
        });
        return [
          read(norm.output),
          read(grads.input),
          read(grads.gamma),
          read(grads.beta),
          read(native.embeddingBackward({ gradOutput: handle(gradOutput), ids, vocabSize: 20 })),
          read(native.crossEntropy({ logits: handle(x), labels, ignoreIndex: -100 })),
          read(native.softmax({ x: handle(x) })),
          read(native.mseLoss({ prediction: handle(x), target: handle(gradOutput) })),
        ];
      };
      setNumThreads(1);
      const single = run();
      setNumThreads(initialThreads);
      expect(run()).toEqual(single);
    });
  });

  it('bad input throws TypeError or RangeError naming the argument', () => {
    tidy(() => {
      const x = handle(randomTensor([4, 6]));
      const other = handle(randomTensor([4, 7]));
      const vector6 = handle(randomTensor([6]));
      const vector5 = handle(randomTensor([5]));
      const rows4 = handle(randomTensor([4]));
      const disposedTensor = randomTensor([4, 6]);
      const disposed = handle(disposedTensor);
      disposedTensor.dispose();
      const ids = Int32Array.from([0, 1, 2, 3]);
      const cases: [() => unknown, ErrorConstructor, RegExp][] = [
        [() => native.gelu({ x: undefined as never }), TypeError, /gelu: x must be a Tensor/],
        [() => native.relu({ x: disposed }), TypeError, /relu: x is a disposed Tensor/],
        [() => native.tanh({} as never), TypeError, /tanh: x must be a Tensor/],
        [
          () => native.geluBackward({ x, gradOutput: other }),
          RangeError,
          /geluBackward: gradOutput .*gradOutput has shape \[4, 7\]/,
        ],
        [
          () => native.reluBackward({ x, gradOutput: disposed }),
          TypeError,
          /reluBackward: gradOutput is a disposed Tensor/,
        ],
        [
          () => native.tanhBackward({ output: other, gradOutput: x }),
          RangeError,
          /tanhBackward: gradOutput must have the shape of output/,
        ],
        [
          () => native.layerNorm({ x, gamma: vector5, beta: vector6, eps: 1e-5 }),
          RangeError,
          /layerNorm: expected gamma of shape \[6\]/,
        ],
        [
          () => native.layerNorm({ x, gamma: vector6, beta: vector5, eps: 1e-5 }),
          RangeError,
          /beta has shape \[5\] and x has shape/,
        ],
        [
          () => native.layerNorm({ x, gamma: vector6, beta: vector6, eps: 0 }),
          RangeError,
          /layerNorm: eps must be positive/,
        ],
        [
          () => native.layerNorm({ x, gamma: vector6, beta: vector6, eps: NaN }),
          RangeError,
          /layerNorm: eps must be finite/,
        ],
        [
          () => native.layerNorm({ x, gamma: vector6, beta: vector6, eps: '1' as never }),
          TypeError,
          /layerNorm: eps must be a number/,
        ],
        [
          () => native.layerNorm({ x: handle(Tensor.zeros([3, 0])), gamma: vector6, beta: vector6, eps: 1e-5 }),
          RangeError,
          /layerNorm: x must have rank 1 to 4 and a non-empty last axis/,
        ],
        [
          () => native.layerNormBackward({ gradOutput: x, x, gamma: vector6, mean: vector5, rstd: rows4 }),
          RangeError,
          /layerNormBackward: expected mean of shape \[4\]/,
        ],
        [
          () => native.layerNormBackward({ gradOutput: x, x, gamma: vector6, mean: rows4, rstd: vector6 }),
          RangeError,
          /layerNormBackward: expected rstd of shape \[4\]/,
        ],
        [
          () => native.layerNormBackward({ gradOutput: other, x, gamma: vector6, mean: rows4, rstd: rows4 }),
          RangeError,
          /layerNormBackward: gradOutput must have the shape of x/,
        ],
        [() => native.softmax({ x, mask: other }), RangeError, /softmax: expected mask of shape \[4, 6\]/],
        [() => native.softmax({ x: vector6, mask: vector6 }), RangeError, /softmax: a mask needs x of rank 2 to 4/],
        [() => native.softmax({ x, mask: 1 as never }), TypeError, /softmax: mask must be a Tensor/],
        [
          () => native.softmaxBackward({ output: x, gradOutput: other }),
          RangeError,
          /softmaxBackward: gradOutput must have the shape/,
        ],
        [
          () => native.embedding({ weight: x, ids: [0, 1] as never }),
          TypeError,
          /embedding: ids must be an Int32Array/,
        ],
        [
          () => native.embedding({ weight: x, ids: new Float32Array(2) as never }),
          TypeError,
          /embedding: ids must be an Int32Array/,
        ],
        [
          () => native.embedding({ weight: x, ids: Int32Array.from([0, 4]) }),
          RangeError,
          /embedding: ids\[1\] is 4, outside \[0, 4\)/,
        ],
        [() => native.embedding({ weight: x, ids: Int32Array.from([-1]) }), RangeError, /embedding: ids\[0\] is -1/],
        [() => native.embedding({ weight: vector6, ids }), RangeError, /embedding: expected weight of rank 2/],
        [
          () => native.embeddingBackward({ gradOutput: x, ids: Int32Array.from([0, 1]), vocabSize: 4 }),
          RangeError,
          /embeddingBackward: expected gradOutput of shape \[2, dim\]/,
        ],
        [
          () => native.embeddingBackward({ gradOutput: x, ids, vocabSize: 0 }),
          RangeError,
          /embeddingBackward: vocabSize must be an integer/,
        ],
        [
          () => native.embeddingBackward({ gradOutput: x, ids, vocabSize: 3 }),
          RangeError,
          /embeddingBackward: ids\[3\] is 3, outside \[0, 3\)/,
        ],
        [
          () => native.embeddingBackward({ gradOutput: x, ids: new Uint32Array(4) as never, vocabSize: 4 }),
          TypeError,
          /ids must be an Int32Array/,
        ],
        [() => native.permute0213({ x }), RangeError, /permute0213: expected x of rank 4, but x has shape \[4, 6\]/],
        [
          () => native.crossEntropy({ logits: x, labels: Int32Array.from([0, 1]), ignoreIndex: -100 }),
          RangeError,
          /crossEntropy: labels must hold/,
        ],
        [
          () => native.crossEntropy({ logits: x, labels: Int32Array.from([0, 6, 1, 2]), ignoreIndex: -100 }),
          RangeError,
          /crossEntropy: labels\[1\] is 6, outside \[0, 6\).*not ignoreIndex -100/,
        ],
        [
          () => native.crossEntropy({ logits: x, labels: ids, ignoreIndex: 0.5 }),
          RangeError,
          /crossEntropy: ignoreIndex must be an integer/,
        ],
        [
          () => native.crossEntropy({ logits: vector6, labels: ids, ignoreIndex: -100 }),
          RangeError,
          /crossEntropy: expected logits of shape/,
        ],
        [
          () => native.crossEntropy({ logits: x, labels: ids.buffer as never, ignoreIndex: -100 }),
          TypeError,
          /labels must be an Int32Array/,
        ],
        [
          () => native.crossEntropyBackward({ logits: x, labels: ids, ignoreIndex: -100, gradLoss: Infinity }),
          RangeError,
          /crossEntropyBackward: gradLoss must be finite/,
        ],
        [
          () => native.crossEntropyBackward({ logits: disposed, labels: ids, ignoreIndex: -100, gradLoss: 1 }),
          TypeError,
          /logits is a disposed Tensor/,
        ],
        [
          () => native.mseLoss({ prediction: x, target: other }),
          RangeError,
          /mseLoss: target must have the shape of prediction/,
        ],
        [
          () => native.mseLossBackward({ prediction: x, target: x, gradLoss: 'a' as never }),
          TypeError,
          /mseLossBackward: gradLoss must be a number/,
        ],
        [() => native.dropout({ x, p: 1.5, seed: 0 }), RangeError, /dropout: p must be in \[0, 1\]/],
        [() => native.dropout({ x, p: -0.1, seed: 0 }), RangeError, /dropout: p must be in \[0, 1\]/],
        [() => native.dropout({ x, p: 0.1, seed: -1 }), RangeError, /dropout: seed must be an integer/],
        [() => native.dropout({ x: disposed, p: 0.1, seed: 1 }), TypeError, /dropout: x is a disposed Tensor/],
      ];
      for (const [call, errorClass, message] of cases) {
        expect(call, String(message)).toThrow(errorClass);
        expect(call, String(message)).toThrow(message);
      }
    });
  });
});
