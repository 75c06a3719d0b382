// The fused DoRA and LoRA kernels against a float64 layer written in the test, finite differences, the kernels' own
// references, on every ISA path; plus memory, partial gradients, saved-state rules, dropout, merge and bad input.
import { afterAll, describe, expect, it } from 'vitest';

import { buildInfo, memory, ops, resetPeakMemory, setIsa, Tensor, tidy } from '../lib/index';
import { type LayerGrads, layerBackward, layerForward, type LayerValues } from './adapter-reference';
import { baseSeed, isaPaths, randomTensor, relativeError } from './helpers';

const initialIsa = buildInfo().isa;
afterAll(() => {
  setIsa(initialIsa);
});

interface Layer {
  input: Tensor;
  weight: Tensor;
  bias?: Tensor;
  loraA: Tensor;
  loraB: Tensor;
  magnitude: Tensor;
  scale: number;
}

/** Fresh random layer tensors with B ≠ 0 and positive magnitudes near the row norms' scale. */
function makeLayer(inputShape: number[], m: number, r: number, withBias: boolean): Layer {
  const k = inputShape.at(-1)!;
  const weight = ops.scale(randomTensor([m, k]), 1 / Math.sqrt(k));
  const magnitudeNoise = randomTensor([m]).toFloat32Array();
  return {
    input: randomTensor(inputShape),
    weight,
    bias: withBias ? randomTensor([m]) : undefined,
    loraA: ops.scale(randomTensor([r, k]), 1 / Math.sqrt(k)),
    loraB: ops.scale(randomTensor([m, r]), 0.3),
    magnitude: Tensor.from(magnitudeNoise.map((value) => 0.5 + Math.abs(value))),
    scale: 1.7,
  };
}

type ParameterName = 'input' | 'loraA' | 'loraB' | 'bias' | 'magnitude';

const f64 = (tensor: Tensor | undefined) => (tensor ? Float64Array.from(tensor.toFloat32Array()) : undefined);

function absoluteValues(values: LayerValues): LayerValues {
  const abs = (array: Float64Array | undefined) => array?.map(Math.abs);
  return {
    ...values,
    input: abs(values.input)!,
    weight: abs(values.weight)!,
    bias: abs(values.bias),
    loraA: abs(values.loraA)!,
    loraB: abs(values.loraB)!,
    magnitude: abs(values.magnitude),
  };
}

function maxDifference(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let difference = 0;
  for (let index = 0; index < expected.length; index++) {
    const gap = Math.abs(actual[index] - expected[index]);
    difference = Math.max(difference, Number.isNaN(gap) ? Infinity : gap);
  }
  return difference;
}

const largest = (values: ArrayLike<number>) => Math.max(...Array.from(values, Math.abs));

function valuesOf(layer: Layer, dora: boolean, eps = ops.DEFAULT_NORM_EPS): LayerValues {
  const shape = layer.input.shape;
  return {
    n: layer.input.size / shape.at(-1)!,
    k: shape.at(-1)!,
    m: layer.weight.shape[0],
    r: layer.loraA.shape[0],
    input: f64(layer.input)!,
    weight: f64(layer.weight)!,
    bias: f64(layer.bias),
    loraA: f64(layer.loraA)!,
    loraB: f64(layer.loraB)!,
    magnitude: dora ? f64(layer.magnitude) : undefined,
    scale: layer.scale,
    eps,
  };
}

// [N or batch×seq, K, M, r]: odd sizes, N = 1, r = 1, and a rank-3 input.
const shapes: [number[], number, number][] = [
  [[7, 130], 257, 16],
  [[1, 33], 7, 1],
  [[2, 5, 64], 48, 4],
  [[19, 17], 130, 8],
];

