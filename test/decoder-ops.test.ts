// The decoder ops: GELU's tanh form (GPT-2's gelu_new), SiLU, SwiGLU and RMSNorm (Llama), on every ISA path against
// float64 references written here, central differences through autograd, thread-count independence, the nn modules
// and the config-name map, and bad input naming its argument.
import { afterAll, describe, expect, it } from 'vitest';

import { native, type NativeTensorHandle } from '../lib/binding';
import { buildInfo, memory, nn, ops, setIsa, setNumThreads, Tensor, tidy } from '../lib/index';
import { handleOf, tensorOf } from '../lib/tensor';
import { checkGradients } from './gradcheck';
import { baseSeed, isaPaths, randomTensor, relativeError } from './helpers';

const initialIsa = buildInfo().isa;
const initialThreads = buildInfo().threads;
afterAll(() => {
  setIsa(initialIsa);
  setNumThreads(initialThreads);
});

type Handle = NativeTensorHandle;
const handle = (tensor: Tensor): Handle => handleOf(tensor, 'test', 'tensor');
const read = (result: Handle): Float32Array => tensorOf(result).toFloat32Array();
const seedNote = `seed ${baseSeed}`;
const leaf = (shape: number[]) => randomTensor(shape).requireGrad();

/** A fresh random tensor times `factor`, so activations see values well past ±1. */
function widened(shape: number[], factor = 3): Tensor {
  return Tensor.from(
    randomTensor(shape)
      .toFloat32Array()
      .map((value) => factor * value),
    shape,
  );
}

// ---- float64 references ----

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));
const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
/** transformers' NewGELUActivation, in its own tanh form. */
const geluTanhReference = (x: number) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)));
function geluTanhDerivative(x: number): number {
  const t = Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
}
const siluReference = (x: number) => x * sigmoid(x);
const siluDerivative = (x: number) => sigmoid(x) * (1 + x * (1 - sigmoid(x)));

function rmsNormReference(x: Float32Array, weight: Float32Array, eps: number, d: number) {
  const rows = x.length / d;
  const output = new Float64Array(x.length);
  const rstd = new Float64Array(rows);
  for (let row = 0; row < rows; row++) {
    let squares = 0;
    for (let j = 0; j < d; j++) squares += x[row * d + j] ** 2;
    rstd[row] = 1 / Math.sqrt(squares / d + eps);
    for (let j = 0; j < d; j++) output[row * d + j] = weight[j] * x[row * d + j] * rstd[row];
  }
  return { output, rstd };
}

/** dx = rstd (g − x̂ mean(g x̂)), g = dy ⊙ weight; dweight = Σ_rows dy ⊙ x̂. */
function rmsNormBackwardReference(
  gradOutput: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  eps: number,
  d: number,
) {
  const rows = x.length / d;
  const { rstd } = rmsNormReference(x, weight, eps, d);
  const input = new Float64Array(x.length);
  const gradWeight = new Float64Array(d);
  for (let row = 0; row < rows; row++) {
    let sumGNormalized = 0;
    for (let j = 0; j < d; j++) {
      const normalized = x[row * d + j] * rstd[row];
      sumGNormalized += gradOutput[row * d + j] * weight[j] * normalized;
      gradWeight[j] += gradOutput[row * d + j] * normalized;
    }
    for (let j = 0; j < d; j++) {
      const g = gradOutput[row * d + j] * weight[j];
      input[row * d + j] = rstd[row] * (g - (x[row * d + j] * rstd[row] * sumGNormalized) / d);
    }
  }
  return { input, weight: gradWeight };
}

/** The largest absolute difference over max(1e-3, the largest |expected|); NaN counts as infinite. */
function flooredError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let difference = 0;
  let scale = 1e-3;
  for (let index = 0; index < expected.length; index++) {
    const gap = Math.abs(actual[index] - expected[index]);
    difference = Math.max(difference, Number.isNaN(gap) ? Infinity : gap);
    scale = Math.max(scale, Math.abs(expected[index]));
  }
  return difference / scale;
}

