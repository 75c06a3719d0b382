// Tokens per second for forward + backward of a BERT-base-sized stack (hidden 768, 12 heads, intermediate 3072,
// sequence 128, batch 8, 2 layers) with adapters on query and value: LoRA, DoRA, BiDoRA's DoRA (through the norm),
// and full fine-tuning; PyTorch as a baseline where Debian's python3-torch is installed.
import { spawnSync } from 'node:child_process';

import Benchmark from 'benchmark';

import { median } from './baselines.mjs';
import { pythonWithTorch } from './python.mjs';

const shape = { batch: 8, seq: 128, hidden: 768, heads: 12, intermediate: 3072, layers: 2, vocab: 30522, r: 8 };

function makeModel(bidora, method) {
  const model = bidora.models.fromConfig({
    architectures: ['BertForSequenceClassification'],
    model_type: 'bert',
    vocab_size: shape.vocab,
    hidden_size: shape.hidden,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    intermediate_size: shape.intermediate,
    max_position_embeddings: 512,
    num_labels: 2,
  });
  if (method !== 'full') {
    bidora.adapters.apply(model, {
      method: method === 'dora-norm' ? 'bidora' : method,
      r: shape.r,
      alpha: 16,
      targetModules: ['query', 'value'],
      modulesToSave: ['classifier'],
    });
  }
  return model;
}

function makeBatch(seed) {
  let state = seed;
  const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
  const inputIds = Array.from({ length: shape.batch }, () =>
    Array.from({ length: shape.seq }, (_, position) => (position === 0 ? 101 : 1000 + (next() % 20000))),
  );
  return { inputIds, labels: inputIds.map((_, index) => index % 2) };
}

function step(bidora, model, batch) {
  bidora.tidy(() => {
    const { loss } = model.forward(batch);
    loss.backward();
  });
  for (const parameter of model.parameters()) {
    parameter.grad?.dispose();
    parameter.grad = undefined;
  }
}

function torchBaseline(quick) {
  const python = pythonWithTorch();
  const script = new URL('./torch/bert.py', import.meta.url).pathname;
  const result = spawnSync(python, [script, JSON.stringify(shape), quick ? '1' : '0'], { encoding: 'utf8' });
  if (result.status !== 0) {
    console.log(`PyTorch baseline skipped: ${result.stderr.trim().split('\n').at(-1)}`);
    return null;
  }
  return JSON.parse(result.stdout.trim().split('\n').at(-1));
}

export function runBert(bidora, { quick, threads }) {
  const previousThreads = bidora.setNumThreads(threads);
  const tokens = shape.batch * shape.seq;
  const batch = makeBatch(1);
  const rows = [];
  for (const method of ['lora', 'dora', 'dora-norm', 'full']) {
    const model = makeModel(bidora, method);
    model.train();
    let seconds;
    new Benchmark(method, () => step(bidora, model, batch), {
      maxTime: quick ? 0.5 : 6,
      minSamples: quick ? 2 : 5,
      onComplete: (event) => {
        seconds = median(event.target.stats.sample);
      },
    }).run();
    model.dispose();
    const row = { method, threads, ...shape, msPerStep: seconds * 1e3, tokensPerSecond: tokens / seconds };
    rows.push(row);
    console.log(
      `${method.padEnd(10)} ${threads}t  ${row.msPerStep.toFixed(1).padStart(7)} ms/step  ` +
        `${row.tokensPerSecond.toFixed(0).padStart(6)} tokens/s`,
    );
  }
  bidora.setNumThreads(previousThreads);
  const torch = torchBaseline(quick);
  if (torch !== null) {
    for (const entry of torch) {
      const ours = rows.find((row) => row.method === entry.method);
      if (ours)
        Object.assign(ours, {
          torchMsPerStep: entry.msPerStep,
          torchTokensPerSecond: tokens / (entry.msPerStep / 1e3),
        });
      console.log(
        `PyTorch ${entry.version} ${entry.method.padEnd(10)} ${entry.msPerStep.toFixed(1).padStart(7)} ms/step ` +
          `${(tokens / (entry.msPerStep / 1e3)).toFixed(0).padStart(6)} tokens/s` +
          (ours ? `  (bidora ${(entry.msPerStep / ours.msPerStep).toFixed(2)}× as fast)` : ''),
      );
    }
  }
  return rows;
}
