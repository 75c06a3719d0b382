// A whole fit on a worker thread the library manages: the model is built there from a folder or a config, the
// adapters applied, the fit run, and the adapter written as a PEFT folder; only records and the result cross back.
// The host's event loop then stays free however long a step takes (fit() itself can only yield between steps).
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { type AdapterConfig } from '../adapters/apply';
import { type DType } from '../binding';
import { type HuggingFaceConfig } from '../models/config';
import { type BiLevelTrainerOptions } from './bilevel';
import { type Example } from './data';
import {
  type CheckpointLocation,
  type EvalRecord,
  type FitOptions,
  type FitResult,
  NonFiniteError,
  type StepRecord,
} from './loop';
import { type TrainerOptions } from './trainer';

/** Trainer options that can be copied to another thread: no model (the job builds it) and no callbacks. */
export type WorkerTrainerOptions =
  | ({
      /** A single-level Trainer. */
      kind: 'trainer';
    } & Omit<TrainerOptions, 'model' | 'parameters' | 'onStep' | 'onEval' | 'log'>)
  | ({
      /** BiDoRA's BiLevelTrainer. */
      kind: 'bilevel';
    } & Omit<BiLevelTrainerOptions, 'model' | 'onStep' | 'onEval' | 'log'>);

/** Everything a fit on a worker thread needs, as plain data (it is copied to the thread by structured clone). */
export interface WorkerFitJob {
  /** A Hugging Face checkpoint folder (models.load), or a config to build a fresh model from (models.fromConfig). */
  model:
    | string
    | {
        /** The parsed config.json of the model to build. */
        config: HuggingFaceConfig;
        /** The root seed of the fresh parameters; default 0. */
        seed?: number;
      };
  /** 'bfloat16' keeps the base's weight matrices in bfloat16, frozen (models.load's `dtype`); default 'float32'. */
  dtype?: DType;
  /** Adapters to apply before training (adapters.apply); omit to train what the model already trains. */
  adapters?: AdapterConfig;
  /** Which trainer runs the fit, and its options. */
  trainer: WorkerTrainerOptions;
  /** The training examples, already tokenized. */
  train: readonly Example[];
  /** The fit's options (steps, evaluation, checkpoints); the abort signal goes in `fitInWorker`'s options instead. */
  fit?: Omit<FitOptions, 'signal'>;
  /**
   * Where the worker writes what it trained: the adapter (adapters.save, PEFT layout; load it with adapters.load), or
   * the whole model (models.save) when it has no adapters.
   */
  outDir: string;
  /**
   * Caps the native threads while the fit runs (setNumThreads: process-wide, restored after). On a machine with few
   * cores, one fewer than it has leaves a core to the host's event loop.
   */
  threads?: number;
}

/** What stays on the calling thread: the abort signal and the progress callbacks. */
export interface WorkerFitOptions {
  /** Aborts the fit in the worker; the promise rejects with an AbortError and the worker ends. */
  signal?: AbortSignal;
  /** Called on this thread with each step's record; a throw ends the fit with that error. */
  onStep?: (record: StepRecord) => void;
  /** Called on this thread with each evaluation's record; a throw ends the fit with that error. */
  onEval?: (record: EvalRecord) => void;
}

/** What the worker posts back. */
export type WorkerMessage =
  | {
      /** A step finished. */
      type: 'step';
      /** Its record, as `onStep` receives it. */
      record: StepRecord;
    }
  | {
      /** An evaluation finished. */
      type: 'eval';
      /** Its record, as `onEval` receives it. */
      record: EvalRecord;
    }
  | {
      /** The fit ended and what it trained is saved in `outDir`. */
      type: 'done';
      /** The fit's result. */
      result: FitResult;
    }
  | {
      /** The fit failed; the worker ends after this message. */
      type: 'error';
      /** The error's class name (TypeError, RangeError, AbortError, NonFiniteError, ...), to rebuild it by. */
      name: string;
      /** The error's message. */
      message: string;
      /** The stack on the worker, when there was one. */
      stack?: string;
      /** A NonFiniteError's fields (the step, the figure, the checkpoint that resumes). */
      details?: {
        /** The step that went non-finite, counted from 1. */
        step: number;
        /** What went non-finite: a step figure's name, or `parameters`. */
        figure: string;
        /** The value (NaN or ±Infinity). */
        value: number;
        /** The last checkpoint written, to resume from; undefined when none was. */
        checkpoint: CheckpointLocation | undefined;
      };
    };

/**
 * Runs `job` on a new worker thread and resolves with the fit's result once what it trained is saved in `job.outDir`.
 * Progress arrives through `onStep` and `onEval` on this thread; `signal` stops the fit within one step.
 */
export function fitInWorker(job: WorkerFitJob, options: WorkerFitOptions = {}): Promise<FitResult> {
  if (job === null || typeof job !== 'object') throw new TypeError('fitInWorker: job must be an object');
  if (typeof job.outDir !== 'string' || job.outDir === '') {
    throw new TypeError('fitInWorker: job.outDir must be a folder path for the trained adapter');
  }
  if (job.trainer?.kind !== 'trainer' && job.trainer?.kind !== 'bilevel') {
    throw new TypeError(`fitInWorker: job.trainer.kind must be 'trainer' or 'bilevel'`);
  }
  const { signal, onStep, onEval } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError('fitInWorker: options.signal must be an AbortSignal');
  }
  signal?.throwIfAborted();
  return new Promise<FitResult>((resolve, reject) => {
    // The compiled entry beside this file: workers run JavaScript, so this needs the built package (dist/).
    const worker = new Worker(join(__dirname, 'worker-entry.js'), { workerData: job });
    let settled = false;
    const finish = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      outcome();
    };
    const onAbort = (): void => worker.postMessage({ type: 'abort' });
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (message: WorkerMessage) => {
      try {
        if (message.type === 'step') onStep?.(message.record);
        else if (message.type === 'eval') onEval?.(message.record);
        else if (message.type === 'done') finish(() => resolve(message.result));
        else finish(() => reject(rebuiltError(message)));
      } catch (error) {
        // A callback that throws ends the fit with its error, as it would on this thread.
        finish(() => reject(error));
        void worker.terminate();
      }
    });
    worker.on('error', (error) => finish(() => reject(error)));
    worker.on('exit', (code) =>
      finish(() => reject(new Error(`fitInWorker: the worker exited with code ${code} before the fit ended`))),
    );
  });
}

/** The worker's error on this thread, with its name (AbortError, RangeError, NonFiniteError, ...) and message. */
function rebuiltError({ name, message, stack, details }: Extract<WorkerMessage, { type: 'error' }>): Error {
  if (details !== undefined) {
    const error = new NonFiniteError(details.step, details.figure, details.value, details.checkpoint);
    if (stack !== undefined) error.stack = stack;
    return error;
  }
  const Constructor = name === 'TypeError' ? TypeError : name === 'RangeError' ? RangeError : Error;
  const error = name === 'AbortError' ? new DOMException(message, 'AbortError') : new Constructor(message);
  if (!(error instanceof DOMException) && error.name !== name) error.name = name;
  if (stack !== undefined) error.stack = stack;
  return error;
}
