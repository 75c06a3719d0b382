// One BiDoRA iteration (finite-difference hypergradient: lower step, upper pass, two magnitude-only perturbed passes)
// against one DoRA training step on the same model and batch size: a tiny BERT and the BERT-base-sized 2-layer stack.
import Benchmark from 'benchmark';

import { median } from './baselines.mjs';

export const configs = [
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

export function makeModel(bidora, config, method) {
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

export function makeExamples(config, count, seed) {
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
    maxTime: quick ? 0.5 : 0.75,
    minSamples: quick ? 2 : 5,
    onComplete: (event) => {
      seconds = median(event.target.stats.sample);
    },
  }).run();
  return seconds;
}

/** The regulariser over every adapted layer (value and gradients) against one forward pass, on `examples`. */
function regularizerAgainstForward(bidora, config, examples, quick) {
  const probe = makeModel(bidora, config, 'bidora');
  const layers = bidora.adapters.adaptedLayers(probe);
  const batch = bidora.train.collate(examples, probe.config.padTokenId);
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
  return { regularizerMs: regularizerSeconds * 1e3, forwardMs: forwardSeconds * 1e3 };
}

const middle = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

export function runBilevel(bidora, { quick, threads }) {
  const previousThreads = bidora.setNumThreads(threads);
  const rows = [];
  for (const config of configs) {
    const lower = makeExamples(config, config.batch, 1);
    const upper = makeExamples(config, config.batch, 2);
    const doraModel = makeModel(bidora, config, 'dora');
    const doraTrainer = new bidora.train.Trainer({ model: doraModel, batchSize: config.batch, log: 'none' });
    const trainers = {};
    for (const hypergradient of ['finite-difference', 'first-order']) {
      const model = makeModel(bidora, config, 'bidora');
      trainers[hypergradient] = new bidora.train.BiLevelTrainer({
        model,
        batchSize: config.batch,
        hypergradient,
        log: 'none',
      });
    }
    // One perturbed pass on its own: forward and a backward asking for the magnitudes' gradients only.
    const probe = trainers['finite-difference'];
    const lowerBatch = bidora.train.collate(lower, probe.model.config.padTokenId);
    const magnitudePass = () => bidora.tidy(() => bidora.grad(probe.model.forward(lowerBatch).loss, probe.magnitudes));
    // Rounds of every measurement side by side, the ratios taken within each round: this machine's speed drifts
    // between rounds more than within one.
    const rounds = [];
    for (let round = 0; round < (quick ? 1 : 7); round += 1) {
      const dora = time(`dora ${config.name}`, () => doraTrainer.step(lower), quick);
      const iteration = time(`bidora ${config.name}`, () => trainers['finite-difference'].step(lower, upper), quick);
      const firstOrder = time(`first-order ${config.name}`, () => trainers['first-order'].step(lower, upper), quick);
      const pass = time(`magnitude pass ${config.name}`, magnitudePass, quick);
      rounds.push({ dora, iteration, firstOrder, pass });
    }
    doraTrainer.dispose();
    doraModel.dispose();
    for (const trainer of Object.values(trainers)) {
      trainer.dispose();
      trainer.model.dispose();
    }
    const ratios = rounds.map((round) => round.iteration / round.dora);
    const row = {
      model: config.name,
      threads,
      rounds: rounds.length,
      doraStepMs: middle(rounds.map((round) => round.dora)) * 1e3,
      bidoraIterationMs: middle(rounds.map((round) => round.iteration)) * 1e3,
      bidoraFirstOrderMs: middle(rounds.map((round) => round.firstOrder)) * 1e3,
      magnitudePassMs: middle(rounds.map((round) => round.pass)) * 1e3,
      ratio: middle(ratios),
      ratioMin: Math.min(...ratios),
      ratioMax: Math.max(...ratios),
      firstOrderRatio: middle(rounds.map((round) => round.firstOrder / round.dora)),
      magnitudePassRatio: middle(rounds.map((round) => round.pass / round.dora)),
      ...regularizerAgainstForward(bidora, config, lower, quick),
    };
    rows.push(row);
    console.log(
      `${config.name.padEnd(44)} DoRA step ${row.doraStepMs.toFixed(1)} ms  BiDoRA iteration ` +
        `${row.bidoraIterationMs.toFixed(1)} ms (${row.ratio.toFixed(2)}×, rounds ${row.ratioMin.toFixed(2)}–` +
        `${row.ratioMax.toFixed(2)}×; first-order ${row.firstOrderRatio.toFixed(2)}×); one magnitude-only pass ` +
        `${row.magnitudePassRatio.toFixed(2)}× a DoRA step; regulariser ${row.regularizerMs.toFixed(2)} ms vs forward ` +
        `${row.forwardMs.toFixed(1)} ms`,
    );
  }
  bidora.setNumThreads(previousThreads);
  return rows;
}
