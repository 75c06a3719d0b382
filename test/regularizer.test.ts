// BiDoRA's orthogonality regulariser: the fused value against a float64 computation that forms V explicitly, its
// gradients against central differences (of that float64 reference, and directional ones of the fused op itself),
// the B = 0 and floored-row cases, autograd, the cached Gram matrix and argument checks.
import { afterAll, describe, expect, it } from 'vitest';

import { native } from '../lib/binding';
import { buildInfo, memory, noGrad, ops, setIsa, setNumThreads, Tensor, tidy } from '../lib/index';
import { handleOf } from '../lib/tensor';
import { checkGradients } from './gradcheck';
import { baseSeed, isaPaths, randomTensor, relativeError } from './helpers';

const initialIsa = buildInfo().isa;
afterAll(() => {
  setIsa(initialIsa);
});

const EPS = 1e-6;

interface Factors {
  weight: Float64Array; // [M,K]
  loraA: Float64Array; // [R,K]
  loraB: Float64Array; // [M,R]
  m: number;
  k: number;
  r: number;
  scale: number;
}

/** ‖D Dᵀ − I‖_F in float64 from V = W0 + s B A formed explicitly, rows normalised by max(‖V_i‖, eps). */
function penaltyReference({ weight, loraA, loraB, m, k, r, scale }: Factors): number {
  const direction = new Float64Array(m * k);
  for (let i = 0; i < m; i++) {
    let squared = 0;
    for (let c = 0; c < k; c++) {
      let value = weight[i * k + c];
      for (let p = 0; p < r; p++) value += scale * loraB[i * r + p] * loraA[p * k + c];
      direction[i * k + c] = value;
      squared += value * value;
    }
    const norm = Math.max(Math.sqrt(squared), EPS);
    for (let c = 0; c < k; c++) direction[i * k + c] /= norm;
  }
  let total = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < m; j++) {
      let dot = 0;
      for (let c = 0; c < k; c++) dot += direction[i * k + c] * direction[j * k + c];
      const deviation = dot - (i === j ? 1 : 0);
      total += deviation * deviation;
    }
  }
  return Math.sqrt(total);
}

/** Central differences of the float64 reference in every element of A and B (skipping rows of B in `skipRows`). */
function referenceGradients(factors: Factors, skipRows: ReadonlySet<number> = new Set()) {
  const step = 1e-6;
  const differentiate = (values: Float64Array, skip: (index: number) => boolean) =>
    values.map((_, index) => {
      if (skip(index)) return Number.NaN;
      const saved = values[index];
      values[index] = saved + step;
      const up = penaltyReference(factors);
      values[index] = saved - step;
      const down = penaltyReference(factors);
      values[index] = saved;
      return (up - down) / (2 * step);
    });
  return {
    gradA: differentiate(factors.loraA, () => false),
    gradB: differentiate(factors.loraB, (index) => skipRows.has(Math.floor(index / factors.r))),
  };
}

function factorsOf(weight: Tensor, loraA: Tensor, loraB: Tensor, scale: number): Factors {
  return {
    weight: Float64Array.from(weight.toFloat32Array()),
    loraA: Float64Array.from(loraA.toFloat32Array()),
    loraB: Float64Array.from(loraB.toFloat32Array()),
    m: weight.shape[0],
    k: weight.shape[1],
    r: loraA.shape[0],
    scale,
  };
}

/** The fused native call: value and both gradients. */
function fused(weight: Tensor, loraA: Tensor, loraB: Tensor, scale: number) {
  const w = handleOf(weight, 'test', 'weight');
  const gram = native.matmul({ a: w, b: w, transposeB: true });
  const result = native.orthogonalityPenalty({
    weight: w,
    weightGram: gram,
    loraA: handleOf(loraA, 'test', 'loraA'),
    loraB: handleOf(loraB, 'test', 'loraB'),
    scale,
    eps: EPS,
  });
  gram.dispose();
  const gradA = result.gradA!.read();
  const gradB = result.gradB!.read();
  result.gradA!.dispose();
  result.gradB!.dispose();
  return { value: result.value, gradA, gradB };
}