const elementShapes = [[1], [7, 17], [130, 257], [2, 3, 5, 7]];
const rowShapes = [
  [1, 1],
  [7, 17],
  [130, 257],
  [2, 5, 768],
];

describe.each(isaPaths)('decoder kernels on the %s path', (isa) => {
  it.each(elementShapes)('geluTanh and silu forward and backward match float64 for shape %j', (...shape) => {
    setIsa(isa);
    tidy(() => {
      const x = widened(shape);
      const gradOutput = randomTensor(shape);
      const xs = x.toFloat32Array();
      const gy = gradOutput.toFloat32Array();
      const label = `${isa} ${JSON.stringify(shape)} ${seedNote}`;
      const cases = [
        ['geluTanh', native.geluTanh, native.geluTanhBackward, geluTanhReference, geluTanhDerivative],
        ['silu', native.silu, native.siluBackward, siluReference, siluDerivative],
      ] as const;
      for (const [name, forward, backward, reference, derivative] of cases) {
        // Relative to the largest output, floored: one draw far in the negative tail has an output near float's
        // underflow, where no float kernel has five significant digits (the tails test checks those points).
        const output = read(forward({ x: handle(x) }));
        expect(flooredError(output, Array.from(xs, reference)), `${name} ${label}`).toBeLessThan(1e-5);
        const grad = read(backward({ x: handle(x), gradOutput: handle(gradOutput) }));
        const expected = Array.from(xs, (value, index) => gy[index] * derivative(value));
        expect(flooredError(grad, expected), `${name}′ ${label}`).toBeLessThan(1e-5);
      }
    });
  });

  it('geluTanh, silu and their gradients stay accurate far into the tails and near zero', () => {
    setIsa(isa);
    tidy(() => {
      const points = [-90, -40, -12, -9, -5.5, -3, -1, -0.31, -1e-3, -1e-30, 0, 1e-30, 1e-4, 0.3, 0.7, 2, 6, 9, 40, 90];
      for (let value = -15; value <= 15; value += 0.01) points.push(Math.fround(value));
      const x = Tensor.from(points);
      const ones = Tensor.full([points.length], 1);
      const results = {
        geluTanh: [read(native.geluTanh({ x: handle(x) })), geluTanhReference],
        'geluTanh′': [read(native.geluTanhBackward({ x: handle(x), gradOutput: handle(ones) })), geluTanhDerivative],
        silu: [read(native.silu({ x: handle(x) })), siluReference],
        'silu′': [read(native.siluBackward({ x: handle(x), gradOutput: handle(ones) })), siluDerivative],
      } as const;
      for (const [name, [actual, reference]] of Object.entries(results)) {
        points.forEach((value, index) => {
          const expected = reference(value);
          // Relative to the value, or to the size of the terms where a gradient crosses 0 (|x| σ(x)(1 − σ(x))
          // and the like are below 1 in size).
          const scale = Math.max(Math.abs(expected), Math.min(1, Math.abs(value)) * 0.3);
          expect(
            Math.abs(actual[index] - expected),
            `${name}(${value}) = ${actual[index]}, not ${expected}`,
          ).toBeLessThanOrEqual(2e-6 * scale + 1e-37);
        });
      }
    });
  });

  it.each(elementShapes)('swiglu forward and backward match float64 for shape %j', (...shape) => {
    setIsa(isa);
    tidy(() => {
      const gate = widened(shape);
      const up = randomTensor(shape);
      const gradOutput = randomTensor(shape);
      const [gs, us, gy] = [gate, up, gradOutput].map((tensor) => tensor.toFloat32Array());
      const label = `${isa} ${JSON.stringify(shape)} ${seedNote}`;
      const output = read(native.swiglu({ gate: handle(gate), up: handle(up) }));
      expect(
        relativeError(
          output,
          Array.from(gs, (g, i) => siluReference(g) * us[i]),
        ),
        label,
      ).toBeLessThan(1e-5);
      const grads = native.swigluBackward({ gate: handle(gate), up: handle(up), gradOutput: handle(gradOutput) });
      const gateExpected = Array.from(gs, (g, i) => gy[i] * us[i] * siluDerivative(g));
      const upExpected = Array.from(gs, (g, i) => gy[i] * siluReference(g));
      expect(relativeError(read(grads.gate), gateExpected), `gate ${label}`).toBeLessThan(1e-5);
      expect(relativeError(read(grads.up), upExpected), `up ${label}`).toBeLessThan(1e-5);
    });
  });

  it.each(rowShapes)('rmsNorm forward and backward match float64 for shape %j', (...shape) => {
    setIsa(isa);
    for (const [eps, offset] of [
      [1e-6, 0],
      [1e-5, 4],
    ]) {
      tidy(() => {
        const d = shape.at(-1)!;
        // An offset mean too: RMSNorm, unlike layer norm, does not subtract it.
        const x = Tensor.from(
          randomTensor(shape)
            .toFloat32Array()
            .map((value) => value + offset),
          shape,
        );
        const weight = randomTensor([d]);
        const gradOutput = randomTensor(shape);
        const [xs, ws, gy] = [x, weight, gradOutput].map((tensor) => tensor.toFloat32Array());
        const label = `${isa} ${JSON.stringify(shape)} eps ${eps} offset ${offset} ${seedNote}`;
        const result = native.rmsNorm({ x: handle(x), weight: handle(weight), eps });
        const reference = rmsNormReference(xs, ws, eps, d);
        expect(relativeError(read(result.output), reference.output), label).toBeLessThan(1e-5);
        expect(relativeError(read(result.rstd), reference.rstd), label).toBeLessThan(1e-6);
        const grads = native.rmsNormBackward({
          gradOutput: handle(gradOutput),
          x: handle(x),
          weight: handle(weight),
          rstd: result.rstd,
        });
        const expected = rmsNormBackwardReference(gy, xs, ws, eps, d);
        const inputGrad = read(grads.input);
        if (d === 1) {
          // rstd g (1 − x̂²) with x̂² = x² / (x² + eps) ≈ 1: the two terms cancel, so the error is measured against
          // their size, rstd |g|.
          inputGrad.forEach((value, row) => {
            const terms = Math.abs(gy[row] * ws[0]) / Math.sqrt(xs[row] ** 2 + eps);
            expect(Math.abs(value - expected.input[row]), `input ${label}`).toBeLessThan(1e-6 * terms);
          });
        } else {
          expect(relativeError(inputGrad, expected.input), `input ${label}`).toBeLessThan(1e-5);
        }
        expect(relativeError(read(grads.weight), expected.weight), `weight ${label}`).toBeLessThan(1e-5);
      });
    }
  });

  it('rmsNorm, swiglu, geluTanh and silu gradients agree with central differences through autograd', () => {
    setIsa(isa);
    tidy(() => {
      checkGradients('rmsNorm', ([x, weight]) => ops.rmsNorm(x, weight, 1e-6), [leaf([3, 2, 9]), leaf([9])]);
      checkGradients('swiglu', ([gate, up]) => ops.swiglu(gate, up), [leaf([4, 7]), leaf([4, 7])]);
      checkGradients('geluTanh', ([x]) => ops.geluTanh(x), [leaf([5, 11])]);
      checkGradients('silu', ([x]) => ops.silu(x), [leaf([5, 11])]);
    });
  });
});