describe('the float64 test reference', () => {
  it('agrees with central finite differences, DoRA (both norm modes) and LoRA', () => {
    const values: LayerValues = tidy(() => ({ ...valuesOf(makeLayer([3, 5], 4, 2, true), true) }));
    const gradOutput = Float64Array.from({ length: 12 }, (_, index) => Math.sin(index + 1));
    const loss = (v: LayerValues, fixedNorm?: Float64Array) =>
      layerForward(v, fixedNorm).output.reduce((total, y, index) => total + y * gradOutput[index], 0);
    for (const [dora, detachNorm] of [
      [true, false],
      [true, true],
      [false, true],
    ] as const) {
      const base: LayerValues = { ...values, magnitude: dora ? values.magnitude : undefined };
      const fixedNorm = detachNorm ? layerForward(base).norm : undefined;
      const grads = layerBackward(base, gradOutput, detachNorm);
      const names: ParameterName[] = ['input', 'loraA', 'loraB', 'bias', ...(dora ? (['magnitude'] as const) : [])];
      for (const name of names) {
        const parameter = base[name] as Float64Array;
        for (let index = 0; index < parameter.length; index++) {
          const saved = parameter[index];
          const step = 1e-6;
          parameter[index] = saved + step;
          const plus = loss(base, fixedNorm);
          parameter[index] = saved - step;
          const minus = loss(base, fixedNorm);
          parameter[index] = saved;
          const numeric = (plus - minus) / (2 * step);
          expect(Math.abs(numeric - grads[name][index]), `${name}[${index}] dora=${dora}`).toBeLessThan(1e-6);
        }
      }
    }
  });
});

/**
 * The fused kernels against the float64 layer. `rounded`: the products with W0 round their other operand to bfloat16
 * (a bfloat16 W0 on an AVX512-BF16 CPU, see native/cpu/gemm.h): each such product is then within 2^-8 (bfloat16's
 * unit roundoff, 8 significant bits) of the sum of its terms' sizes, and any output or gradient takes at most two of
 * them in sequence (x W0ᵀ forward, ĝ W0 backward), so 2.5 · 2^-8 of the same sizes bounds the error.
 */
function checkAgainstReference(layer: Layer, dora: boolean, detachNorm: boolean, label: string, rounded = false): void {
  const values = valuesOf(layer, dora);
  const expected = layerForward(values).output;
  const roundedBound = 2.5 * 2 ** -8;
  const gradOutput = randomTensor([...layer.input.shape.slice(0, -1), values.m]);
  const expectedGrads = layerBackward(values, f64(gradOutput)!, detachNorm);
  const args = { ...layer, detachNorm };
  const { output, saved } = dora ? ops.doraForward(args) : ops.loraForward(args);
  expect(output.shape).toEqual([...layer.input.shape.slice(0, -1), values.m]);
  const message = `${label} seed ${baseSeed}`;
  if (rounded) {
    const outputSizes = layerForward(absoluteValues(values)).output;
    const error = maxDifference(output.toFloat32Array(), expected) / largest(outputSizes);
    expect(error, message).toBeLessThan(roundedBound);
  } else {
    expect(relativeError(output.toFloat32Array(), expected), message).toBeLessThan(1e-5);
  }
  // The kernel's own reference agrees too.
  const ownReference = ops.reference.forward({ ...layer, magnitude: dora ? layer.magnitude : undefined });
  expect(relativeError(ownReference.toFloat32Array(), expected), message).toBeLessThan(1e-6);

  const grads = dora ? ops.doraBackward(saved, gradOutput) : ops.loraBackward(saved, gradOutput);
  const names: (keyof LayerGrads)[] = ['input', 'loraA', 'loraB'];
  if (dora) names.push('magnitude');
  if (layer.bias) names.push('bias');
  // A float32 product's error scales with the sum of its terms' sizes, not with its value: a gradient that cancels
  // to near 0 (with one token and r = 1, x·Aᵀ is a single dot product) is measured against the same gradient
  // computed from the inputs' absolute values.
  const sizes = layerBackward(absoluteValues(values), f64(gradOutput)!.map(Math.abs), detachNorm);
  for (const name of names) {
    const gradient = grads[name];
    expect(gradient, `${name} ${message}`).toBeDefined();
    const error = maxDifference(gradient!.toFloat32Array(), expectedGrads[name]) / largest(sizes[name]);
    expect(error, `${name} ${message}`).toBeLessThan(rounded ? roundedBound : 1e-4);
  }
  if (!dora) expect(grads.magnitude).toBeUndefined();
  if (!layer.bias) expect(grads.bias).toBeUndefined();
  const ownGrads = ops.reference.backward(
    { ...layer, magnitude: dora ? layer.magnitude : undefined, detachNorm },
    gradOutput,
  );
  for (const name of names) {
    expect(relativeError(ownGrads[name]!.toFloat32Array(), expectedGrads[name]), `own ${name}`).toBeLessThan(1e-6);
  }
}