/** max over the compared entries of |actual − expected| / max|expected| (NaN expected entries are skipped). */
function gradientError(actual: Float32Array, expected: Float64Array): number {
  const kept = [...expected.keys()].filter((index) => !Number.isNaN(expected[index]));
  return relativeError(
    kept.map((index) => actual[index]),
    kept.map((index) => expected[index]),
  );
}

const shapes = [
  { m: 7, k: 13, r: 3, scale: 2 },
  { m: 32, k: 20, r: 4, scale: 0.5 },
  { m: 12, k: 40, r: 1, scale: 1.3 },
];

describe.each(isaPaths)('orthogonalityPenalty on the %s path', (isa) => {
  it.each(shapes)('value and gradients match float64 for %o', ({ m, k, r, scale }) => {
    setIsa(isa);
    tidy(() => {
      const weight = randomTensor([m, k]);
      const loraA = ops.scale(randomTensor([r, k]), 0.3);
      const loraB = ops.scale(randomTensor([m, r]), 0.3);
      const factors = factorsOf(weight, loraA, loraB, scale);
      const result = fused(weight, loraA, loraB, scale);
      const expected = penaltyReference(factors);
      expect(Math.abs(result.value - expected) / expected, `seed ${baseSeed}`).toBeLessThan(1e-5);
      const { gradA, gradB } = referenceGradients(factors);
      expect(gradientError(result.gradA, gradA), `gradA, seed ${baseSeed}`).toBeLessThan(1e-4);
      expect(gradientError(result.gradB, gradB), `gradB, seed ${baseSeed}`).toBeLessThan(1e-4);
    });
  });

  it('with B = 0 (D is the normalised W0): dF/dA = 0 and dF/dB matches', () => {
    setIsa(isa);
    tidy(() => {
      const weight = randomTensor([9, 6]);
      const loraA = randomTensor([2, 6]);
      const loraB = Tensor.zeros([9, 2]);
      const factors = factorsOf(weight, loraA, loraB, 1.5);
      const result = fused(weight, loraA, loraB, 1.5);
      expect(Math.abs(result.value - penaltyReference(factors)) / result.value).toBeLessThan(1e-5);
      expect(Array.from(result.gradA)).toEqual(new Array<number>(2 * 6).fill(0));
      const { gradB } = referenceGradients(factors);
      expect(gradientError(result.gradB, gradB), `seed ${baseSeed}`).toBeLessThan(1e-4);
    });
  });

  it('treats a zero row as floored at eps: value and the gradients that do not cross the floor', () => {
    setIsa(isa);
    tidy(() => {
      const m = 6;
      const k = 8;
      const r = 2;
      const weightValues = randomTensor([m, k]).toFloat32Array();
      const loraBValues = randomTensor([m, r]).toFloat32Array();
      weightValues.fill(0, 2 * k, 3 * k);
      loraBValues.fill(0, 2 * r, 3 * r);
      const weight = Tensor.from(weightValues, [m, k]);
      const loraA = randomTensor([r, k]);
      const loraB = Tensor.from(loraBValues, [m, r]);
      const factors = factorsOf(weight, loraA, loraB, 0.7);
      const result = fused(weight, loraA, loraB, 0.7);
      expect(Math.abs(result.value - penaltyReference(factors)) / result.value).toBeLessThan(1e-5);
      // Moving B's row 2 lifts that row off the floor (a kink): compare everything else.
      const { gradA, gradB } = referenceGradients(factors, new Set([2]));
      expect(gradientError(result.gradA, gradA), `seed ${baseSeed}`).toBeLessThan(1e-4);
      expect(gradientError(result.gradB, gradB), `seed ${baseSeed}`).toBeLessThan(1e-4);
      expect(result.gradB.every(Number.isFinite)).toBe(true);
    });
  });
});