describe('decoder ops', () => {
  it('rmsNorm and swiglu results do not depend on the thread count', () => {
    tidy(() => {
      const x = randomTensor([300, 130]);
      const weight = randomTensor([130]);
      const gradOutput = randomTensor([300, 130]);
      const up = randomTensor([300, 130]);
      const run = () => {
        const forward = native.rmsNorm({ x: handle(x), weight: handle(weight), eps: 1e-6 });
        const backward = native.rmsNormBackward({
          gradOutput: handle(gradOutput),
          x: handle(x),
          weight: handle(weight),
          rstd: forward.rstd,
        });
        const swiglu = native.swigluBackward({ gate: handle(x), up: handle(up), gradOutput: handle(gradOutput) });
        return [forward.output, backward.input, backward.weight, swiglu.gate, swiglu.up].map(read);
      };
      const threaded = run();
      setNumThreads(1);
      const single = run();
      setNumThreads(initialThreads);
      threaded.forEach((values, index) => expect(values).toEqual(single[index]));
    });
  });

  it('the RMSNorm module names its parameter weight and matches the op; memory returns to its baseline', () => {
    const before = memory().tensors;
    tidy(() => {
      const norm = new nn.RMSNorm(8, 1e-5);
      expect(norm.namedParameters().map(([name]) => name)).toEqual(['weight']);
      norm.weight.copyFrom(randomTensor([8]));
      const x = randomTensor([3, 8]);
      expect(norm.forward(x).toFloat32Array()).toEqual(ops.rmsNorm(x, norm.weight, 1e-5).toFloat32Array());
      const loss = ops.sum(norm.forward(x.requireGrad()));
      loss.backward();
      expect(norm.weight.grad?.shape).toEqual([8]);
      expect(x.grad?.shape).toEqual([3, 8]);
      norm.weight.grad?.dispose();
      x.grad?.dispose();
      norm.dispose();
    });
    expect(memory().tensors).toBe(before);
  });

  it('maps transformers activation names onto the ops', () => {
    expect(ops.activationByName('gelu_new')).toBe(ops.geluTanh);
    expect(ops.activationByName('gelu_pytorch_tanh')).toBe(ops.geluTanh);
    expect(ops.activationByName('gelu')).toBe(ops.gelu);
    expect(ops.activationByName('silu')).toBe(ops.silu);
    expect(() => ops.activationByName('quick_gelu')).toThrow(/activationByName: unknown activation "quick_gelu"/);
    expect(() => ops.activationByName('toString')).toThrow(RangeError);
    tidy(() => {
      const x = widened([4, 6]);
      expect(new nn.GELUTanh().forward(x).toFloat32Array()).toEqual(ops.geluTanh(x).toFloat32Array());
      expect(new nn.SiLU().forward(x).toFloat32Array()).toEqual(ops.silu(x).toFloat32Array());
    });
  });

  it('bad input throws TypeError or RangeError naming the argument', () => {
    tidy(() => {
      const x = randomTensor([2, 6]);
      const cases: [() => unknown, ErrorConstructor, RegExp][] = [
        [
          () => native.rmsNorm({ x: handle(x), weight: handle(randomTensor([5])), eps: 1e-6 }),
          RangeError,
          /rmsNorm: .*weight/,
        ],
        [() => native.rmsNorm({ x: handle(x), weight: handle(randomTensor([6])), eps: 0 }), RangeError, /rmsNorm: eps/],
        [
          () => native.rmsNorm({ x: handle(x), weight: undefined as never, eps: 1e-6 }),
          TypeError,
          /rmsNorm: weight must be a Tensor/,
        ],
        [
          () =>
            native.rmsNormBackward({
              gradOutput: handle(x),
              x: handle(x),
              weight: handle(randomTensor([6])),
              rstd: handle(randomTensor([3])),
            }),
          RangeError,
          /rmsNormBackward: .*rstd/,
        ],
        [() => native.swiglu({ gate: handle(x), up: handle(randomTensor([6, 2])) }), RangeError, /swiglu: .*up/],
        [
          () => native.swigluBackward({ gate: handle(x), up: handle(x), gradOutput: handle(randomTensor([2, 5])) }),
          RangeError,
          /swigluBackward: .*gradOutput/,
        ],
        [() => native.geluTanh({} as never), TypeError, /geluTanh: x must be a Tensor/],
        [
          () => native.siluBackward({ x: handle(x), gradOutput: handle(randomTensor([6])) }),
          RangeError,
          /siluBackward: .*gradOutput/,
        ],
      ];
      for (const [run, type, message] of cases) {
        expect(run).toThrow(type);
        expect(run).toThrow(message);
      }
    });
  });
});
