// The training loop both trainers share: steps on the event loop's terms (fit() yields between steps), evaluation,
// best-state keeping, early stopping, atomic checkpoints with resume, progress, callbacks and fault checks.
import { type Optimizer } from '../optim/index';
import { globalNorm } from '../ops/reduce';
import { keep, type Tensor } from '../tensor';
import { appendHistory, loadCheckpoint, readHistory, removeCheckpoint, saveCheckpoint } from './checkpoint';
import { type Example } from './data';
import { broadcastFromRoot, distributed } from './distributed';
import { evaluationBatches, primaryMetric } from './evaluate';
import { collateFor, type TrainableModel } from './model';
import { type Logger, type LogMode, Progress } from './progress';

/** What one training step reports to `onStep`, the history and the progress log. */
export interface StepRecord {
  /** Steps taken when this record was made, counting from 1 as evaluations and progress records do. */
  step: number;
  /** The step's training loss on its batch (the task loss, mean over what the labels count). */
  loss: number;
  /** The learning rate the step used, as the schedule set it. */
  lr: number;
  /** Further figures a trainer reports (`gradNorm` when clipping; BiDoRA's upper loss and norms). */
  [figure: string]: number;
}

/** One evaluation during fit(), on `evalExamples`. */
export interface EvalRecord {
  /** Steps taken before this evaluation. */
  step: number;
  /** The mean task loss over the evaluation examples. */
  loss: number;
  /** The task's metrics by name (accuracy, macroF1, mcc; mse, pearson; microF1; perplexity, ...). */
  metrics: Record<string, number>;
}

/** What fit() resolves to. */
export interface FitResult {
  /** Steps taken in all, a resumed run's earlier steps included. */
  steps: number;
  /** One record per step, in order. */
  history: StepRecord[];
  /** One record per evaluation, in order (empty without `evalExamples`). */
  evals: EvalRecord[];
  /** The evaluation with the best primary metric (its state is restored at the end unless restoreBest is false). */
  best?: EvalRecord;
  /** True when `earlyStoppingPatience` evaluations without improvement ended the run before `maxSteps`. */
  stoppedEarly: boolean;
}

/** The options both trainers share. */
export interface LoopOptions {
  /** An encoder with a task head, or a causal language model (labels one token id per position). */
  model: TrainableModel;
  /**
   * Examples per step (default 16); a positive integer, else a RangeError. Under MPI (`train.distributed()`) this is
   * the global batch, which the ranks share.
   */
  batchSize?: number;
  /** Steps to run; defaults to `epochs` passes over the training examples. */
  maxSteps?: number;
  /** Passes over the training examples when `maxSteps` is not given (default 3). */
  epochs?: number;
  /** Seed of the data order (a shuffle each epoch) and of BiDoRA's lower/upper split; default 0. */
  seed?: number;
  /** Examples per evaluation batch (default 64). */
  evalBatchSize?: number;
  /**
   * The metric that picks the best evaluation: accuracy (default), mse (regression), microF1 (multi-label), loss
   * (causal LM), or another the task reports (macroF1, mcc, perplexity, tokenAccuracy, ...).
   */
  metric?: string;
  /** Stop after this many evaluations without improvement. */
  earlyStoppingPatience?: number;
  /** Restore the best evaluation's trainable state at the end (default true when evaluating). */
  restoreBest?: boolean;
  /** Progress: silent by default; a logger (anything with `info(record)`), or the command line's bar / JSON lines. */
  log?: LogMode | Logger;
  /** Called after every step with its record; an exception thrown here stops the fit and rejects it. */
  onStep?: (record: StepRecord) => void;
  /** Called after every evaluation with its record. */
  onEval?: (record: EvalRecord) => void;
}

