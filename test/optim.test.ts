// AdamW and SGD against float64 JavaScript versions of PyTorch's update rules, on every ISA path and thread count;
// list ops, schedules, clipping, state dicts, and argument checks.
import { afterAll, describe, expect, it } from 'vitest';

import { native } from '../lib/binding';
import { buildInfo, memory, noGrad, ops, setIsa, setNumThreads, Tensor, tidy } from '../lib/index';
import { handleOf } from '../lib/tensor';
import { AdamW, clipGradNorm, learningRateAt, type Optimizer, SGD } from '../lib/optim/index';
import { baseSeed, isaPaths, randomTensor, relativeError } from './helpers';

const initialIsa = buildInfo().isa;
afterAll(() => {
  setIsa(initialIsa);
});

// Around vector widths, one tensor past the threading threshold, and a rank-0 one.
const shapes = [[7], [33, 130], [300, 257], [3, 5, 7, 9], []];

const toFloat64 = (tensor: Tensor) => Float64Array.from(tensor.toFloat32Array());

interface AdamWReference {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** torch.optim.AdamW's single-tensor update in float64; `step` is the parameter's own update count, 1 first. */
function adamwReference(
  p: Float64Array,
  g: Float64Array,
  m: Float64Array,
  v: Float64Array,
  step: number,
  o: AdamWReference,
) {
  const biasCorrection1 = 1 - o.beta1 ** step;
  const biasCorrection2 = 1 - o.beta2 ** step;
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - o.lr * o.weightDecay;
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
    const denominator = Math.sqrt(v[i]) / Math.sqrt(biasCorrection2) + o.eps;
    p[i] -= (o.lr / biasCorrection1) * (m[i] / denominator);
  }
}

/** torch.optim.SGD's update in float64 (dampening 0); buffer undefined before the first step with momentum. */
function sgdReference(
  p: Float64Array,
  g: Float64Array,
  buffer: Float64Array | undefined,
  o: { lr: number; momentum: number; weightDecay: number; nesterov: boolean },
): Float64Array | undefined {
  const d = g.map((value, i) => value + o.weightDecay * p[i]);
  let next = buffer;
  if (o.momentum !== 0) {
    next = buffer === undefined ? d.slice() : buffer.map((value, i) => o.momentum * value + d[i]);
    for (let i = 0; i < d.length; i++) d[i] = o.nesterov ? d[i] + o.momentum * next[i] : next[i];
  }
  for (let i = 0; i < p.length; i++) p[i] -= o.lr * d[i];
  return next;
}

/** Replaces every parameter's .grad with a fresh random tensor, except those listed in `skip`. */
function freshGrads(params: readonly Tensor[], skip: ReadonlySet<number> = new Set()): void {
  params.forEach((param, index) => {
    param.grad?.dispose();
    param.grad = skip.has(index) ? undefined : randomTensor(param.shape);
  });
}

/** relativeError over a whole list at once: one tiny element (a rank-0 parameter) does not set the scale. */
function listError(actual: readonly Tensor[], expected: readonly Float64Array[]): number {
  return relativeError(
    actual.flatMap((tensor) => Array.from(tensor.toFloat32Array())),
    expected.flatMap((values) => Array.from(values)),
  );
}

function disposeAll(params: readonly Tensor[], optimizer?: Optimizer): void {
  optimizer?.zeroGrad();
  optimizer?.dispose();
  for (const param of params) param.dispose();
}