describe.each(isaPaths)('fused kernels on the %s path', (isa) => {
  for (const [inputShape, m, r] of shapes) {
    const label = `input ${JSON.stringify(inputShape)}, M=${m}, r=${r}`;
    it(`DoRA matches float64 (${label}), bias on and off, both norm modes`, () => {
      setIsa(isa);
      for (const withBias of [true, false]) {
        for (const detachNorm of [true, false]) {
          tidy(() => checkAgainstReference(makeLayer(inputShape, m, r, withBias), true, detachNorm, `${label} ${isa}`));
        }
      }
    });
    it(`LoRA matches float64 (${label}), bias on and off`, () => {
      setIsa(isa);
      for (const withBias of [true, false]) {
        tidy(() => checkAgainstReference(makeLayer(inputShape, m, r, withBias), false, true, `${label} ${isa}`));
      }
    });
  }

  // A frozen W0 kept in bfloat16 (models.load's dtype): the reference reads the same widened values, so what is left
  // is the kernels' own rounding: activations rounded to bfloat16 where the CPU has AVX512-BF16 on this path, none
  // (float32 accuracy) where W0 is widened instead.
  const rounded = isa === 'avx512' && buildInfo().avx512Bf16;
  for (const [inputShape, m, r] of shapes) {
    const label = `input ${JSON.stringify(inputShape)}, M=${m}, r=${r}, bfloat16 W0`;
    it(`DoRA and LoRA over a bfloat16 W0 match float64 (${label})`, () => {
      setIsa(isa);
      for (const detachNorm of [true, false]) {
        tidy(() => {
          const layer = makeLayer(inputShape, m, r, true);
          const frozen = { ...layer, weight: layer.weight.to('bfloat16') };
          checkAgainstReference(frozen, true, detachNorm, `${label} ${isa}`, rounded);
          if (detachNorm) checkAgainstReference(frozen, false, true, `${label} ${isa}`, rounded);
        });
      }
    });
  }

  it('a zero weight row (with its B row zero) gives finite outputs and gradients', () => {
    setIsa(isa);
    for (const detachNorm of [true, false]) {
      tidy(() => {
        const layer = makeLayer([6, 20], 9, 3, true);
        const weight = layer.weight.toFloat32Array();
        const loraB = layer.loraB.toFloat32Array();
        weight.fill(0, 4 * 20, 5 * 20);
        loraB.fill(0, 4 * 3, 5 * 3);
        const zeroed = { ...layer, weight: Tensor.from(weight, [9, 20]), loraB: Tensor.from(loraB, [9, 3]) };
        const { output, saved } = ops.doraForward({ ...zeroed, detachNorm });
        const grads = ops.doraBackward(saved, randomTensor([6, 9]));
        for (const tensor of [output, ...Object.values(grads)]) {
          expect(tensor!.toFloat32Array().every(Number.isFinite)).toBe(true);
        }
        const values = valuesOf(zeroed, true);
        expect(relativeError(output.toFloat32Array(), layerForward(values).output)).toBeLessThan(1e-5);
      });
    }
  });
});

describe('central finite differences of the fused op itself', () => {
  it('directional derivatives match the fused backward for every input (DoRA through the norm, and LoRA)', () => {
    for (const dora of [true, false]) {
      tidy(() => {
        const layer = makeLayer([5, 24], 17, 4, true);
        const weights = randomTensor([5, 17]);
        const lossAt = (current: Layer) =>
          tidy(() => {
            const args = { ...current, detachNorm: false };
            const { output, saved } = dora ? ops.doraForward(args) : ops.loraForward(args);
            saved.dispose();
            return ops.sum(ops.mul(output, weights)).item();
          });
        const { saved } = dora ? ops.doraForward({ ...layer, detachNorm: false }) : ops.loraForward(layer);
        const grads = dora ? ops.doraBackward(saved, weights) : ops.loraBackward(saved, weights);
        const names: ParameterName[] = ['input', 'loraA', 'loraB', 'bias', ...(dora ? (['magnitude'] as const) : [])];
        for (const name of names) {
          const direction = randomTensor([...layer[name]!.shape]);
          // Small enough that the norm's curvature stays well inside the tolerance, large enough for float32 sums.
          const step = 3e-3;
          const plus = lossAt({ ...layer, [name]: ops.add(layer[name]!, ops.scale(direction, step)) });
          const minus = lossAt({ ...layer, [name]: ops.sub(layer[name]!, ops.scale(direction, step)) });
          const numeric = (plus - minus) / (2 * step);
          const analytic = ops.sum(ops.mul(grads[name]!, direction)).item();
          expect(Math.abs(numeric - analytic) / Math.max(1, Math.abs(analytic)), `${name} dora=${dora}`).toBeLessThan(
            1e-2,
          );
        }
      });
    }
  });
});

