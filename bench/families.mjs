// Tokens per second for a DoRA training step (forward + backward, DoRA r 8 on query and value, the head trained) of
// a DistilBERT-sized encoder (6 layers, hidden 768, 12 heads, sequence 128, batch 8) and an ESM-2-8M-sized protein
// model (6 layers, hidden 320, 20 heads, sequence 256, batch 8), with plain PyTorch's same models as the baseline in
// the same run where Debian's python3-torch is installed.
import { spawnSync } from 'node:child_process';

import Benchmark from 'benchmark';

import { median } from './baselines.mjs';
import { pythonWithTorch } from './python.mjs';

const families = [
  {
    family: 'distilbert',
    config: { architectures: ['DistilBertForSequenceClassification'], dim: 768, n_layers: 6, n_heads: 12 },
    targets: ['q_lin', 'v_lin'],
    shape: { batch: 8, seq: 128, hidden: 768, heads: 12, intermediate: 3072, layers: 6, vocab: 30522, r: 8 },
  },
  {
    family: 'esm',
    config: {
      architectures: ['EsmForSequenceClassification'],
      hidden_size: 320,
      num_hidden_layers: 6,
      num_attention_heads: 20,
      intermediate_size: 1280,
      position_embedding_type: 'rotary',
      token_dropout: true,
      mask_token_id: 32,
      pad_token_id: 1,
    },
    targets: ['query', 'value'],
    shape: { batch: 8, seq: 256, hidden: 320, heads: 20, intermediate: 1280, layers: 6, vocab: 33, r: 8 },
  },
];

function makeModel(bidora, { config, targets, shape }) {
  const model = bidora.models.fromConfig({
    ...config,
    vocab_size: shape.vocab,
    max_position_embeddings: 1026,
    hidden_dim: shape.intermediate,
    num_labels: 2,
  });
  bidora.adapters.apply(model, {
    method: 'dora',
    r: shape.r,
    alpha: 16,
    targetModules: targets,
    modulesToSave: ['classifier'],
  });
  return model;
}

function makeBatch(shape) {
  let state = 7;
  const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
  const inputIds = Array.from({ length: shape.batch }, () =>
    Array.from({ length: shape.seq }, () => 4 + (next() % (shape.vocab - 8))),
  );
  return { inputIds, labels: inputIds.map((_, index) => index % 2) };
}

function torchBaseline(shape, family, quick) {
  const script = new URL('./torch/families.py', import.meta.url).pathname;
  const result = spawnSync(pythonWithTorch(), [script, JSON.stringify({ ...shape, family }), quick ? '1' : '0'], {
    encoding: 'utf8',
  });
  if (result.status !== 0) {
    console.log(`PyTorch baseline skipped: ${result.stderr.trim().split('\n').at(-1)}`);
    return null;
  }
  return JSON.parse(result.stdout.trim().split('\n').at(-1));
}

export function runFamilies(bidora, { quick, threads }) {
  const previousThreads = bidora.setNumThreads(threads);
  const rows = [];
  for (const entry of families) {
    const { shape, family } = entry;
    const model = makeModel(bidora, entry);
    model.train();
    const batch = makeBatch(shape);
    let seconds;
    new Benchmark(
      family,
      () => {
        bidora.tidy(() => model.forward(batch).loss.backward());
        for (const parameter of model.parameters()) {
          parameter.grad?.dispose();
          parameter.grad = undefined;
        }
      },
      {
        maxTime: quick ? 0.5 : 6,
        minSamples: quick ? 2 : 5,
        onComplete: (event) => (seconds = median(event.target.stats.sample)),
      },
    ).run();
    model.dispose();
    const tokens = shape.batch * shape.seq;
    const row = { family, threads, ...shape, msPerStep: seconds * 1e3, tokensPerSecond: tokens / seconds };
    const torch = torchBaseline(shape, family, quick);
    if (torch !== null) {
      Object.assign(row, {
        torchVersion: torch.version,
        torchMsPerStep: torch.msPerStep,
        ratio: torch.msPerStep / row.msPerStep,
      });
    }
    rows.push(row);
    console.log(
      `${family.padEnd(10)} ${threads}t  ${row.msPerStep.toFixed(1).padStart(7)} ms/step  ${row.tokensPerSecond.toFixed(0).padStart(6)} tokens/s` +
        (torch
          ? `  PyTorch ${torch.version} ${torch.msPerStep.toFixed(1)} ms/step: bidora ${row.ratio.toFixed(2)}× as fast`
          : ''),
    );
  }
  bidora.setNumThreads(previousThreads);
  return rows;
}