describe.each(isaPaths)('optimizers on the %s path', (isa) => {
  it('AdamW matches PyTorch over several steps, per-parameter step counts and a per-step lr', () => {
    setIsa(isa);
    const options = { lr: 0.01, betas: [0.8, 0.95] as [number, number], eps: 1e-6, weightDecay: 0.1 };
    const params = shapes.map((shape) => randomTensor(shape));
    const optimizer = new AdamW(params, options);
    const reference = params.map((param) => ({
      p: toFloat64(param),
      m: new Float64Array(param.size),
      v: new Float64Array(param.size),
      steps: 0,
    }));
    for (let step = 0; step < 5; step++) {
      // Parameter 1 gets no gradient on the first two steps: skipped, and its bias correction starts later.
      const skip = new Set(step < 2 ? [1] : []);
      freshGrads(params, skip);
      const lr = step === 3 ? 0.003 : options.lr;
      params.forEach((param, index) => {
        if (skip.has(index)) return;
        const state = reference[index];
        state.steps += 1;
        adamwReference(state.p, toFloat64(param.grad!), state.m, state.v, state.steps, {
          ...options,
          lr,
          beta1: options.betas[0],
          beta2: options.betas[1],
        });
      });
      optimizer.step(step === 3 ? { lr } : {});
    }
    expect(optimizer.stepCount).toBe(5);
    const { tensors } = optimizer.stateDict();
    const slot = (name: string) => params.map((_, index) => tensors.get(`${index}.${name}`)!);
    expect(
      listError(
        params,
        reference.map((state) => state.p),
      ),
      `params, seed ${baseSeed}`,
    ).toBeLessThan(2e-6);
    expect(
      listError(
        slot('expAvg'),
        reference.map((state) => state.m),
      ),
      `expAvg, seed ${baseSeed}`,
    ).toBeLessThan(1e-6);
    expect(
      listError(
        slot('expAvgSq'),
        reference.map((state) => state.v),
      ),
      `expAvgSq, seed ${baseSeed}`,
    ).toBeLessThan(1e-6);
    disposeAll(params, optimizer);
  });

  it.each([
    { momentum: 0, weightDecay: 0, nesterov: false },
    { momentum: 0, weightDecay: 0.05, nesterov: false },
    { momentum: 0.9, weightDecay: 0, nesterov: false },
    { momentum: 0.9, weightDecay: 0.05, nesterov: true },
  ])('SGD %o matches PyTorch over several steps', (settings) => {
    setIsa(isa);
    const o = { lr: 0.05, ...settings };
    const params = shapes.map((shape) => randomTensor(shape));
    const optimizer = new SGD(params, o);
    const reference = params.map((param) => ({ p: toFloat64(param), buffer: undefined as Float64Array | undefined }));
    for (let step = 0; step < 4; step++) {
      const skip = new Set(step === 0 ? [2] : []);
      freshGrads(params, skip);
      params.forEach((param, index) => {
        if (skip.has(index)) return;
        const state = reference[index];
        state.buffer = sgdReference(state.p, toFloat64(param.grad!), state.buffer, o);
      });
      optimizer.step();
    }
    expect(
      listError(
        params,
        reference.map((state) => state.p),
      ),
      `params, seed ${baseSeed}`,
    ).toBeLessThan(2e-6);
    expect([...optimizer.stateDict().tensors.keys()].length).toBe(o.momentum === 0 ? 0 : params.length);
    disposeAll(params, optimizer);
  });

  it('axpyList, scaleList and combineHypergradient match float64', () => {
    setIsa(isa);
    tidy(() => {
      const ys = shapes.map((shape) => randomTensor(shape));
      const xs = shapes.map((shape) => randomTensor(shape));
      const minus = shapes.map((shape) => randomTensor(shape));
      const y = ys.map(toFloat64);
      const x = xs.map(toFloat64);
      const n = minus.map(toFloat64);
      expect(ops.axpyList(ys, -0.37, xs)).toBe(ys);
      // Per element against the size of its terms: a sum can cancel to near 0 (likeliest in the scalar case), where an
      // error relative to the result alone would fail a correctly rounded kernel.
      ys.forEach((tensor, i) => {
        const actual = tensor.toFloat32Array();
        y[i].forEach((value, j) => {
          const expected = value - 0.37 * x[i][j];
          const size = Math.abs(value) + 0.37 * Math.abs(x[i][j]);
          expect(Math.abs(actual[j] - expected) / size, `${JSON.stringify(shapes[i])}[${j}]`).toBeLessThan(1e-6);
        });
      });
      const afterAxpy = ys.map(toFloat64);
      ops.scaleList(ys, 1.7);
      ys.forEach((tensor, i) => {
        expect(
          relativeError(
            tensor.toFloat32Array(),
            afterAxpy[i].map((value) => 1.7 * value),
          ),
        ).toBeLessThan(1e-6);
      });
      const scaled = ys.map(toFloat64);
      ops.combineHypergradient(ys, xs, minus, 25);
      ys.forEach((tensor, i) => {
        const actual = tensor.toFloat32Array();
        scaled[i].forEach((value, j) => {
          const expected = value - 25 * (x[i][j] - n[i][j]);
          const size = Math.abs(value) + 25 * (Math.abs(x[i][j]) + Math.abs(n[i][j]));
          expect(Math.abs(actual[j] - expected) / size, `${JSON.stringify(shapes[i])}[${j}]`).toBeLessThan(1e-6);
        });
      });
    });
  });
});

