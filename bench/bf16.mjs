// bfloat16 frozen weights (issue 17): each figure a ratio of a bfloat16 base against a float32 base measured in the
// same run, in alternating rounds (this machine's speed drifts between rounds more than within one), the ratio taken
// within each round and the median reported:
// - GEMM with a bfloat16 B against the float32 kernel at 2048³ and the BERT-base layer shapes, in GFLOP/s and as a
//   fraction of this machine's peaks, measured here by register-only loops (bench/native/peak.cc);
// - the BERT-base-sized 2-layer stack of bench/bert.mjs: a DoRA training step and one BiDoRA iteration, and what
//   memory() counts for each model;
// - the GPT-2-small-sized causal LM of bench/causal-lm.mjs: a DoRA training step and one BiDoRA iteration at 8 × 128;
// - PyTorch's torch.autocast('cpu', dtype=torch.bfloat16) DoRA step on the BERT stack, where python3-torch is installed.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import Benchmark from 'benchmark';

import { median } from './baselines.mjs';
import { makeBatch, makeModel as makeBert, shape as bertShape } from './bert.mjs';
import { configs as bilevelConfigs, makeExamples } from './bilevel.mjs';
import { makeModel as makeGpt2, shape as gpt2Shape, tokenRows } from './causal-lm.mjs';
import { pythonWithTorch } from './python.mjs';

const dtypes = ['float32', 'bfloat16'];

/** Median seconds of `fn`, timed by the benchmark package. */
function time(name, fn, quick) {
  let seconds;
  new Benchmark(name, fn, {
    maxTime: quick ? 0.3 : 1.5,
    minSamples: quick ? 2 : 5,
    onComplete: (event) => (seconds = median(event.target.stats.sample)),
  }).run();
  return seconds;
}

/** `rounds` alternating timings of the float32 and the bfloat16 form: the median time of each and of their ratio. */
function alternate(name, run, rounds, quick) {
  const samples = { float32: [], bfloat16: [] };
  const ratios = [];
  for (let round = 0; round < rounds; round += 1) {
    for (const dtype of dtypes) samples[dtype].push(time(`${name} ${dtype}`, run[dtype], quick));
    ratios.push(samples.float32.at(-1) / samples.bfloat16.at(-1));
  }
  return { float32: median(samples.float32), bfloat16: median(samples.bfloat16), ratio: median(ratios) };
}

/** This machine's bfloat16 and float32 peaks on `threads` threads, or null where peak.cc cannot be built or run. */
function peaks(threads) {
  const dir = join(tmpdir(), 'bidora-bench');
  mkdirSync(dir, { recursive: true });
  const binary = join(dir, 'peak');
  const source = new URL('./native/peak.cc', import.meta.url).pathname;
  const flags = ['-O2', '-mavx512f', '-mavx512bf16', '-pthread', source, '-o', binary];
  if (spawnSync('g++', flags, { encoding: 'utf8' }).status !== 0 || !existsSync(binary)) return null;
  try {
    return JSON.parse(execFileSync(binary, [String(threads)], { encoding: 'utf8' }));
  } catch {
    return null; // built, but this CPU lacks AVX512-BF16
  }
}

