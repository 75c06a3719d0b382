// One BiDoRA iteration (finite-difference hypergradient: lower step, upper pass, two magnitude-only perturbed passes)
// against one DoRA training step on the same model and batch size: a tiny BERT and the BERT-base-sized 2-layer stack.
import Benchmark from 'benchmark';

import { median } from './baselines.mjs';

const configs = [
  {
    name: 'tiny BERT (hidden 128, 4 layers, seq 16)',
    hidden: 128,
    layers: 4,
    heads: 4,
    intermediate: 256,
    seq: 16,
    batch: 16,
    vocab: 64,
  },
  {
    name: 'BERT-base-sized 2-layer stack (seq 128)',
    hidden: 768,
    layers: 2,
    heads: 12,
    intermediate: 3072,
    seq: 128,
    batch: 8,
    vocab: 30522,
  },
];

function makeModel(bidora, config, method) {
  const model = bidora.models.fromConfig({
    architectures: ['BertForSequenceClassification'],
    model_type: 'bert',
    vocab_size: config.vocab,
    hidden_size: config.hidden,
    num_hidden_layers: config.layers,
    num_attention_heads: config.heads,
    intermediate_size: config.intermediate,
    max_position_embeddings: 512,
    num_labels: 2,
  });
  bidora.adapters.apply(model, {
    method,
    r: 8,
    alpha: 16,
    targetModules: ['query', 'value'],
    modulesToSave: ['classifier'],
  });
  return model;
}

function makeExamples(config, count, seed) {
  let state = seed;
  const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
  return Array.from({ length: count }, (_, index) => ({
    inputIds: Array.from({ length: config.seq }, (_, position) =>
      position === 0 ? 2 : 5 + (next() % (config.vocab - 5)),
    ),
    label: index % 2,
  }));
}

function time(name, fn, quick) {
  let seconds;
  new Benchmark(name, fn, {
    maxTime: quick ? 0.5 : 4,
    minSamples: quick ? 2 : 5,
    onComplete: (event) => {
      seconds = median(event.target.stats.sample);
    },
  }).run();
  return seconds;
}

export function runBilevel(bidora, { quick, threads }) {
  const previousThreads = bidora.setNumThreads(threads);
  const rows = [];
  for (const config of configs) {
    const lower = makeExamples(config, config.batch, 1);
    const upper = makeExamples(config, config.batch, 2);
    const doraModel = makeModel(bidora, config, 'dora');
    const doraTrainer = new bidora.train.Trainer({ model: doraModel, batchSize: config.batch, log: 'none' });
    const doraSeconds = time(`dora ${config.name}`, () => doraTrainer.step(lower), quick);
    doraTrainer.dispose();
    doraModel.dispose();
    // The orthogonality regulariser over every adapted layer (value and gradients) against one forward pass.
    const probe = makeModel(bidora, config, 'bidora');
    const layers = bidora.adapters.adaptedLayers(probe);
    const batch = bidora.train.collate(lower, probe.config.padTokenId);
    const penalty = () =>
      bidora.tidy(() => {
        for (const { layer, adapter } of layers) {
          bidora.ops.orthogonalityPenalty({
            weight: layer.weight,
            loraA: adapter.loraA,
            loraB: adapter.loraB,
            scale: adapter.options.scale,
          });
        }
      });
    penalty(); // caches W0 W0ᵀ, as training does after its first step
    const regularizerSeconds = time(`regularizer ${config.name}`, penalty, quick);
    const forwardSeconds = time(
      `forward ${config.name}`,
      () => bidora.tidy(() => bidora.noGrad(() => probe.forward(batch))),
      quick,
    );
    probe.dispose();
    const results = {};
    for (const hypergradient of ['finite-difference', 'first-order']) {
      const model = makeModel(bidora, config, 'bidora');
      const trainer = new bidora.train.BiLevelTrainer({ model, batchSize: config.batch, hypergradient, log: 'none' });
      results[hypergradient] = time(`bidora ${hypergradient} ${config.name}`, () => trainer.step(lower, upper), quick);
      trainer.dispose();
      model.dispose();
    }
    const row = {
      model: config.name,
      threads,
      doraStepMs: doraSeconds * 1e3,
      bidoraIterationMs: results['finite-difference'] * 1e3,
      bidoraFirstOrderMs: results['first-order'] * 1e3,
      ratio: results['finite-difference'] / doraSeconds,
      regularizerMs: regularizerSeconds * 1e3,
      forwardMs: forwardSeconds * 1e3,
      firstOrderRatio: results['first-order'] / doraSeconds,
    };
    rows.push(row);
    console.log(
      `${config.name.padEnd(44)} DoRA step ${row.doraStepMs.toFixed(1)} ms  BiDoRA iteration ${row.bidoraIterationMs.toFixed(1)} ms ` +
        `(${row.ratio.toFixed(2)}×; first-order ${row.firstOrderRatio.toFixed(2)}×); regulariser ` +
        `${row.regularizerMs.toFixed(2)} ms vs forward ${row.forwardMs.toFixed(1)} ms`,
    );
  }
  bidora.setNumThreads(previousThreads);
  return rows;
}
