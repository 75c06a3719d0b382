// One adapted layer, forward + backward: LoRA, bidora's fused DoRA, and a naive DoRA built from bidora's own ops
// the way PEFT computes it (B·A materialised, the full row norm of W0 + s·B·A), timed side by side; PyTorch as a
// second baseline where Debian's python3-torch is installed.
import { spawnSync } from 'node:child_process';

import Benchmark from 'benchmark';

import { median } from './baselines.mjs';
import { pythonWithTorch } from './python.mjs';

const shapes = [
  { n: 512, k: 1024, m: 1024, r: 8 },
  { n: 256, k: 4096, m: 4096, r: 16 },
  { n: 2048, k: 768, m: 768, r: 4 },
];

function makeLayer({ Tensor, ops }, { n, k, m, r }) {
  const weight = ops.scale(Tensor.randn([m, k], { seed: 1 }), 1 / Math.sqrt(k));
  return {
    input: Tensor.randn([n, k], { seed: 2 }),
    weight,
    bias: Tensor.randn([m], { seed: 3 }),
    loraA: ops.scale(Tensor.randn([r, k], { seed: 4 }), 1 / Math.sqrt(k)),
    loraB: ops.scale(Tensor.randn([m, r], { seed: 5 }), 0.01),
    magnitude: Tensor.uniform([m], { seed: 6, low: 0.5, high: 1.5 }),
    scale: 2,
    gradOutput: Tensor.randn([n, m], { seed: 7 }),
  };
}

function disposeAll(values) {
  for (const value of Object.values(values)) value?.dispose?.();
}

/** PEFT's DoRA from bidora ops: materialise B·A and V, take full row norms (detached, as PEFT), then backward. */
function naiveDora({ Tensor, ops, tidy }, layer) {
  tidy(() => {
    const { input, weight, bias, loraA, loraB, magnitude, scale, gradOutput } = layer;
    const loraWeight = ops.matmul(loraB, loraA);
    const direction = ops.add(weight, ops.scale(loraWeight, scale));
    const squared = ops.sum(ops.mul(direction, direction), { axis: 1 }).toFloat32Array();
    const norm = squared.map(Math.sqrt);
    const magnitudes = magnitude.toFloat32Array();
    const gain = Tensor.from(norm.map((value, index) => magnitudes[index] / value));
    const hidden = ops.matmul(input, loraA, { transposeB: true });
    const combined = ops.add(
      ops.linear(input, weight),
      ops.scale(ops.matmul(hidden, loraB, { transposeB: true }), scale),
    );
    ops.add(ops.mul(combined, gain), bias);
    // Backward with the norm detached.
    const gradCombined = ops.mul(gradOutput, gain);
    const dots = ops.sum(ops.mul(gradOutput, combined), { axis: 0 }).toFloat32Array();
    Tensor.from(dots.map((value, index) => value / norm[index]));
    ops.sum(gradOutput, { axis: 0 });
    const gradHidden = ops.scale(ops.matmul(gradCombined, loraB), scale);
    ops.scale(ops.matmul(gradCombined, hidden, { transposeA: true }), scale);
    ops.matmul(gradHidden, input, { transposeA: true });
    ops.add(ops.matmul(gradCombined, weight), ops.matmul(gradHidden, loraA));
  });
}

function lora({ ops }, layer) {
  const { output, saved } = ops.loraForward(layer);
  const grads = ops.loraBackward(saved, layer.gradOutput);
  output.dispose();
  disposeAll(grads);
}

function dora({ ops }, layer, detachNorm) {
  const { output, saved } = ops.doraForward({ ...layer, detachNorm });
  const grads = ops.doraBackward(saved, layer.gradOutput);
  output.dispose();
  disposeAll(grads);
}

function time(name, fn, quick) {
  let seconds;
  new Benchmark(name, fn, {
    maxTime: quick ? 0.3 : 3,
    minSamples: quick ? 3 : 8,
    onComplete: (event) => {
      seconds = median(event.target.stats.sample);
    },
  }).run();
  return seconds;
}

function torchBaseline(threads, quick) {
  const script = new URL('./torch/dora.py', import.meta.url).pathname;
  const result = spawnSync(pythonWithTorch(), [script, JSON.stringify(shapes), String(threads), quick ? '1' : '0'], {
    encoding: 'utf8',
  });
  if (result.status !== 0) {
    const reason = result.stderr.includes('No module named') ? 'python3-torch is not installed' : result.stderr;
    console.log(`PyTorch baseline skipped: ${reason.trim().split('\n').at(-1)}`);
    return null;
  }
  return JSON.parse(result.stdout.trim().split('\n').at(-1));
}

export function runDora(bidora, { quick, threads }) {
  const previousThreads = bidora.setNumThreads(threads);
  const rows = [];
  for (const shape of shapes) {
    const layer = makeLayer(bidora, shape);
    const label = `(N,K,M,r)=(${shape.n},${shape.k},${shape.m},${shape.r})`;
    const loraSeconds = time(`lora ${label}`, () => lora(bidora, layer), quick);
    const doraSeconds = time(`dora ${label}`, () => dora(bidora, layer, true), quick);
    const doraThroughNormSeconds = time(`dora-norm ${label}`, () => dora(bidora, layer, false), quick);
    const naiveSeconds = time(`naive ${label}`, () => naiveDora(bidora, layer), quick);
    disposeAll(layer);
    const row = {
      ...shape,
      threads,
      loraMs: loraSeconds * 1e3,
      doraMs: doraSeconds * 1e3,
      doraThroughNormMs: doraThroughNormSeconds * 1e3,
      naiveDoraMs: naiveSeconds * 1e3,
      doraOverLora: doraSeconds / loraSeconds,
      doraThroughNormOverLora: doraThroughNormSeconds / loraSeconds,
      naiveOverDora: naiveSeconds / doraSeconds,
    };
    rows.push(row);
    console.log(
      `${label.padEnd(30)} LoRA ${row.loraMs.toFixed(2)} ms  DoRA ${row.doraMs.toFixed(2)} ms ` +
        `(${row.doraOverLora.toFixed(2)}× LoRA; through the norm ${row.doraThroughNormOverLora.toFixed(2)}×)  ` +
        `naive DoRA ${row.naiveDoraMs.toFixed(2)} ms (${row.naiveOverDora.toFixed(2)}× fused)`,
    );
  }
  bidora.setNumThreads(previousThreads);
  const torch = torchBaseline(threads, quick);
  if (torch !== null) {
    for (const [index, entry] of torch.entries()) {
      Object.assign(rows[index], { torchLoraMs: entry.loraMs, torchDoraMs: entry.doraMs });
      const { n, k, m, r } = shapes[index];
      console.log(
        `PyTorch ${torch[index].version} (N,K,M,r)=(${n},${k},${m},${r})`.padEnd(38) +
          ` LoRA ${entry.loraMs.toFixed(2)} ms  PEFT-style DoRA ${entry.doraMs.toFixed(2)} ms  ` +
          `(bidora fused DoRA ${(entry.doraMs / rows[index].doraMs).toFixed(2)}× faster)`,
      );
    }
  }
  return rows;
}