function gemmRows(bidora, quick, threads) {
  const { Tensor, ops } = bidora;
  const shapes = [
    { name: '2048³', m: 2048, n: 2048, k: 2048, transposeB: false },
    { name: 'x·W0ᵀ 1024×768×768', m: 1024, n: 768, k: 768, transposeB: true },
    { name: 'x·W0ᵀ 1024×3072×768', m: 1024, n: 3072, k: 768, transposeB: true },
    { name: 'gy·W0 1024×768×3072', m: 1024, n: 768, k: 3072, transposeB: false },
  ];
  const peak = quick ? null : peaks(threads);
  return shapes.map((shape) => {
    const a = Tensor.randn([shape.m, shape.k], { seed: 1 });
    const float32 = Tensor.randn(shape.transposeB ? [shape.n, shape.k] : [shape.k, shape.n], { seed: 2 });
    const weights = { float32, bfloat16: float32.to('bfloat16') };
    const product = (dtype) => () => ops.matmul(a, weights[dtype], { transposeB: shape.transposeB }).dispose();
    const timed = alternate(shape.name, { float32: product('float32'), bfloat16: product('bfloat16') }, 3, quick);
    const flops = 2 * shape.m * shape.n * shape.k;
    const row = {
      suite: 'gemm',
      name: shape.name,
      threads,
      float32Gflops: flops / timed.float32 / 1e9,
      bfloat16Gflops: flops / timed.bfloat16 / 1e9,
      ratio: timed.ratio,
      bfloat16PeakGflops: peak?.bf16Gflops,
      float32PeakGflops: peak?.fp32Gflops,
    };
    const ofPeak = peak
      ? `  (${((100 * row.bfloat16Gflops) / peak.bf16Gflops).toFixed(0)}% of the bf16 peak ${peak.bf16Gflops.toFixed(0)}, ` +
        `float32 ${((100 * row.float32Gflops) / peak.fp32Gflops).toFixed(0)}% of ${peak.fp32Gflops.toFixed(0)})`
      : '';
    console.log(
      `gemm ${shape.name.padEnd(22)} float32 ${row.float32Gflops.toFixed(0).padStart(4)} GFLOP/s, bfloat16 ` +
        `${row.bfloat16Gflops.toFixed(0).padStart(4)} GFLOP/s: ${row.ratio.toFixed(2)}×${ofPeak}`,
    );
    for (const tensor of [a, float32, weights.bfloat16]) tensor.dispose();
    return row;
  });
}

/** A training step of `model` on `inputs` with no optimizer: forward, backward, gradients dropped. */
function trainingStep(bidora, model, inputs) {
  return () => {
    bidora.tidy(() => model.forward(inputs).loss.backward());
    for (const parameter of model.parameters()) {
      parameter.grad?.dispose();
      parameter.grad = undefined;
    }
  };
}

/** Bytes memory() counts for what `build` makes, and the model. */
function measuredBuild(bidora, build) {
  const before = bidora.memory().bytes;
  const model = build();
  return { model, bytes: bidora.memory().bytes - before };
}

/** Alternating timings of one BiDoRA iteration on `lower` and `upper`, a model of each dtype from `build(dtype)`. */
function bidoraIteration(bidora, name, build, lower, upper, rounds, quick) {
  const trainers = Object.fromEntries(
    dtypes.map((dtype) => [
      dtype,
      new bidora.train.BiLevelTrainer({ model: build(dtype), batchSize: lower.length, log: 'none' }),
    ]),
  );
  const timed = alternate(
    name,
    Object.fromEntries(dtypes.map((dtype) => [dtype, () => trainers[dtype].step(lower, upper)])),
    rounds,
    quick,
  );
  for (const trainer of Object.values(trainers)) {
    trainer.dispose();
    trainer.model.dispose();
  }
  return timed;
}

function bertRows(bidora, quick, threads) {
  const rounds = quick ? 1 : 5;
  const rows = [];
  // The DoRA step of bench/bert.mjs.
  const dora = Object.fromEntries(
    dtypes.map((dtype) => [dtype, measuredBuild(bidora, () => makeBert(bidora, 'dora').to(dtype).train())]),
  );
  const batch = makeBatch(1);
  const step = alternate(
    'bert dora',
    Object.fromEntries(dtypes.map((dtype) => [dtype, trainingStep(bidora, dora[dtype].model, batch)])),
    rounds,
    quick,
  );
  rows.push({ suite: 'bert', name: 'DoRA step 8×128', threads, ...msOf(step), ...bytesOf(dora) });
  for (const { model } of Object.values(dora)) model.dispose();
  // One BiDoRA iteration of bench/bilevel.mjs's BERT-base-sized config.
  const config = bilevelConfigs.find((entry) => entry.hidden === 768);
  const lower = makeExamples(config, config.batch, 1);
  const upper = makeExamples(config, config.batch, 2);
  const build = (dtype) => makeBert(bidora, 'bidora').to(dtype);
  const iteration = bidoraIteration(bidora, 'bert bidora', build, lower, upper, rounds, quick);
  rows.push({ suite: 'bert', name: 'BiDoRA iteration 8×128', threads, ...msOf(iteration) });
  return rows;
}

