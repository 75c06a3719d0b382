// The worker side of fitInWorker (worker.ts): builds the model, applies the adapters, runs the fit with progress
// posted to the parent, saves the adapter, and reports the result or the error.
import { parentPort, workerData } from 'node:worker_threads';

import { apply, appliedConfig } from '../adapters/apply';
import { native } from '../binding';
import { save as saveAdapter } from '../adapters/peft';
import { EncoderTaskModel, fromConfig, load, save as saveModel } from '../models/index';
import { BiLevelTrainer } from './bilevel';
import { distributed } from './distributed';
import { type EvalRecord, NonFiniteError, type StepRecord } from './loop';
import { Trainer } from './trainer';
import { type WorkerFitJob, type WorkerMessage } from './worker';

const port = parentPort!;
const post = (message: WorkerMessage): void => port.postMessage(message);

async function run(job: WorkerFitJob): Promise<void> {
  const controller = new AbortController();
  port.on('message', (message: { type: string }) => {
    if (message.type === 'abort') controller.abort();
  });
  // Process-wide, so put back however the job ends (a failed load included).
  const previousThreads = job.threads === undefined ? undefined : native.setNumThreads(job.threads);
  let model: EncoderTaskModel | undefined;
  try {
    const dtype = job.dtype ?? 'float32';
    const built =
      typeof job.model === 'string'
        ? load(job.model, { dtype })
        : fromConfig(job.model.config, { seed: job.model.seed, dtype });
    if (!(built instanceof EncoderTaskModel)) {
      built.dispose();
      throw new TypeError(`a worker fit trains encoders; ${built.config.architecture} is a causal language model`);
    }
    model = built;
    if (job.adapters !== undefined) apply(model, job.adapters);
    const onStep = (record: StepRecord) => post({ type: 'step', record });
    const onEval = (record: EvalRecord) => post({ type: 'eval', record });
    const { kind, ...options } = job.trainer;
    const trainer =
      kind === 'bilevel'
        ? new BiLevelTrainer({ ...options, model, onStep, onEval })
        : new Trainer({ ...options, model, onStep, onEval });
    try {
      const result = await trainer.fit(job.train, { ...job.fit, signal: controller.signal });
      // Under mpirun every rank holds the same weights: rank 0 alone writes them.
      if (distributed().rank === 0) {
        if (appliedConfig(model) === undefined) saveModel(model, job.outDir);
        else saveAdapter(model, job.outDir);
      }
      post({ type: 'done', result });
    } finally {
      trainer.dispose();
    }
  } finally {
    model?.dispose();
    if (previousThreads !== undefined) native.setNumThreads(previousThreads);
  }
}

run(workerData as WorkerFitJob).then(
  () => port.close(),
  (error: unknown) => {
    const { name, message, stack } = error instanceof Error ? error : new Error(String(error));
    // A NonFiniteError's fields say where the last good checkpoint is: they cross with it.
    const details =
      error instanceof NonFiniteError
        ? { step: error.step, figure: error.figure, value: error.value, checkpoint: error.checkpoint }
        : undefined;
    post({ type: 'error', name, message, stack, details });
    port.close();
  },
);