/** Options of one fit() call: evaluation, checkpoints and cancellation. */
export interface FitOptions {
  /** Held-out examples evaluated every `evalEvery` steps and after the last; none: no evaluation. */
  evalExamples?: readonly Example[];
  /** Steps between evaluations (default one epoch). */
  evalEvery?: number;
  /**
   * Folder for the checkpoint, written atomically every `checkpointEvery` steps and after the last: everything a
   * resumed run needs to end exactly as an uninterrupted one would, the best evaluation's weights included.
   */
  checkpointDir?: string;
  /** Steps between checkpoints (default 100). */
  checkpointEvery?: number;
  /** Continue from the checkpoint in checkpointDir when there is one; otherwise a previous run's there is removed. */
  resume?: boolean;
  /**
   * Stops the fit within one step (or one evaluation batch) of `abort()`: it rejects with the signal's reason, an
   * `AbortError` unless another was given. Aborted between steps, it first checkpoints the steps done (with
   * checkpointDir), so a resume loses nothing; aborted mid-evaluation, the last periodic checkpoint stands.
   */
  signal?: AbortSignal;
}

/** Where a run's last published checkpoint is: its folder and the number of steps it holds. */
export interface CheckpointLocation {
  /** The `checkpointDir` it was written to. */
  dir: string;
  /** Steps taken when it was written. */
  step: number;
}

/**
 * Training met a non-finite figure (a loss, a gradient norm) or a non-finite trained tensor after an update, and
 * stopped before writing anything non-finite. `checkpoint` is the last one on disk (it resumes), if there is one.
 */
export class NonFiniteError extends Error {
  constructor(
    /** The step that went non-finite, counted from 1 as evaluations and the progress bar count. */
    readonly step: number,
    /** What went non-finite: a step figure's name, or `parameters` (the trained tensors after the update). */
    readonly figure: string,
    /** The non-finite value: NaN, Infinity or -Infinity. */
    readonly value: number,
    /** The last checkpoint written before the failure, undefined when none was. */
    readonly checkpoint: CheckpointLocation | undefined,
  ) {
    super(
      `training stopped at step ${step}: ${figure} is ${value}; ` +
        (checkpoint
          ? `the last checkpoint, after step ${checkpoint.step}, is in ${checkpoint.dir} and resumes`
          : 'no checkpoint was written before it'),
    );
    this.name = 'NonFiniteError';
  }
}

/** One line of a checkpoint's history file. */
type HistoryEntry = { step: StepRecord } | { eval: EvalRecord };

/** Lets timers and I/O run between steps: fit() never holds the event loop for more than one step. */
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export function positiveInteger(value: number | undefined, name: string, fallback: number): number {
  const chosen = value ?? fallback;
  if (!Number.isInteger(chosen) || chosen < 1)
    throw new RangeError(`${name} must be a positive integer, got ${chosen}`);
  return chosen;
}

/** The loop both trainers extend: fit() with evaluation, best-state keeping, checkpoints and cancellation. */
export abstract class TrainingLoop {
  /** The model being trained, as given in the options. */
  readonly model: TrainableModel;
  /** The options as given. */
  protected readonly options: LoopOptions;
  /** Examples per step, checked (default 16). */
  protected readonly batchSize: number;
  /** Seed of the data order (default 0). */
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
  /** Runs the step at 0-based position `index` in the run on the next batch(es). */
  protected abstract nextStep(index: number): StepRecord;
  /** The tensors that training changes, by name (kept for the best state and checkpoints). */
  protected abstract trainedTensors(): Map<string, Tensor>;
  /** The optimizers whose state checkpoints save, by name. */
  protected abstract namedOptimizers(): Map<string, Optimizer>;
  /** Data order and random state, for checkpoints. */
  protected abstract streamState(): Record<string, unknown>;
  /** Restores what `streamState` saved; throws a RangeError when it does not fit this run (another training set). */
  protected abstract restoreStreamState(state: Record<string, unknown>): void;