describe('determinism', () => {
  it('gives the same bits on 1 and 2 threads', () => {
    const threads = Math.min(2, buildInfo().poolThreads);
    const run = (count: number) => {
      const previous = setNumThreads(count);
      try {
        return tidy(() => {
          const params = [[70_000], [300, 257], [5], [3, 1000]].map((shape, index) =>
            Tensor.randn(shape, { seed: baseSeed + index }),
          );
          const adamw = new AdamW(params, { lr: 0.01 });
          const sgd = new SGD(params, { lr: 0.01, momentum: 0.9, nesterov: true, weightDecay: 0.01 });
          for (let step = 0; step < 3; step++) {
            params.forEach((param, index) => {
              param.grad?.dispose();
              param.grad = Tensor.randn(param.shape, { seed: baseSeed + 100 * (step + 1) + index });
            });
            adamw.step();
            sgd.step();
            ops.axpyList(
              params,
              0.5,
              params.map((param) => param.grad!),
            );
            ops.combineHypergradient(
              params.map((param) => param.grad!),
              params,
              params.map((param) => ops.scale(param, 0.5)),
              3,
            );
            ops.scaleList(params, 0.999);
          }
          const values = params.map((param) => Array.from(param.toFloat32Array()));
          adamw.zeroGrad();
          adamw.dispose();
          sgd.dispose();
          return values;
        });
      } finally {
        setNumThreads(previous);
      }
    };
    expect(run(threads)).toEqual(run(1));
  });
});

describe('learningRateAt', () => {
  it('follows transformers: constant, linear and cosine with warmup, cosine to a minimum', () => {
    expect(learningRateAt(0.1, { type: 'constant' }, 1234)).toBe(0.1);
    const linear = { type: 'linear', warmupSteps: 10, totalSteps: 100 } as const;
    expect([0, 5, 10, 55, 100, 120].map((step) => learningRateAt(2, linear, step))).toEqual([
      0,
      1,
      2,
      2 * (45 / 90),
      0,
      0,
    ]);
    expect(learningRateAt(2, { type: 'linear', totalSteps: 4 }, 1)).toBe(1.5);
    const cosine = { type: 'cosine', warmupSteps: 10, totalSteps: 110 } as const;
    expect(learningRateAt(1, cosine, 3)).toBeCloseTo(0.3, 15);
    expect(learningRateAt(1, cosine, 10)).toBe(1);
    expect(learningRateAt(1, cosine, 35)).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI * 0.25)), 15);
    expect(learningRateAt(1, cosine, 60)).toBeCloseTo(0.5, 15);
    expect(learningRateAt(1, cosine, 110)).toBeCloseTo(0, 15);
    expect(learningRateAt(1, cosine, 200)).toBeCloseTo(0, 15);
    const floor = { ...cosine, minLr: 0.1 };
    // transformers' min_lr_rate form: factor · (1 − min/base) + min/base, times base.
    expect(learningRateAt(1, floor, 60)).toBeCloseTo(0.5 * 0.9 + 0.1, 15);
    expect(learningRateAt(1, floor, 110)).toBeCloseTo(0.1, 15);
    expect(learningRateAt(1, floor, 500)).toBeCloseTo(0.1, 15);
  });

  it.each([
    [() => learningRateAt(-1, { type: 'constant' }, 0), /baseLr/],
    [() => learningRateAt(1, { type: 'linear', totalSteps: 0 }, 0), /totalSteps/],
    [() => learningRateAt(1, { type: 'linear', totalSteps: 10, warmupSteps: -1 }, 0), /warmupSteps/],
    [() => learningRateAt(1, { type: 'cosine', totalSteps: 10 }, 1.5), /step/],
    [() => learningRateAt(1, { type: 'cosine', totalSteps: 10, minLr: 2 }, 1), /minLr/],
    [() => learningRateAt(1, { type: 'step' } as never, 1), /schedule.type/],
  ])('rejects bad input %#', (call, message) => {
    expect(call).toThrow(RangeError);
    expect(call).toThrow(message);
  });
});