describe('orthogonalityPenalty, the op', () => {
  it('directional differences of the fused op agree with its gradients', () => {
    tidy(() => {
      for (const { m, k, r, scale } of shapes) {
        const weight = randomTensor([m, k]);
        const loraA = ops.scale(randomTensor([r, k]), 0.3);
        const loraB = ops.scale(randomTensor([m, r]), 0.3);
        const directionA = randomTensor([r, k]);
        const directionB = randomTensor([m, r]);
        const { gradA, gradB } = fused(weight, loraA, loraB, scale);
        const dot = (a: Float32Array, b: Float32Array) =>
          a.reduce((total, value, index) => total + value * b[index], 0);
        const analytic = dot(gradA, directionA.toFloat32Array()) + dot(gradB, directionB.toFloat32Array());
        const at = (offset: number) =>
          tidy(() => {
            const movedA = ops.add(loraA, ops.scale(directionA, offset));
            const movedB = ops.add(loraB, ops.scale(directionB, offset));
            return ops.orthogonalityPenalty({ weight, loraA: movedA, loraB: movedB, scale, eps: EPS }).item();
          });
        // Richardson's extrapolation of two central differences cancels their h² error, so a step large enough
        // for float32 values stays accurate.
        const central = (step: number) => (at(step) - at(-step)) / (2 * step);
        const numeric = (4 * central(5e-3) - central(1e-2)) / 3;
        expect(Math.abs(numeric - analytic), `${m}x${k}x${r}, seed ${baseSeed}`).toBeLessThan(
          2e-3 * Math.max(1, Math.abs(analytic)),
        );
        ops.releaseWeightGram(weight);
      }
    });
  });

  it('backpropagates to loraA and loraB through autograd (central differences)', () => {
    tidy(() => {
      const weight = randomTensor([5, 6]);
      checkGradients(
        'orthogonalityPenalty',
        ([loraA, loraB]) => ops.scale(ops.orthogonalityPenalty({ weight, loraA, loraB, scale: 1.5 }), 3),
        [ops.scale(randomTensor([2, 6]), 0.5).requireGrad(), ops.scale(randomTensor([5, 2]), 0.5).requireGrad()],
        { tolerance: 5e-3 },
      );
      ops.releaseWeightGram(weight);
    });
  });

  it('scales the saved gradients by the incoming gradient; refuses A changed after forward', () => {
    tidy(() => {
      const weight = randomTensor([6, 9]);
      const loraA = randomTensor([2, 9]).requireGrad();
      const loraB = randomTensor([6, 2]).requireGrad();
      const { value, gradA, gradB } = fused(weight, loraA, loraB, 0.8);
      const penalty = ops.orthogonalityPenalty({ weight, loraA, loraB, scale: 0.8 });
      expect(penalty.shape).toEqual([]);
      expect(penalty.item()).toBeCloseTo(value, 5);
      ops.scale(penalty, -2).backward();
      expect(
        relativeError(
          loraA.grad!.toFloat32Array(),
          Array.from(gradA, (x) => -2 * x),
        ),
      ).toBeLessThan(1e-6);
      expect(
        relativeError(
          loraB.grad!.toFloat32Array(),
          Array.from(gradB, (x) => -2 * x),
        ),
      ).toBeLessThan(1e-6);
      const again = ops.orthogonalityPenalty({ weight, loraA, loraB, scale: 0.8 });
      noGrad(() => ops.axpy(loraA, 0.1, loraA.grad!));
      expect(() => again.backward()).toThrow(/loraA was modified in place/);
      // Without a graph nothing is saved.
      const before = memory().tensors;
      const value2 = noGrad(() => ops.orthogonalityPenalty({ weight, loraA, loraB, scale: 0.8 }));
      expect(value2.gradNode).toBeUndefined();
      expect(memory().tensors).toBe(before + 1);
      loraA.grad?.dispose();
      loraB.grad?.dispose();
      ops.releaseWeightGram(weight);
    });
  });

  it('recomputes the cached W0 W0ᵀ when the weight changes in place', () => {
    tidy(() => {
      const weight = randomTensor([8, 5]);
      const loraA = randomTensor([2, 5]);
      const loraB = randomTensor([8, 2]);
      const first = ops.orthogonalityPenalty({ weight, loraA, loraB, scale: 1 }).item();
      expect(first).toBeCloseTo(penaltyReference(factorsOf(weight, loraA, loraB, 1)), 4);
      ops.axpy(weight, 0.7, randomTensor([8, 5]));
      const second = ops.orthogonalityPenalty({ weight, loraA, loraB, scale: 1 }).item();
      expect(second).not.toBeCloseTo(first, 4);
      expect(second).toBeCloseTo(penaltyReference(factorsOf(weight, loraA, loraB, 1)), 4);
      const before = memory().tensors;
      ops.releaseWeightGram(weight);
      expect(memory().tensors).toBe(before - 1);
    });
  });

  it('is 0 with a zero gradient for a single row, and the same on 1 and 2 threads', () => {
    tidy(() => {
      const single = fused(randomTensor([1, 7]), randomTensor([2, 7]), randomTensor([1, 2]), 1);
      expect(single.value).toBe(0);
      expect([...single.gradA, ...single.gradB].every((value) => value === 0)).toBe(true);
      const weight = randomTensor([300, 64]);
      const loraA = randomTensor([8, 64]);
      const loraB = ops.scale(randomTensor([300, 8]), 0.1);
      const run = (threads: number) => {
        const previous = setNumThreads(threads);
        try {
          const { value, gradA, gradB } = fused(weight, loraA, loraB, 2);
          return [value, ...gradA, ...gradB];
        } finally {
          setNumThreads(previous);
        }
      };
      expect(run(Math.min(2, buildInfo().poolThreads))).toEqual(run(1));
    });
  });

  it.each([
    ['weight rank', { weight: [3, 4, 1] }, RangeError, /weight of rank 2/],
    ['loraA columns', { loraA: [2, 5] }, RangeError, /loraA of shape \[r, 4\]/],
    ['loraB shape', { loraB: [3, 3] }, RangeError, /loraB of shape \[3, 2\]/],
    ['eps', { eps: 0 }, RangeError, /eps must be positive/],
    ['scale', { scale: Number.NaN }, RangeError, /scale/],
  ])('rejects a bad %s', (_, change, kind, message) => {
    tidy(() => {
      const args = {
        weight: randomTensor((change as { weight?: number[] }).weight ?? [3, 4]),
        loraA: randomTensor((change as { loraA?: number[] }).loraA ?? [2, 4]),
        loraB: randomTensor((change as { loraB?: number[] }).loraB ?? [3, 2]),
        scale: (change as { scale?: number }).scale ?? 1,
        eps: (change as { eps?: number }).eps,
      };
      const call = () => ops.orthogonalityPenalty(args);
      expect(call).toThrow(kind);
      expect(call).toThrow(message);
      ops.releaseWeightGram(args.weight);
    });
  });

  it('the native entry point checks weightGram and disposed tensors', () => {
    tidy(() => {
      const weight = handleOf(randomTensor([3, 4]), 'test', 'weight');
      const loraA = handleOf(randomTensor([2, 4]), 'test', 'loraA');
      const loraB = handleOf(randomTensor([3, 2]), 'test', 'loraB');
      const wrongGram = handleOf(randomTensor([4, 4]), 'test', 'gram');
      expect(() =>
        native.orthogonalityPenalty({ weight, weightGram: wrongGram, loraA, loraB, scale: 1, eps: EPS }),
      ).toThrow(/weightGram \(W0 W0ᵀ\) of shape \[3, 3\]/);
      const disposed = randomTensor([3, 2]);
      disposed.dispose();
      expect(() =>
        ops.orthogonalityPenalty({
          weight: randomTensor([3, 4]),
          loraA: randomTensor([2, 4]),
          loraB: disposed,
          scale: 1,
        }),
      ).toThrow(/loraB is a disposed Tensor/);
    });
  });
});
