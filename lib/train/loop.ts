// The training loop both trainers share: steps on the event loop's terms (fit() yields between steps), evaluation,
// best-state keeping, early stopping, atomic checkpoints with resume, progress, callbacks and fault checks.
import { type SequenceClassifier } from '../models/bert';
import { type Optimizer } from '../optim/index';
import { keep, type Tensor } from '../tensor';
import { loadCheckpoint, saveCheckpoint } from './checkpoint';
import { type Example } from './data';
import { evaluate, primaryMetric } from './evaluate';
import { type LogMode, Progress } from './progress';

export interface StepRecord {
  step: number;
  loss: number;
  lr: number;
  [figure: string]: number;
}

export interface EvalRecord {
  step: number;
  loss: number;
  metrics: Record<string, number>;
}

export interface FitResult {
  steps: number;
  history: StepRecord[];
  evals: EvalRecord[];
  /** The evaluation with the best primary metric (its state is restored at the end unless restoreBest is false). */
  best?: EvalRecord;
  stoppedEarly: boolean;
}

export interface LoopOptions {
  model: SequenceClassifier;
  batchSize?: number;
  /** Steps to run; defaults to `epochs` passes over the training examples. */
  maxSteps?: number;
  epochs?: number;
  seed?: number;
  evalBatchSize?: number;
  /** The metric that picks the best evaluation: accuracy (default) or mse (regression), macroF1, mcc, ... */
  metric?: string;
  /** Stop after this many evaluations without improvement. */
  earlyStoppingPatience?: number;
  /** Restore the best evaluation's trainable state at the end (default true when evaluating). */
  restoreBest?: boolean;
  log?: LogMode;
  onStep?: (record: StepRecord) => void;
  onEval?: (record: EvalRecord) => void;
}

export interface FitOptions {
  evalExamples?: readonly Example[];
  evalEvery?: number;
  /** Folder for the checkpoint, written atomically every `checkpointEvery` steps. */
  checkpointDir?: string;
  checkpointEvery?: number;
  /** Continue from the checkpoint in checkpointDir when there is one. */
  resume?: boolean;
}

/** Lets timers and I/O run between steps: fit() never holds the event loop for more than one step. */
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export function positiveInteger(value: number | undefined, name: string, fallback: number): number {
  const chosen = value ?? fallback;
  if (!Number.isInteger(chosen) || chosen < 1)
    throw new RangeError(`${name} must be a positive integer, got ${chosen}`);
  return chosen;
}

export abstract class TrainingLoop {
  readonly model: SequenceClassifier;
  protected readonly options: LoopOptions;
  protected readonly batchSize: number;
  protected readonly seed: number;

  constructor(options: LoopOptions) {
    if (options === null || typeof options !== 'object' || options.model === undefined) {
      throw new TypeError('trainer: options.model is required');
    }
    this.model = options.model;
    this.options = options;
    this.batchSize = positiveInteger(options.batchSize, 'batchSize', 16);
    this.seed = options.seed ?? 0;
  }

  /** Sets up data streams for `train` and returns how many steps one epoch takes. */
  protected abstract prepare(train: readonly Example[]): number;
  /** Runs training step `step` (0-based) on the next batch(es). */
  protected abstract nextStep(step: number): StepRecord;
  /** The tensors that training changes, by name (kept for the best state and checkpoints). */
  protected abstract trainedTensors(): Map<string, Tensor>;
  protected abstract namedOptimizers(): Map<string, Optimizer>;
  /** Data order and random state, for checkpoints. */
  protected abstract streamState(): Record<string, unknown>;
  protected abstract restoreStreamState(state: Record<string, unknown>): void;

