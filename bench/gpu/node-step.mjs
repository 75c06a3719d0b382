// The BERT-base-sized training step of bench/bert.mjs (8 × 128 tokens, 2 layers, adapters on query and value) run on
// 'cuda' from Node, beside PyTorch on the same GPU (bench/torch/bert.py with device cuda) when python3 has torch with
// CUDA. Each step ends by reading the loss back, so the time covers the kernels, not only their launches.
// Usage (on a GPU machine, after `npm run build`): node bench/gpu/node-step.mjs [--quick]; with $OUT set, JSON goes to
// $OUT/node_step.json.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { makeBatch, makeModel, shape } from '../bert.mjs';

const require = createRequire(import.meta.url);
const bidora = require('bidora');
const quick = process.argv.includes('--quick');
const timedSteps = quick ? 5 : 30;

if (!bidora.devices().includes('cuda')) {
  console.log('no usable CUDA GPU: bidora.devices() is', bidora.devices());
  process.exit(3);
}

function msPerStep(method, dtype) {
  const model = makeModel(bidora, method);
  model.to(dtype); // 'bfloat16': the frozen matrices (BF16 tensor cores), adapters and head float32
  model.to('cuda');
  model.train();
  const batch = makeBatch(1);
  const trainable = model.parameters().filter((parameter) => parameter.requiresGrad);
  const step = () => {
    const loss = bidora.tidy(() => {
      const { loss } = model.forward(batch);
      loss.backward();
      return loss.toFloat32Array()[0];
    });
    for (const parameter of trainable) {
      parameter.grad?.dispose();
      parameter.grad = undefined;
    }
    return loss;
  };
  for (let warm = 0; warm < 3; warm += 1) step();
  const samples = [];
  for (let index = 0; index < timedSteps; index += 1) {
    const start = performance.now();
    step();
    samples.push(performance.now() - start);
  }
  model.dispose?.();
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1];
}

function torchOnCuda(precision, autocast) {
  const script = new URL('../torch/bert.py', import.meta.url).pathname;
  const args = [script, JSON.stringify(shape), quick ? '1' : '0', 'cuda', precision, autocast ? 'autocast' : 'plain'];
  const result = spawnSync('python3', args, { encoding: 'utf8' });
  if (result.status !== 0) {
    console.log(`PyTorch on cuda did not run: ${(result.stderr || result.error?.message || '').trim().slice(-400)}`);
    return [];
  }
  return JSON.parse(result.stdout);
}

// 'highest' keeps products in float32 (both libraries' default); 'high' rounds their inputs to TF32; a bfloat16 base
// runs its products on BF16 tensor cores, against PyTorch's torch.autocast in bfloat16.
const tokens = shape.batch * shape.seq;
const rows = [];
const settings = [
  { precision: 'highest', dtype: 'float32', methods: ['lora', 'dora', 'full'] },
  { precision: 'high', dtype: 'float32', methods: ['lora', 'dora', 'full'] },
  { precision: 'highest', dtype: 'bfloat16', methods: ['lora', 'dora'] },
];
for (const { precision, dtype, methods } of settings) {
  bidora.setMatmulPrecision(precision);
  const torch = torchOnCuda(precision, dtype === 'bfloat16');
  for (const method of methods) {
    const ms = msPerStep(method, dtype);
    const baseline = torch.find((entry) => entry.method === method);
    rows.push({
      precision,
      dtype,
      method,
      bidoraMsPerStep: ms,
      torchMsPerStep: baseline?.msPerStep,
      torch: baseline?.version,
    });
    const versus = baseline
      ? `, PyTorch ${baseline.msPerStep.toFixed(2)} ms (bidora ${(baseline.msPerStep / ms).toFixed(2)}×)`
      : '';
    const rate = `${Math.round(tokens / (ms / 1e3))} tokens/s`;
    const label = dtype === 'bfloat16' ? 'bf16 base' : precision;
    console.log(`${label.padEnd(9)} ${method.padEnd(4)} ${ms.toFixed(2)} ms per step, ${rate}${versus}`);
  }
}
if (process.env.OUT) writeFileSync(`${process.env.OUT}/node_step.json`, JSON.stringify(rows, null, 2));