  /**
   * Trains on `train` for `maxSteps` (or `epochs` passes), yielding to the event loop between steps. Evaluates,
   * keeps the best state, checkpoints and resumes as `options` ask. Rejects with a RangeError for empty data or bad
   * options, a {@link NonFiniteError} when training diverges, and the signal's reason when aborted.
   */
  async fit(train: readonly Example[], options: FitOptions = {}): Promise<FitResult> {
    if (!Array.isArray(train) || train.length === 0) throw new RangeError('fit: train must be a non-empty array');
    const stepsPerEpoch = this.prepare(train);
    const maxSteps = this.options.maxSteps ?? positiveInteger(this.options.epochs, 'epochs', 3) * stepsPerEpoch;
    positiveInteger(maxSteps, 'maxSteps', 1);
    const evalEvery = options.evalExamples ? positiveInteger(options.evalEvery, 'evalEvery', stepsPerEpoch) : 0;
    if (options.evalExamples !== undefined) {
      // Bad evaluation data is refused now, not after evalEvery steps of training.
      if (!Array.isArray(options.evalExamples) || options.evalExamples.length === 0) {
        throw new RangeError('fit: evalExamples must be a non-empty array');
      }
      collateFor(this.model, options.evalExamples);
    }
    const checkpointDir = options.checkpointDir;
    const checkpointEvery = checkpointDir ? positiveInteger(options.checkpointEvery, 'checkpointEvery', 100) : 0;
    const { name: metricName, higherIsBetter } = primaryMetric(this.model, this.options.metric);
    const { signal } = options;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new TypeError(`fit: signal must be an AbortSignal, got ${typeof signal}`);
    }
    // Under MPI (distributed.ts) rank 0 alone reports and writes checkpoints; every rank resumes from them.
    const { rank } = distributed();
    const progress = new Progress(rank === 0 ? (this.options.log ?? 'none') : 'none');
    signal?.throwIfAborted();
    const run = new RunState();
    const { result } = run;