describe('memory', () => {
  it('forward + backward of a 4096×4096 layer at r=16, N=256 allocates no out×in buffer beyond the weight', () => {
    const [n, k, m, r] = [256, 4096, 4096, 16];
    const before = memory();
    const layer = tidy(() => makeLayer([n, k], m, r, true));
    const bytes = (...counts: number[]) => counts.reduce((total, count) => total + 4 * count, 0);
    const inputs = bytes(n * k, m * k, m, r * k, m * r, m);
    resetPeakMemory();
    const gradOutput = randomTensor([n, m]);
    const { output, saved } = ops.doraForward({ ...layer, detachNorm: false });
    const grads = ops.doraBackward(saved, gradOutput);
    const peak = memory().peakBytes - before.bytes;
    // Inputs, the output, the saved u = x Vᵀ (output-sized), dL/dy, every gradient, the cached ||W0_j||², plus four
    // (N + out + in)·r buffers of scratch. Forming B·A (or V) would add 64 MiB.
    const output_and_saved = bytes(n * m, n * m, n * r, m, m * r, r * r);
    const gradients = bytes(n * m, n * k, r * k, m * r, m, m) + bytes(m);
    const allowance = 4 * bytes((n + m + k) * r);
    expect(peak).toBeLessThan(inputs + output_and_saved + gradients + allowance);
    expect(peak).toBeLessThan(inputs + bytes(m * k) / 2);
    for (const tensor of [output, gradOutput, ...Object.values(grads), ...Object.values(layer)]) {
      if (tensor instanceof Tensor) tensor.dispose();
    }
    expect(memory().tensors).toBe(before.tensors);
  });
});