function gpt2Rows(bidora, quick, threads) {
  const models = Object.fromEntries(
    dtypes.map((dtype) => [
      dtype,
      measuredBuild(bidora, () => {
        const model = makeGpt2(bidora).to(dtype);
        bidora.adapters.apply(model, {
          method: 'dora',
          r: gpt2Shape.r,
          alpha: gpt2Shape.alpha,
          targetModules: ['c_attn'],
        });
        return model.train();
      }),
    ]),
  );
  const inputIds = tokenRows(1, 8, 128);
  const step = alternate(
    'gpt2 dora',
    Object.fromEntries(
      dtypes.map((dtype) => [dtype, trainingStep(bidora, models[dtype].model, { inputIds, labels: inputIds })]),
    ),
    quick ? 1 : 5,
    quick,
  );
  for (const { model } of Object.values(models)) model.dispose();
  // One BiDoRA iteration on the same shapes: 8 × 128 tokens in each split, the loss on every token.
  const examples = (seed) => tokenRows(seed, 8, 128).map((ids) => ({ inputIds: ids, label: ids }));
  const [lower, upper] = [examples(2), examples(3)];
  const build = (dtype) => {
    const model = makeGpt2(bidora).to(dtype);
    const adapter = { method: 'bidora', r: gpt2Shape.r, alpha: gpt2Shape.alpha, targetModules: ['c_attn'] };
    bidora.adapters.apply(model, adapter);
    return model;
  };
  const iteration = bidoraIteration(bidora, 'gpt2 bidora', build, lower, upper, quick ? 1 : 3, quick);
  return [
    { suite: 'gpt2', name: 'DoRA step 8×128', threads, ...msOf(step), ...bytesOf(models) },
    { suite: 'gpt2', name: 'BiDoRA iteration 8×128', threads, ...msOf(iteration) },
  ];
}

const msOf = (timed) => ({
  float32Ms: timed.float32 * 1e3,
  bfloat16Ms: timed.bfloat16 * 1e3,
  ratio: timed.ratio,
});
const bytesOf = (built) => ({ float32Bytes: built.float32.bytes, bfloat16Bytes: built.bfloat16.bytes });

/** PyTorch's DoRA step on the BERT stack under torch.autocast in bfloat16 (bench/torch/bert.py), or null. */
function torchAutocast(quick) {
  const script = new URL('./torch/bert.py', import.meta.url).pathname;
  const args = [script, JSON.stringify(bertShape), quick ? '1' : '0', 'cpu', 'highest', 'autocast'];
  const result = spawnSync(pythonWithTorch(), args, { encoding: 'utf8' });
  if (result.status !== 0) {
    console.log(`PyTorch autocast baseline skipped: ${result.stderr.trim().split('\n').at(-1)}`);
    return null;
  }
  return JSON.parse(result.stdout).find((entry) => entry.method === 'dora');
}

export function runBf16(bidora, { quick, threads }) {
  const previousThreads = bidora.setNumThreads(threads);
  const info = bidora.buildInfo();
  console.log(
    info.avx512Bf16 && info.isa === 'avx512'
      ? 'bfloat16 products: vdpbf16ps (AVX512-BF16), activations rounded to bfloat16'
      : 'bfloat16 products: weights widened to float32 (no AVX512-BF16 on this path)',
  );
  const rows = [
    ...gemmRows(bidora, quick, threads),
    ...bertRows(bidora, quick, threads),
    ...gpt2Rows(bidora, quick, threads),
  ];
  bidora.setNumThreads(previousThreads);
  const torch = torchAutocast(quick);
  for (const row of rows.filter((entry) => entry.suite !== 'gemm')) {
    const memory =
      row.float32Bytes === undefined
        ? ''
        : `; model ${(row.float32Bytes / 2 ** 20).toFixed(0)} MiB → ${(row.bfloat16Bytes / 2 ** 20).toFixed(0)} MiB`;
    console.log(
      `${row.suite} ${row.name.padEnd(24)} float32 base ${row.float32Ms.toFixed(1)} ms, bfloat16 base ` +
        `${row.bfloat16Ms.toFixed(1)} ms: ${row.ratio.toFixed(2)}×${memory}`,
    );
    if (torch && row.suite === 'bert' && row.name.startsWith('DoRA')) {
      row.torchAutocastMs = torch.msPerStep;
      row.torchVersion = torch.version;
      console.log(
        `  PyTorch ${torch.version} autocast bfloat16: ${torch.msPerStep.toFixed(1)} ms; bidora's bfloat16 base ` +
          `${(torch.msPerStep / row.bfloat16Ms).toFixed(2)}× as fast`,
      );
    }
  }
  return rows;
}
