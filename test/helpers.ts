// Shared test helpers: float64 references, error measures and fresh, reproducible random inputs.
import { Tensor, buildInfo, type Isa } from '../lib/index';

/** The base seed of this run: fresh each run unless BIDORA_TEST_SEED pins it; printed in failure messages. */
export const baseSeed = Number(process.env.BIDORA_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
let nextSeed = baseSeed;

/** A fresh normal tensor (never zeros or ones) and a seed to reproduce it. */
export function randomTensor(shape: readonly number[]): Tensor {
  return Tensor.randn(shape, { seed: nextSeed++ });
}

/** The instruction-set paths this CPU runs: every test of a kernel runs on each of them. */
export const isaPaths: Isa[] = buildInfo().isaSupported;

/** max|actual − expected| / max|expected|, the error measure of every kernel test. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let maxDiff = 0;
  let maxRef = 0;
  for (let index = 0; index < expected.length; index++) {
    const diff = Math.abs(actual[index] - expected[index]);
    if (!(diff <= maxDiff)) maxDiff = Number.isNaN(diff) ? Infinity : diff;
    maxRef = Math.max(maxRef, Math.abs(expected[index]));
  }
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}

/** A rows×cols row-major float64 copy of a stored matrix, or of its transpose. */
function asRows(data: Float32Array, rows: number, cols: number, transposed: boolean, storedCols: number) {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[i * cols + j] = transposed ? data[j * storedCols + i] : data[i * storedCols + j];
  }
  return out;
}

/** op(A)[m,k] · op(B)[k,n] in float64 from row-major storage, each read as its transpose when asked. */
export function matmulReference(
  a: Float32Array,
  transposeA: boolean,
  b: Float32Array,
  transposeB: boolean,
  m: number,
  n: number,
  k: number,
): Float64Array {
  const left = asRows(a, m, k, transposeA, transposeA ? m : k);
  const right = asRows(b, k, n, transposeB, transposeB ? k : n);
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const scale = left[i * k + p];
      const rowOffset = p * n;
      const outOffset = i * n;
      for (let j = 0; j < n; j++) out[outOffset + j] += scale * right[rowOffset + j];
    }
  }
  return out;
}