describe('the functional API', () => {
  it('needs computes only the requested gradients, equal to the full backward', () => {
    tidy(() => {
      const layer = makeLayer([9, 40], 30, 4, true);
      const gradOutput = randomTensor([9, 30]);
      const full = ops.doraBackward(ops.doraForward(layer).saved, gradOutput);
      const partial = ops.doraBackward(ops.doraForward(layer).saved, gradOutput, { magnitude: true, input: true });
      expect(Object.keys(partial).sort()).toEqual(['input', 'magnitude']);
      expect(partial.magnitude!.toFloat32Array()).toEqual(full.magnitude!.toFloat32Array());
      expect(partial.input!.toFloat32Array()).toEqual(full.input!.toFloat32Array());
      const withoutInput = ops.loraBackward(ops.loraForward(layer).saved, gradOutput, { input: false });
      expect(Object.keys(withoutInput).sort()).toEqual(['bias', 'loraA', 'loraB']);
    });
  });

  it('saved is consumed by backward, refuses inputs changed in place, and frees its memory', () => {
    const before = memory().tensors;
    tidy(() => {
      const layer = makeLayer([4, 12], 6, 2, false);
      const first = ops.doraForward(layer);
      ops.doraBackward(first.saved, randomTensor([4, 6]));
      expect(() => ops.doraBackward(first.saved, randomTensor([4, 6]))).toThrow(/already used/);
      const second = ops.doraForward(layer);
      ops.axpy(layer.loraA, 0.1, randomTensor([2, 12]));
      expect(() => ops.doraBackward(second.saved, randomTensor([4, 6]))).toThrow(/loraA was modified in place/);
      expect(second.saved.isDisposed).toBe(false);
      second.saved.dispose();
      const third = ops.loraForward(layer);
      expect(() => ops.doraBackward(third.saved, randomTensor([4, 6]))).toThrow(TypeError);
      third.saved.dispose();
      const fourth = ops.doraForward(layer);
      expect(() => ops.doraBackward(fourth.saved, randomTensor([4, 7]))).toThrow(/gradOutput/);
    });
    expect(memory().tensors).toBe(before);
  });

  it('dropout applies to the low-rank branch only, is seeded, and matches the reference', () => {
    tidy(() => {
      const layer = makeLayer([8, 50], 20, 4, true);
      const args = { ...layer, dropout: 0.3, seed: 1234 };
      const first = ops.doraForward(args);
      const second = ops.doraForward(args);
      expect(first.output.toFloat32Array()).toEqual(second.output.toFloat32Array());
      const plain = ops.doraForward(layer);
      expect(relativeError(first.output.toFloat32Array(), plain.output.toFloat32Array())).toBeGreaterThan(1e-4);
      expect(relativeError(first.output.toFloat32Array(), ops.reference.forward(args).toFloat32Array())).toBeLessThan(
        1e-5,
      );
      const gradOutput = randomTensor([8, 20]);
      const grads = ops.doraBackward(first.saved, gradOutput);
      const expected = ops.reference.backward(args, gradOutput);
      for (const name of ['input', 'loraA', 'loraB', 'magnitude', 'bias'] as const) {
        expect(relativeError(grads[name]!.toFloat32Array(), expected[name]!.toFloat32Array()), name).toBeLessThan(1e-4);
      }
      // With B = 0 the branch contributes nothing, so the base product alone shows it saw the undropped input.
      const zeroB = { ...args, loraB: Tensor.zeros([20, 4]) };
      const noDropout = { ...zeroB, dropout: 0 };
      expect(ops.doraForward(zeroB).output.toFloat32Array()).toEqual(
        ops.doraForward(noDropout).output.toFloat32Array(),
      );
    });
  });

  it('merge folds the adapter into the weight (same outputs) and unmerge restores it', () => {
    tidy(() => {
      const layer = makeLayer([11, 70], 45, 6, true);
      const dora = ops.doraForward(layer);
      const merged = ops.doraMerge(layer);
      const viaMerged = ops.linear(layer.input, merged, layer.bias);
      expect(relativeError(viaMerged.toFloat32Array(), dora.output.toFloat32Array())).toBeLessThan(1e-5);
      const norm = ops.doraWeightNorm(layer);
      const values = valuesOf(layer, true);
      expect(relativeError(norm.toFloat32Array(), layerForward(values).norm)).toBeLessThan(1e-5);
      const restored = ops.doraUnmerge({ ...layer, merged, norm });
      expect(relativeError(restored.toFloat32Array(), layer.weight.toFloat32Array())).toBeLessThan(1e-5);

      const lora = ops.loraForward(layer);
      const loraMerged = ops.loraMerge(layer);
      expect(
        relativeError(ops.linear(layer.input, loraMerged, layer.bias).toFloat32Array(), lora.output.toFloat32Array()),
      ).toBeLessThan(1e-5);
      const loraRestored = ops.loraUnmerge({ ...layer, merged: loraMerged });
      expect(relativeError(loraRestored.toFloat32Array(), layer.weight.toFloat32Array())).toBeLessThan(1e-5);
      dora.saved.dispose();
      lora.saved.dispose();
    });
  });

  it('bad input names the argument and both shapes', () => {
    tidy(() => {
      const layer = makeLayer([4, 10], 6, 2, true);
      const cases: [Partial<Layer> & { scale?: number }, ErrorConstructor, RegExp][] = [
        [{ input: randomTensor([4, 11]) }, RangeError, /input has shape \[4, 11\] and weight has shape \[6, 10\]/],
        [{ loraA: randomTensor([2, 9]) }, RangeError, /loraA has shape \[2, 9\] and weight has shape \[6, 10\]/],
        [{ loraB: randomTensor([6, 3]) }, RangeError, /loraB has shape \[6, 3\] and loraA has shape \[2, 10\]/],
        [{ loraB: randomTensor([5, 2]) }, RangeError, /loraB has shape \[5, 2\]/],
        [{ magnitude: randomTensor([5]) }, RangeError, /magnitude has shape \[5\] and weight has shape \[6, 10\]/],
        [{ bias: randomTensor([7]) }, RangeError, /bias has shape \[7\]/],
        [{ loraA: Tensor.zeros([0, 10]), loraB: Tensor.zeros([6, 0]) }, RangeError, /rank r must be at least 1/],
        [{ scale: Infinity }, RangeError, /scale must be finite/],
        [{ scale: NaN }, RangeError, /scale must be finite/],
      ];
      for (const [change, errorClass, message] of cases) {
        expect(() => ops.doraForward({ ...layer, ...change })).toThrow(errorClass);
        expect(() => ops.doraForward({ ...layer, ...change })).toThrow(message);
      }
      expect(() => ops.loraForward({ ...layer, input: randomTensor([4, 3]) })).toThrow(/input has shape \[4, 3\]/);
      expect(() => ops.doraForward({ ...layer, dropout: 1 })).toThrow(/dropout must be in \[0, 1\)/);
      const disposed = randomTensor([6]);
      disposed.dispose();
      expect(() => ops.doraForward({ ...layer, magnitude: disposed })).toThrow(/magnitude is a disposed Tensor/);
      expect(() => ops.doraForward(undefined as never)).toThrow(TypeError);
    });
  });
});