describe('clipGradNorm', () => {
  it('scales gradients like torch.nn.utils.clip_grad_norm_ and returns the norm before clipping', () => {
    tidy(() => {
      const params = [[4, 5], [300, 257], [3]].map((shape) => randomTensor(shape));
      const frozen = randomTensor([6]);
      freshGrads(params);
      const grads = params.map((param) => toFloat64(param.grad!));
      const norm = Math.sqrt(
        grads.reduce((total, grad) => total + grad.reduce((sum, value) => sum + value * value, 0), 0),
      );
      expect(clipGradNorm([...params, frozen], norm * 2)).toBeCloseTo(norm, 3);
      params.forEach((param, index) =>
        expect(Array.from(param.grad!.toFloat32Array())).toEqual(Array.from(grads[index], Math.fround)),
      );
      const maxNorm = norm / 3;
      expect(clipGradNorm(params, maxNorm)).toBeCloseTo(norm, 3);
      const coefficient = maxNorm / (norm + 1e-6);
      params.forEach((param, index) => {
        expect(
          relativeError(
            param.grad!.toFloat32Array(),
            grads[index].map((value) => value * coefficient),
          ),
        ).toBeLessThan(1e-6);
      });
      expect(clipGradNorm(params, maxNorm)).toBeCloseTo(maxNorm, 3);
      expect(clipGradNorm([frozen], 1)).toBe(0);
      expect(() => clipGradNorm(params, -1)).toThrow(/maxNorm/);
      for (const param of params) param.grad?.dispose();
    });
  });
});

