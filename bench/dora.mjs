// One adapted layer, forward + backward: LoRA, bidora's fused DoRA, and a naive DoRA built from bidora's own ops
// the way PEFT computes it (B·A materialised, the full row norm of W0 + s·B·A), timed side by side; PyTorch as a
// second baseline where Debian's python3-torch is installed. Two settings: the layer's input is data (no input
// gradient, as in a first layer and as PEFT benchmarks time a layer), and an inner layer (input gradient too).
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
function naiveDora({ Tensor, ops, tidy }, layer, inputGradient) {
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
    if (inputGradient) ops.add(ops.matmul(gradCombined, weight), ops.matmul(gradHidden, loraA));
  });
}

function lora({ ops }, layer, needs) {
  const { output, saved } = ops.loraForward(layer);
  const grads = ops.loraBackward(saved, layer.gradOutput, needs);
  output.dispose();
  disposeAll(grads);
}

function dora({ ops }, layer, detachNorm, needs) {
  const { output, saved } = ops.doraForward({ ...layer, detachNorm });
  const grads = ops.doraBackward(saved, layer.gradOutput, needs);
  output.dispose();
  disposeAll(grads);
}

function time(name, fn, quick) {
  let seconds;
  new Benchmark(name, fn, {
    maxTime: quick ? 0.3 : 1,
    minSamples: quick ? 3 : 8,
    onComplete: (event) => {
      seconds = median(event.target.stats.sample);
    },
  }).run();
  return seconds;
}

const middle = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

const settings = [
  { name: 'input is data', inputGradient: false },
  { name: 'inner layer', inputGradient: true },
];

function torchBaseline(threads, quick) {
  const script = new URL('./torch/dora.py', import.meta.url).pathname;
  const result = spawnSync(
    pythonWithTorch(),
    [script, JSON.stringify(shapes), JSON.stringify(settings), String(threads), quick ? '1' : '0'],
    { encoding: 'utf8' },
  );
  if (result.status !== 0) {
    const reason = result.stderr.includes('No module named') ? 'python3-torch is not installed' : result.stderr;
    console.log(`PyTorch baseline skipped: ${reason.trim().split('\n').at(-1)}`);
    return null;
  }
  return JSON.parse(result.stdout.trim().split('\n').at(-1));
}

function timeShape(bidora, shape, setting, quick) {
  const layer = makeLayer(bidora, shape);
  const label = `(N,K,M,r)=(${shape.n},${shape.k},${shape.m},${shape.r})`;
  // With the input as data only the adapter's own gradients are asked for, so its input products are skipped.
  const needs = setting.inputGradient ? undefined : { input: false };
  const variants = {
    lora: () => lora(bidora, layer, needs),
    dora: () => dora(bidora, layer, true, needs),
    doraThroughNorm: () => dora(bidora, layer, false, needs),
    naiveDora: () => naiveDora(bidora, layer, setting.inputGradient),
  };
  // Rounds of all four side by side, the ratios taken within each round: this machine drifts between rounds.
  const rounds = [];
  for (let round = 0; round < (quick ? 1 : 4); round += 1) {
    rounds.push(
      Object.fromEntries(Object.entries(variants).map(([name, fn]) => [name, time(`${name} ${label}`, fn, quick)])),
    );
  }
  disposeAll(layer);
  const ms = (name) => middle(rounds.map((round) => round[name])) * 1e3;
  const ratio = (over, under) => middle(rounds.map((round) => round[over] / round[under]));
  const row = {
    ...shape,
    setting: setting.name,
    inputGradient: setting.inputGradient,
    rounds: rounds.length,
    loraMs: ms('lora'),
    doraMs: ms('dora'),
    doraThroughNormMs: ms('doraThroughNorm'),
    naiveDoraMs: ms('naiveDora'),
    doraOverLora: ratio('dora', 'lora'),
    doraThroughNormOverLora: ratio('doraThroughNorm', 'lora'),
    naiveOverDora: ratio('naiveDora', 'dora'),
  };
  console.log(
    `${label.padEnd(30)} LoRA ${row.loraMs.toFixed(2)} ms  DoRA ${row.doraMs.toFixed(2)} ms ` +
      `(${row.doraOverLora.toFixed(2)}× LoRA; through the norm ${row.doraThroughNormOverLora.toFixed(2)}×)  ` +
      `naive DoRA ${row.naiveDoraMs.toFixed(2)} ms (${row.naiveOverDora.toFixed(2)}× fused)`,
  );
  return row;
}

export function runDora(bidora, { quick, threads }) {
  const previousThreads = bidora.setNumThreads(threads);
  const rows = [];
  for (const setting of settings) {
    console.log(`-- ${setting.name} (${setting.inputGradient ? 'with' : 'no'} input gradient)`);
    for (const shape of shapes) rows.push({ threads, ...timeShape(bidora, shape, setting, quick) });
  }
  bidora.setNumThreads(previousThreads);
  const torch = torchBaseline(threads, quick);
  if (torch !== null) {
    for (const [index, entry] of torch.entries()) {
      const row = rows[index];
      Object.assign(row, { torchLoraMs: entry.loraMs, torchDoraMs: entry.doraMs });
      console.log(
        `PyTorch ${entry.version} ${row.setting} (N,K,M,r)=(${row.n},${row.k},${row.m},${row.r})`.padEnd(58) +
          ` LoRA ${entry.loraMs.toFixed(2)} ms  PEFT-style DoRA ${entry.doraMs.toFixed(2)} ms  ` +
          `(bidora fused DoRA ${(entry.doraMs / row.doraMs).toFixed(2)}× faster)`,
      );
    }
  }
  return rows;
}
