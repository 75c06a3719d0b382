// GEMM throughput: square products and the adapter-shaped products of a LoRA layer, bidora against OpenBLAS
// measured side by side in this run, reported as GFLOP/s and ratios.
import Benchmark from 'benchmark';

import { median, openblasSeconds } from './baselines.mjs';

/** LoRA at rank 8 on N=512 tokens, in = out = 1024: the forward and the backward products. */
const adapterShapes = [
  { name: 'x·Aᵀ (forward, down)', m: 512, n: 8, k: 1024, transA: false, transB: true },
  { name: 'h·Bᵀ (forward, up)', m: 512, n: 1024, k: 8, transA: false, transB: true },
  { name: 'gyᵀ·h (grad B)', m: 1024, n: 8, k: 512, transA: true, transB: false },
  { name: 'gy·B (grad h)', m: 512, n: 8, k: 1024, transA: false, transB: false },
  { name: 'ghᵀ·x (grad A)', m: 8, n: 1024, k: 512, transA: true, transB: false },
  { name: 'gh·A (grad x)', m: 512, n: 1024, k: 8, transA: false, transB: false },
];

function squareShapes(quick) {
  const sizes = quick ? [256, 512] : [512, 1024, 2048];
  const shapes = sizes.map((size) => ({ name: `${size}³`, m: size, n: size, k: size, transA: false, transB: false }));
  if (!quick) {
    shapes.push({ name: '1024³ Aᵀ·B', m: 1024, n: 1024, k: 1024, transA: true, transB: false });
    shapes.push({ name: '1024³ A·Bᵀ', m: 1024, n: 1024, k: 1024, transA: false, transB: true });
    shapes.push({ name: '1024³ Aᵀ·Bᵀ', m: 1024, n: 1024, k: 1024, transA: true, transB: true });
  }
  return shapes;
}

/** Median seconds per call of bidora's matmul on `shape`, timed by the benchmark package. */
function bidoraSeconds(bidora, shape, quick) {
  const { Tensor, ops } = bidora;
  const a = Tensor.randn(shape.transA ? [shape.k, shape.m] : [shape.m, shape.k], { seed: 1 });
  const b = Tensor.randn(shape.transB ? [shape.n, shape.k] : [shape.k, shape.n], { seed: 2 });
  const options = { transposeA: shape.transA, transposeB: shape.transB };
  let result;
  const bench = new Benchmark(shape.name, () => ops.matmul(a, b, options).dispose(), {
    maxTime: quick ? 0.2 : 2,
    minSamples: quick ? 3 : 10,
    onComplete: (event) => {
      result = median(event.target.stats.sample);
    },
  });
  bench.run();
  a.dispose();
  b.dispose();
  return result;
}

function repeatsFor(shape, quick) {
  const flops = 2 * shape.m * shape.n * shape.k;
  const target = quick ? 0.2 : 2; // seconds of OpenBLAS work, like the benchmark package's maxTime
  return Math.max(5, Math.min(20_000, Math.round(target / (flops / 150e9))));
}

export function runGemm(bidora, { quick, threads }) {
  const rows = [];
  const previousThreads = bidora.setNumThreads(threads);
  const shapes = [...squareShapes(quick), ...adapterShapes];
  for (const shape of shapes) {
    const flops = 2 * shape.m * shape.n * shape.k;
    const ours = bidoraSeconds(bidora, shape, quick);
    const theirs = openblasSeconds(shape, threads, repeatsFor(shape, quick));
    const row = {
      shape: shape.name,
      m: shape.m,
      n: shape.n,
      k: shape.k,
      transA: shape.transA,
      transB: shape.transB,
      threads,
      bidoraGflops: flops / ours / 1e9,
      openblasGflops: theirs === null ? null : flops / theirs / 1e9,
    };
    row.ratio = theirs === null ? null : theirs / ours;
    rows.push(row);
    const against =
      theirs === null ? '' : `  OpenBLAS ${row.openblasGflops.toFixed(1).padStart(6)}  ratio ${row.ratio.toFixed(2)}`;
    console.log(
      `${shape.name.padEnd(24)} ${threads}t  bidora ${row.bidoraGflops.toFixed(1).padStart(6)} GFLOP/s${against}`,
    );
  }
  bidora.setNumThreads(previousThreads);
  return rows;
}