describe('state', () => {
  it.each([
    ['AdamW', (params: Tensor[]) => new AdamW(params, { lr: 0.02, weightDecay: 0.05 })],
    ['SGD', (params: Tensor[]) => new SGD(params, { lr: 0.02, momentum: 0.9, nesterov: true })],
  ])('a %s state dict round trip gives identical next steps', (_, make) => {
    const before = memory().tensors;
    const params = [[4, 5], [3], [2, 3, 4]].map((shape) => randomTensor(shape));
    const original = make(params);
    for (let step = 0; step < 3; step++) {
      freshGrads(params, new Set(step === 0 ? [1] : []));
      original.step();
    }
    const copies = params.map((param) => ops.scale(param, 1));
    const restored = make(copies);
    restored.lr = 1;
    const dict = original.stateDict();
    expect(dict.state.stepCount).toBe(3);
    // Through JSON, as a checkpoint would store the plain part, and from copies the caller then disposes.
    const tensors = new Map([...dict.tensors].map(([key, tensor]) => [key, ops.scale(tensor, 1)]));
    restored.loadStateDict({ tensors, state: JSON.parse(JSON.stringify(dict.state)) as Record<string, unknown> });
    for (const tensor of tensors.values()) tensor.dispose();
    expect(restored.lr).toBe(0.02);
    expect(restored.stepCount).toBe(3);
    for (let step = 0; step < 2; step++) {
      freshGrads(params);
      copies.forEach((copy, index) => {
        copy.grad?.dispose();
        copy.grad = ops.scale(params[index].grad!, 1);
      });
      original.step();
      restored.step();
    }
    copies.forEach((copy, index) => expect(copy.toFloat32Array()).toEqual(params[index].toFloat32Array()));
    disposeAll(params, original);
    disposeAll(copies, restored);
    expect(memory().tensors).toBe(before);
  });

  it('rejects a state dict of another type, other parameters or missing tensors, leaving the state unchanged', () => {
    tidy(() => {
      const params = [randomTensor([3, 2]), randomTensor([4])];
      const adamw = new AdamW(params);
      freshGrads(params);
      adamw.step();
      const dict = adamw.stateDict();
      const sgd = new SGD(params, { lr: 0.1 });
      expect(() => sgd.loadStateDict(dict)).toThrow(/AdamW, not SGD/);
      const other = new AdamW([params[0]]);
      expect(() => other.loadStateDict(dict)).toThrow(/paramSteps/);
      const missing = new Map(dict.tensors);
      missing.delete('1.expAvgSq');
      const fresh = new AdamW(params, { lr: 0.5 });
      expect(() => fresh.loadStateDict({ tensors: missing, state: dict.state })).toThrow(
        /lacks state tensor '1.expAvgSq'/,
      );
      expect(fresh.lr).toBe(0.5);
      const wrongShape = new Map(dict.tensors);
      wrongShape.set('0.expAvg', Tensor.zeros([6]));
      expect(() => fresh.loadStateDict({ tensors: wrongShape, state: dict.state })).toThrow(/0.expAvg.*\[6\]/);
      expect(() => fresh.loadStateDict({ tensors: dict.tensors, state: { ...dict.state, betas: [2, 0] } })).toThrow(
        /betas\[0\]/,
      );
      expect(fresh.betas).toEqual([0.9, 0.999]);
      for (const optimizer of [adamw, sgd, other, fresh]) optimizer.dispose();
      adamw.zeroGrad();
    });
  });

  it('zeroGrad disposes the gradients; dispose frees the state', () => {
    const before = memory().tensors;
    const params = [randomTensor([5]), randomTensor([2, 2])];
    const optimizer = new AdamW(params);
    freshGrads(params);
    const grads = params.map((param) => param.grad!);
    optimizer.step();
    optimizer.zeroGrad();
    expect(grads.every((grad) => grad.isDisposed)).toBe(true);
    expect(params.every((param) => param.grad === undefined)).toBe(true);
    optimizer.step();
    expect(optimizer.stepCount).toBe(2);
    optimizer.dispose();
    expect(() => optimizer.step()).toThrow(/disposed/);
    for (const param of params) param.dispose();
    expect(memory().tensors).toBe(before);
  });

  it('keeps its state out of tidy scopes', () => {
    const params = [randomTensor([5])];
    const optimizer = new SGD(params, { lr: 0.1, momentum: 0.5 });
    tidy(() => {
      freshGrads(params);
      optimizer.step();
    });
    expect(optimizer.stateDict().tensors.get('0.momentumBuffer')!.isDisposed).toBe(false);
    disposeAll(params, optimizer);
  });
});