    if (checkpointDir && options.resume) this.resume(checkpointDir, run);
    else if (checkpointDir && rank === 0) removeCheckpoint(checkpointDir);
    // Every rank starts from rank 0's weights (a model initialised with another seed, a resume that read another
    // file), so the identical updates that follow keep them identical.
    broadcastFromRoot([...this.trainedTensors().values()]);
    this.model.train();
    try {
      while (result.steps < maxSteps && !result.stoppedEarly) {
        const record = this.nextStep(result.steps);
        this.checkFinite(record, run);
        result.history.push(record);
        run.pending.push({ step: record });
        result.steps++;
        this.options.onStep?.(record);
        progress.update({ ...record, totalSteps: maxSteps });

        const lastStep = result.steps === maxSteps;
        if (evalEvery > 0 && (result.steps % evalEvery === 0 || lastStep)) {
          // A batch at a time, yielding between them: a large evaluation set must not hold the event loop either.
          // Sharded under MPI: each rank evaluates its share and all of them get the whole set's figures.
          const batches = evaluationBatches(this.model, options.evalExamples!, this.options.evalBatchSize, true);
          let next = batches.next();
          while (!next.done) {
            await yieldToEventLoop();
            signal?.throwIfAborted();
            next = batches.next();
          }
          const evaluation = next.value;
          const evalRecord: EvalRecord = { step: result.steps, loss: evaluation.loss, metrics: evaluation.metrics };
          result.evals.push(evalRecord);
          run.pending.push({ eval: evalRecord });
          this.options.onEval?.(evalRecord);
          progress.update(
            { step: result.steps, totalSteps: maxSteps, evalLoss: evaluation.loss, ...evaluation.metrics },
            true,
          );
          const value = metricName === 'loss' ? evaluation.loss : evaluation.metrics[metricName];
          if (value === undefined) {
            throw new RangeError(
              `fit: metric '${metricName}' is not one this task reports (${['loss', ...Object.keys(evaluation.metrics)].join(', ')})`,
            );
          }
          const bestValue = result.best && (metricName === 'loss' ? result.best.loss : result.best.metrics[metricName]);
          // A NaN (a correlation of constant predictions) is never better; any number beats a NaN best. A best read
          // back from a checkpoint's JSON holds NaN as null.
          const improves =
            bestValue === undefined ||
            (!Number.isNaN(value) &&
              (bestValue === null ||
                Number.isNaN(bestValue) ||
                (higherIsBetter ? value > bestValue : value < bestValue)));
          if (improves) {
            result.best = evalRecord;
            run.sinceImprovement = 0;
            disposeAll(run.bestState);
            run.bestState = this.copyTrainedTensors();
          } else if (this.options.earlyStoppingPatience !== undefined) {
            run.sinceImprovement++;
            if (run.sinceImprovement >= this.options.earlyStoppingPatience) result.stoppedEarly = true;
          }
        }
        if (checkpointDir && (result.steps % checkpointEvery === 0 || lastStep || result.stoppedEarly)) {
          this.checkpoint(checkpointDir, run);
        }
        await yieldToEventLoop();
        if (signal?.aborted) {
          if (checkpointDir && run.lastCheckpoint?.step !== result.steps) this.checkpoint(checkpointDir, run);
          signal.throwIfAborted();
        }
      }
      if (run.bestState && (this.options.restoreBest ?? true)) {
        const trained = this.trainedTensors();
        for (const [name, tensor] of run.bestState) trained.get(name)!.copyFrom(tensor);
      }
    } finally {
      progress.done();
      disposeAll(run.bestState);
    }
    return result;
  }

  /**
   * Stops the run at the first non-finite step figure or trained tensor: the update already happened, so checking
   * the loss alone would let the next checkpoint publish non-finite weights.
   */
  private checkFinite(record: StepRecord, run: RunState): void {
    const fail = (figure: string, value: number): never => {
      throw new NonFiniteError(record.step, figure, value, run.lastCheckpoint);
    };
    for (const [figure, value] of Object.entries(record)) if (!Number.isFinite(value)) fail(figure, value);
    const norm = globalNorm([...this.trainedTensors().values()]);
    if (!Number.isFinite(norm)) fail('the norm of the trained tensors', norm);
  }

  private copyTrainedTensors(): Map<string, Tensor> {
    // Copies: the optimizer updates the parameters in place, so a view would follow them.
    return new Map([...this.trainedTensors()].map(([name, tensor]) => [name, keep(tensor.clone())]));
  }

  private checkpoint(dir: string, run: RunState): void {
    const { result } = run;
    const tensors = new Map<string, Tensor>();
    for (const [name, tensor] of this.trainedTensors()) tensors.set(`trained.${name}`, tensor);
    for (const [name, tensor] of run.bestState ?? []) tensors.set(`best.${name}`, tensor);
    const optimizerStates: Record<string, unknown> = {};
    for (const [optimizerName, optimizer] of this.namedOptimizers()) {
      const dict = optimizer.stateDict(); // the optimizer's own tensors, not copies
      for (const [name, tensor] of dict.tensors) tensors.set(`optimizer.${optimizerName}.${name}`, tensor);
      optimizerStates[optimizerName] = dict.state;
    }
    // The optimizer's moments can overflow while the parameters stay finite: nothing non-finite is published.
    const norm = globalNorm([...tensors.values()]);
    if (!Number.isFinite(norm)) {
      throw new NonFiniteError(result.steps, 'the norm of the training state', norm, run.lastCheckpoint);
    }
    const historyLines = run.historyLines + run.pending.length;
    if (distributed().rank !== 0) {
      // The other ranks hold the same state; they only follow what rank 0 published.
      run.historyLines = historyLines;
      run.pending = [];
      run.lastCheckpoint = { dir, step: result.steps };
      return;
    }
    const historyBytes = appendHistory(dir, run.historyBytes, run.pending);
    saveCheckpoint(dir, {
      tensors,
      state: {
        steps: result.steps,
        history: { bytes: historyBytes, lines: historyLines },
        best: result.best,
        sinceImprovement: run.sinceImprovement,
        stoppedEarly: result.stoppedEarly,
        optimizers: optimizerStates,
        streams: this.streamState(),
        seedStreams: this.model.seedStreams().map((stream) => stream.state),
      },
    });
    run.historyBytes = historyBytes;
    run.historyLines = historyLines;
    run.pending = [];
    run.lastCheckpoint = { dir, step: result.steps };
  }

  private resume(dir: string, run: RunState): void {
    const checkpoint = loadCheckpoint(dir);
    if (checkpoint === undefined) {
      removeCheckpoint(dir); // a history file without its checkpoint belongs to no run that can resume
      return;
    }
    const { tensors, state } = checkpoint;
    // The best weights move to the model's device (a checkpoint reads onto the CPU); copies made here are ours.
    const best = new Map<string, Tensor>();
    try {
      const history = state.history as { bytes: number; lines: number } | undefined;
      if (history === undefined) throw new RangeError(`resume: the checkpoint in ${dir} predates history files`);
      const entries = readHistory(dir, history.bytes, history.lines) as HistoryEntry[];
      const trained = this.trainedTensors();
      for (const name of trained.keys()) {
        if (!tensors.has(`trained.${name}`)) throw new RangeError(`resume: the checkpoint in ${dir} lacks ${name}`);
        if (state.best !== undefined && !tensors.has(`best.${name}`)) {
          throw new RangeError(`resume: the checkpoint in ${dir} lacks best.${name}`);
        }
      }
      // What can refuse this checkpoint (a changed training set, another optimizer) runs before any weight changes,
      // so a refused resume leaves the model as it was.
      this.restoreStreamState(state.streams as Record<string, unknown>);
      const seedStates = state.seedStreams as number[];
      const streams = this.model.seedStreams();
      if (!Array.isArray(seedStates) || seedStates.length !== streams.length) {
        throw new RangeError(
          `resume: the checkpoint in ${dir} has ${seedStates?.length} dropout streams, the model ${streams.length}`,
        );
      }
      streams.forEach((stream, index) => (stream.state = seedStates[index]));
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
      for (const [name, tensor] of trained) {
        tensor.copyFrom(tensors.get(`trained.${name}`)!);
        if (state.best === undefined) continue;
        const saved = tensors.get(`best.${name}`)!;
        const moved = saved.to(tensor.device); // itself when already there: then a copy outlives the checkpoint's
        best.set(name, keep(moved === saved ? saved.clone() : moved));
      }
      const { result } = run;
      result.steps = state.steps as number;
      for (const entry of entries) {
        if ('step' in entry) result.history.push(entry.step);
        else result.evals.push(entry.eval);
      }
      result.best = state.best as EvalRecord | undefined;
      result.stoppedEarly = state.stoppedEarly === true;
      run.sinceImprovement = (state.sinceImprovement as number | undefined) ?? 0;
      run.historyBytes = history.bytes;
      run.historyLines = history.lines;
      run.lastCheckpoint = { dir, step: result.steps };
      if (best.size > 0) run.bestState = best;
    } catch (error) {
      disposeAll(best);
      throw error;
    } finally {
      for (const tensor of tensors.values()) tensor.dispose();
    }
  }
}

/** What fit() tracks besides its result: the best state, early stopping, and the checkpoint on disk. */
class RunState {
  readonly result: FitResult = { steps: 0, history: [], evals: [], stoppedEarly: false };
  /** Copies of the trained tensors at the best evaluation. */
  bestState: Map<string, Tensor> | undefined;
  sinceImprovement = 0;
  lastCheckpoint: CheckpointLocation | undefined;
  /** The history file's length and line count as the last checkpoint published them. */
  historyBytes = 0;
  historyLines = 0;
  /** Records since the last checkpoint, appended to the history file by the next. */
  pending: HistoryEntry[] = [];
}

export function disposeAll(tensors: Map<string, Tensor> | undefined): void {
  for (const tensor of tensors?.values() ?? []) tensor.dispose();
}