  async fit(train: readonly Example[], options: FitOptions = {}): Promise<FitResult> {
    if (!Array.isArray(train) || train.length === 0) throw new RangeError('fit: train must be a non-empty array');
    const stepsPerEpoch = this.prepare(train);
    const maxSteps = this.options.maxSteps ?? positiveInteger(this.options.epochs, 'epochs', 3) * stepsPerEpoch;
    positiveInteger(maxSteps, 'maxSteps', 1);
    const evalEvery = options.evalExamples ? positiveInteger(options.evalEvery, 'evalEvery', stepsPerEpoch) : 0;
    const checkpointEvery = options.checkpointDir
      ? positiveInteger(options.checkpointEvery, 'checkpointEvery', 100)
      : 0;
    const { name: metricName, higherIsBetter } = primaryMetric(this.model, this.options.metric);
    const result: FitResult = { steps: 0, history: [], evals: [], stoppedEarly: false };
    let bestState: Map<string, Tensor> | undefined;
    let sinceImprovement = 0;

    if (options.resume && options.checkpointDir) this.resume(options.checkpointDir, result);
    const progress = new Progress(this.options.log ?? 'auto');
    this.model.train();
    try {
      while (result.steps < maxSteps && !result.stoppedEarly) {
        const record = this.nextStep(result.steps);
        for (const [figure, value] of Object.entries(record)) {
          if (!Number.isFinite(value)) {
            throw new Error(
              `training stopped at step ${record.step}: ${figure} is ${value}` +
                (options.checkpointDir ? `; the last good checkpoint is in ${options.checkpointDir}` : ''),
            );
          }
        }
        result.history.push(record);
        result.steps++;
        this.options.onStep?.(record);
        progress.update({ ...record, step: result.steps, totalSteps: maxSteps });

        const lastStep = result.steps === maxSteps;
        if (evalEvery > 0 && (result.steps % evalEvery === 0 || lastStep)) {
          const evaluation = evaluate(this.model, options.evalExamples!, this.options.evalBatchSize);
          const evalRecord: EvalRecord = { step: result.steps, loss: evaluation.loss, metrics: evaluation.metrics };
          result.evals.push(evalRecord);
          this.options.onEval?.(evalRecord);
          progress.update(
            { step: result.steps, totalSteps: maxSteps, evalLoss: evaluation.loss, ...evaluation.metrics },
            true,
          );
          const value = metricName === 'loss' ? evaluation.loss : evaluation.metrics[metricName];
          const bestValue = result.best && (metricName === 'loss' ? result.best.loss : result.best.metrics[metricName]);
          if (bestValue === undefined || (higherIsBetter ? value > bestValue : value < bestValue)) {
            result.best = evalRecord;
            sinceImprovement = 0;
            disposeAll(bestState);
            bestState = this.copyTrainedTensors();
          } else if (this.options.earlyStoppingPatience !== undefined) {
            sinceImprovement++;
            if (sinceImprovement >= this.options.earlyStoppingPatience) result.stoppedEarly = true;
          }
        }
        if (checkpointEvery > 0 && (result.steps % checkpointEvery === 0 || lastStep)) {
          this.checkpoint(options.checkpointDir!, result);
        }
        await yieldToEventLoop();
      }
      if (bestState && (this.options.restoreBest ?? true)) {
        const trained = this.trainedTensors();
        for (const [name, tensor] of bestState) trained.get(name)!.copyFrom(tensor);
      }
    } finally {
      progress.done();
      disposeAll(bestState);
    }
    return result;
  }

  private copyTrainedTensors(): Map<string, Tensor> {
    // Copies: the optimizer updates the parameters in place, so a view would follow them.
    return new Map([...this.trainedTensors()].map(([name, tensor]) => [name, keep(tensor.clone())]));
  }

  private checkpoint(dir: string, result: FitResult): void {
    const tensors = new Map<string, Tensor>();
    for (const [name, tensor] of this.trainedTensors()) tensors.set(`trained.${name}`, tensor);
    const optimizerStates: Record<string, unknown> = {};
    const owned: Tensor[] = [];
    for (const [optimizerName, optimizer] of this.namedOptimizers()) {
      const dict = optimizer.stateDict();
      for (const [name, tensor] of dict.tensors) tensors.set(`optimizer.${optimizerName}.${name}`, tensor);
      optimizerStates[optimizerName] = dict.state;
      owned.push(...dict.tensors.values());
    }
    saveCheckpoint(dir, {
      tensors,
      state: {
        steps: result.steps,
        history: result.history,
        evals: result.evals,
        best: result.best,
        optimizers: optimizerStates,
        streams: this.streamState(),
        seedStreams: this.model.seedStreams().map((stream) => stream.state),
      },
    });
  }

  private resume(dir: string, result: FitResult): void {
    const checkpoint = loadCheckpoint(dir);
    if (checkpoint === undefined) return;
    const { tensors, state } = checkpoint;
    try {
      const trained = this.trainedTensors();
      for (const [name, tensor] of trained) {
        const saved = tensors.get(`trained.${name}`);
        if (saved === undefined) throw new RangeError(`resume: the checkpoint in ${dir} lacks ${name}`);
        tensor.copyFrom(saved);
      }
      const optimizerStates = state.optimizers as Record<string, Record<string, unknown>>;
      for (const [optimizerName, optimizer] of this.namedOptimizers()) {
        const prefix = `optimizer.${optimizerName}.`;
        const optimizerTensors = new Map(
          [...tensors]
            .filter(([name]) => name.startsWith(prefix))
            .map(([name, tensor]) => [name.slice(prefix.length), tensor]),
        );
        optimizer.loadStateDict({ tensors: optimizerTensors, state: optimizerStates[optimizerName] });
      }
      this.restoreStreamState(state.streams as Record<string, unknown>);
      const seedStates = state.seedStreams as number[];
      this.model.seedStreams().forEach((stream, index) => (stream.state = seedStates[index]));
      result.steps = state.steps as number;
      result.history = state.history as StepRecord[];
      result.evals = state.evals as EvalRecord[];
      result.best = state.best as EvalRecord | undefined;
    } finally {
      for (const tensor of tensors.values()) tensor.dispose();
    }
  }
}

export function disposeAll(tensors: Map<string, Tensor> | undefined): void {
  for (const tensor of tensors?.values() ?? []) tensor.dispose();
}