describe('bad input', () => {
  it.each([
    ['AdamW lr', () => new AdamW([], { lr: -1 }), RangeError, /AdamW: lr/],
    ['AdamW betas', () => new AdamW([], { betas: [1, 0.9] }), RangeError, /AdamW: betas\[0\]/],
    ['AdamW eps', () => new AdamW([], { eps: Number.NaN }), RangeError, /AdamW: eps/],
    ['AdamW weightDecay', () => new AdamW([], { weightDecay: -0.1 }), RangeError, /AdamW: weightDecay/],
    ['AdamW unknown', () => new AdamW([], { weight_decay: 0 } as never), RangeError, /'weight_decay'/],
    ['SGD without lr', () => new SGD([], {} as never), RangeError, /SGD: lr/],
    ['SGD momentum', () => new SGD([], { lr: 1, momentum: -1 }), RangeError, /SGD: momentum/],
    ['SGD nesterov', () => new SGD([], { lr: 1, nesterov: true }), RangeError, /nesterov/],
    ['step lr', () => new SGD([], { lr: 1 }).step({ lr: Number.POSITIVE_INFINITY }), RangeError, /step: lr/],
    ['params', () => new AdamW('x' as never), TypeError, /params must be an array/],
  ])('%s', (_, call, kind, message) => {
    expect(call).toThrow(kind);
    expect(call).toThrow(message);
  });

  it('names the tensor: duplicates, disposed, mismatched gradients', () => {
    tidy(() => {
      const a = randomTensor([3]);
      const b = randomTensor([2, 2]);
      expect(() => new AdamW([a, b, a])).toThrow(/params\[2\] appears more than once/);
      const disposed = randomTensor([2]);
      disposed.dispose();
      expect(() => new AdamW([a, disposed])).toThrow(/params\[1\] is a disposed Tensor/);
      const optimizer = new AdamW([a, b]);
      b.grad = randomTensor([4]);
      expect(() => optimizer.step()).toThrow(/params\[1\]\.grad has shape \[4\] but the parameter has shape \[2, 2\]/);
      expect(optimizer.stepCount).toBe(0);
      optimizer.dispose();
    });
  });

  it('the native list kernels check lengths, shapes, storage, scalars and disposed tensors', () => {
    tidy(() => {
      const [p, g, m, v] = [0, 1, 2, 3].map(() => randomTensor([2, 3]));
      const call = (fn: () => void) => expect(fn);
      const handles = [p, g, m, v].map((tensor) => tensorHandle(tensor));
      const [hp, hg, hm, hv] = handles;
      const adamw = { params: [hp], grads: [hg], expAvg: [hm], expAvgSq: [hv], lr: 0.1, beta1: 0.9, beta2: 0.999 };
      const step = { ...adamw, eps: 1e-8, weightDecay: 0, step: 1 };
      call(() => native.adamwStep({ ...step, grads: [hg, hg] })).toThrow(
        /adamwStep: grads has 2 tensors but params has 1/,
      );
      const wrong = tensorHandle(randomTensor([3, 2]));
      call(() => native.adamwStep({ ...step, expAvg: [wrong] })).toThrow(
        /expAvg\[0\] must have the shape of params\[0\], but params\[0\] has shape \[2, 3\] and expAvg\[0\] has shape \[3, 2\]/,
      );
      call(() => native.adamwStep({ ...step, lr: Number.NaN })).toThrow(RangeError);
      call(() => native.adamwStep({ ...step, beta1: 1 })).toThrow(/beta1/);
      call(() => native.adamwStep({ ...step, step: 0 })).toThrow(/step/);
      call(() => native.adamwStep({ ...step, expAvg: [hp] })).toThrow(/share storage/);
      call(() =>
        native.sgdStep({ params: [hp], grads: [hg], lr: 0.1, momentum: 0.9, weightDecay: 0, nesterov: false }),
      ).toThrow(/momentumBuffers/);
      call(() =>
        native.sgdStep({
          params: [hp],
          grads: [hg],
          momentumBuffers: [hm],
          lr: 0.1,
          momentum: 0,
          weightDecay: 0,
          nesterov: true,
        }),
      ).toThrow(/nesterov/);
      call(() => native.axpyList({ ys: [hp], alpha: 1, xs: [hg, hm] })).toThrow(/axpyList: xs has 2 tensors/);
      call(() => native.scaleList({ tensors: [hp, hp], factor: 2 })).toThrow(
        /tensors\[0\] and tensors\[1\] share storage/,
      );
      call(() => native.scaleList({ tensors: [hp], factor: Number.POSITIVE_INFINITY })).toThrow(/scaleList: factor/);
      call(() => native.combineHypergradient({ direct: [hp], plus: [hg], minus: [wrong], factor: 1 })).toThrow(
        /minus\[0\]/,
      );
      call(() => native.scaleList({ tensors: [hp, 3 as never], factor: 2 })).toThrow(
        /scaleList: tensors\[1\] must be a Tensor/,
      );
      v.dispose();
      call(() => native.adamwStep(step)).toThrow(/expAvgSq\[0\] is a disposed Tensor/);
    });
  });

  it('list ops refuse tensors of a recorded graph, and run under noGrad', () => {
    tidy(() => {
      const leaf = randomTensor([3]).requireGrad();
      const made = ops.scale(leaf, 2);
      expect(() => ops.scaleList([made], 2)).toThrow(/recorded graph/);
      expect(() => ops.axpyList([leaf], 1, [leaf])).toThrow(/recorded graph/);
      noGrad(() => ops.scaleList([made], 2));
      expect(() => ops.axpyList([leaf], 1, [randomTensor([3])])).not.toThrow();
    });
  });
});

/** The native handle behind a tensor, as the ops pass it. */
function tensorHandle(tensor: Tensor) {
  return handleOf(tensor, 'test', 'tensor');
}
