// One rank of `npm run bench -- allreduce` (bench/allreduce.mjs starts it under mpirun): DoRA on the BERT-base-sized
// stack of bench/bert.mjs, a Trainer step on a global batch of 2 × 8 sequences of 128 tokens (each rank its 8), and
// the all-reduce of the step's adapter gradients alone, both timed in this run after a barrier. Rank 0 prints JSON.
import { createRequire } from 'node:module';

import { median } from './baselines.mjs';
import { makeBatch, makeModel, shape } from './bert.mjs';

const require = createRequire(import.meta.url);
const bidora = require('bidora');
const { train, Tensor } = bidora;

const quick = process.argv.includes('--quick');
const { rank, worldSize } = train.distributed({ timeout: 600 });
const model = makeModel(bidora, 'dora');
model.train();
const batch = makeBatch(1, shape.batch * worldSize);
const examples = batch.inputIds.map((inputIds, index) => ({ inputIds, label: batch.labels[index] }));
const trainer = new train.Trainer({ model, batchSize: examples.length, maxSteps: 100 });

const steps = [];
for (let index = 0; index < (quick ? 3 : 8); index++) {
  train.barrier();
  const started = process.hrtime.bigint();
  trainer.step(examples, index);
  steps.push(Number(process.hrtime.bigint() - started) / 1e9);
}
// The same tensors the step reduces (one per trained parameter), random, reduced on their own.
const grads = trainer.parameters.map((parameter, index) => Tensor.randn(parameter.shape, { seed: index }));
const reduces = [];
for (let index = 0; index < (quick ? 5 : 30); index++) {
  train.barrier();
  const started = process.hrtime.bigint();
  train.allreduceMean(grads);
  reduces.push(Number(process.hrtime.bigint() - started) / 1e9);
}
const floats = grads.reduce((total, tensor) => total + tensor.size, 0);
if (rank === 0) {
  const stepSeconds = median(steps.slice(1));
  const allreduceSeconds = median(reduces.slice(1));
  console.log(
    JSON.stringify({
      worldSize,
      ...shape,
      perRankBatch: shape.batch,
      globalBatch: examples.length,
      tensors: grads.length,
      gradientBytes: floats * 4,
      msPerStep: stepSeconds * 1e3,
      allreduceMs: allreduceSeconds * 1e3,
      allreduceToStep: allreduceSeconds / stepSeconds,
      busBandwidthGBs: ((2 * (worldSize - 1)) / worldSize) * ((floats * 4) / allreduceSeconds / 1e9),
    }),
  );
}
for (const tensor of grads) tensor.dispose();
trainer.dispose();
model.dispose();
