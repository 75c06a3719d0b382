// BiDoRA's bi-level training (docs/DESIGN.md, "The method, precisely"): the direction (A, B) and the head learn on the
// lower split, the magnitudes on the upper split, coupled by a finite-difference hypergradient.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { adaptedLayers, type AdaptedLayer } from '../adapters/layers';
import { appliedConfig } from '../adapters/apply';
import { grad } from '../autograd';
import { add, scale } from '../ops/elementwise';
import { globalNorm } from '../ops/reduce';
import { orthogonalityPenalty } from '../ops/regularizer';
import { type Optimizer } from '../optim/index';
import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { keep, type Tensor, tidy } from '../tensor';
import { CHECKPOINT_FILE, removeCheckpoint } from './checkpoint';
import { BatchStream, type CollatedBatch, type Example, splitLowerUpper } from './data';
import { adoptGradients, distributed, shardedPass, shardOf } from './distributed';
import { collateFor } from './model';
import { applySecondOrder } from './hypergradient';
import {
  disposeAll,
  type FitOptions,
  type FitResult,
  type LoopOptions,
  positiveInteger,
  type StepRecord,
  TrainingLoop,
} from './loop';
import { type OptimizerOptions, ScheduledOptimizer } from './optimizers';
import { Trainer } from './trainer';

/** The retraining phase's checkpoint folder, inside the search's `checkpointDir`. */
export const RETRAIN_DIR = 'retrain';
/** The lower parameters at the start of the search (where the retraining starts), beside the search's checkpoint. */
export const RETRAIN_START_FILE = 'retrain-start.safetensors';

/** `xi`'s default, chosen on the measured map of BiDoRA's settings (docs/bidora-map.md). */
export const DEFAULT_XI: 1 | 'lower-lr' = 1;

/** Options of {@link BiLevelTrainer}: the two levels' optimizers and the hypergradient. */
export interface BiLevelTrainerOptions extends LoopOptions {
  /** Over the direction (A, B) and the modules to save; default AdamW lr 1e-3. */
  lowerOptimizer?: OptimizerOptions;
  /**
   * Over the magnitudes; default AdamW at the lower optimizer's learning rate (one rate for both levels, as the
   * paper's code; docs/bidora-map.md measures a third and three times it, neither better).
   */
  upperOptimizer?: OptimizerOptions;
  /** The share of the training set the magnitudes learn on (default 0.2). */
  upperFraction?: number;
  /** 'finite-difference' (default): g − xi·(g+ − g−)/(2ε); 'first-order': g alone. */
  hypergradient?: 'finite-difference' | 'first-order';
  /**
   * The factor on the second-order term: 1 (as Betty in the official code) or 'lower-lr', the lower learning rate
   * (DARTS). Default {@link DEFAULT_XI}.
   */
  xi?: number | 'lower-lr';
  /** One upper step every this many lower steps (default 1). */
  unrollSteps?: number;
  /** Weight of the orthogonality regulariser mean_layers ||D Dᵀ − I||_F on the lower level (default 1e-5; 0: off). */
  gamma?: number;
  /**
   * After the search, restore A, B and the head to their initial values and train them on the whole training set with
   * the searched magnitudes fixed: the paper's retraining phase, on by default (`true`: as many steps as the search
   * took; docs/bidora-map.md: it gained on both tasks measured). `false`: the searched model as it is.
   */
  retrain?:
    | boolean
    | {
        /** Steps of the retraining; default as many as the search took (or `epochs` passes when given). */
        maxSteps?: number;
        /** Passes over the whole training set when `maxSteps` is not given (default: the search's step count). */
        epochs?: number;
        /** Over A, B and the head; default `lowerOptimizer`. */
        optimizer?: OptimizerOptions;
      };
}

/** What one BiDoRA iteration reports: `loss` is the lower task loss; the upper figures only on upper steps. */
export interface BiLevelStep extends StepRecord {
  /** The task loss on the lower batch, before the regulariser (equals `loss`). */
  lowerLoss: number;
  /** The regulariser's value (before gamma), when gamma > 0. */
  regularizer: number;
  /** The task loss on the upper batch, at the updated direction; on steps with an upper update only. */
  upperLoss: number;
  /** ||g||, the direct gradient of the upper loss with respect to the magnitudes. */
  directNorm: number;
  /** ||xi·(g+ − g−)/(2ε)||, the second-order term (0 in first-order mode). */
  secondOrderNorm: number;
}

/** What {@link BiLevelTrainer.fit} resolves to: the search, and the retraining phase when asked for. */
export interface BiLevelFitResult extends FitResult {
  /** The retraining phase, when asked for. */
  retrain?: FitResult;
}

/**
 * BiDoRA's bi-level training on a model with `bidora` (or DoRA) adapters: the direction (A, B) and the head learn on
 * the lower split, the magnitudes on the upper split (`upperFraction` of the training set), coupled by a
 * finite-difference hypergradient; then, by default, the paper's retraining phase. `epochs` counts steps as a
 * Trainer does over the whole training set, so BiDoRA's direction takes as many steps as DoRA's. The defaults are
 * the settings that served best on the measured map (docs/bidora-map.md). Throws a RangeError when the model has no adapters, an adapter has no magnitude, or
 * an option is out of range.
 */
export class BiLevelTrainer extends TrainingLoop {
  /** The adapted layers, in module order. */
  readonly layers: AdaptedLayer[];
  /** A and B of every adapted layer, then the modules to save: the lower level's parameters. */
  readonly lowerParameters: Tensor[];
  /** The magnitude vector of every adapted layer: the upper level's parameters. */
  readonly magnitudes: Tensor[];
  readonly #settings: Required<
    Pick<BiLevelTrainerOptions, 'upperFraction' | 'hypergradient' | 'xi' | 'unrollSteps' | 'gamma'>
  >;
  #lowerOptimizer: ScheduledOptimizer | undefined;
  #upperOptimizer: ScheduledOptimizer | undefined;
  #lowerBatches: BatchStream<Example> | undefined;
  #upperBatches: BatchStream<Example> | undefined;
  #train: readonly Example[] = [];

  constructor(options: BiLevelTrainerOptions) {
    super(options);
    this.layers = adaptedLayers(this.model);
    if (this.layers.length === 0) {
      throw new RangeError(
        'BiLevelTrainer: the model has no adapters; call adapters.apply(model, { method: "bidora", ... })',
      );
    }
    const missing = this.layers.find(({ adapter }) => !adapter.layerKind.hasMagnitude);
    if (missing) {
      throw new RangeError(
        `BiLevelTrainer: ${missing.path} is a ${missing.adapter.kind} adapter; BiDoRA needs magnitudes (DoRA)`,
      );
    }
    const upperFraction = options.upperFraction ?? 0.2;
    if (!(upperFraction > 0 && upperFraction < 1)) {
      throw new RangeError(`BiLevelTrainer: upperFraction must be in (0, 1), got ${upperFraction}`);
    }
    const hypergradient = options.hypergradient ?? 'finite-difference';
    if (hypergradient !== 'finite-difference' && hypergradient !== 'first-order') {
      throw new RangeError(`BiLevelTrainer: hypergradient must be 'finite-difference' or 'first-order'`);
    }
    const xi = options.xi ?? DEFAULT_XI;
    if (xi !== 'lower-lr' && !Number.isFinite(xi))
      throw new RangeError(`BiLevelTrainer: xi must be a number or 'lower-lr'`);
    const gamma = options.gamma ?? 1e-5;
    if (!(gamma >= 0)) throw new RangeError(`BiLevelTrainer: gamma must be non-negative, got ${gamma}`);
    this.#settings = {
      upperFraction,
      hypergradient,
      xi,
      unrollSteps: positiveInteger(options.unrollSteps, 'unrollSteps', 1),
      gamma,
    };
    const headNames = appliedConfig(this.model)?.modulesToSave ?? [];
    const head = this.model
      .namedParameters()
      .filter(([name]) => headNames.some((module) => name.startsWith(`${module}.`)))
      .map(([, tensor]) => tensor);
    this.lowerParameters = [...this.layers.flatMap(({ adapter }) => [adapter.loraA, adapter.loraB]), ...head];
    this.magnitudes = this.layers.map(({ adapter }) => adapter.magnitude!);
  }

  /**
   * Task loss plus gamma × the mean orthogonality penalty over adapted layers, on `batch`. The penalty depends on the
   * direction only (dR/dm ≡ 0), so passes that want magnitude gradients alone leave it out (`withPenalty` false).
   */
  lowerObjective(
    batch: CollatedBatch,
    withPenalty = true,
  ): {
    /** The objective as a scalar tensor, for backward. */
    loss: Tensor;
    /** The task loss alone. */
    taskLoss: number;
    /** The mean orthogonality penalty before gamma; 0 when left out. */
    regularizer: number;
  } {
    const { loss: taskLoss } = this.model.forward(batch);
    if (this.#settings.gamma === 0 || !withPenalty)
      return { loss: taskLoss!, taskLoss: taskLoss!.item(), regularizer: 0 };
    const penalties = this.layers.map(({ layer, adapter }) =>
      orthogonalityPenalty({
        weight: layer.weight,
        loraA: adapter.loraA,
        loraB: adapter.loraB,
        scale: adapter.options.scale,
      }),
    );
    const mean = scale(
      penalties.reduce((total, penalty) => add(total, penalty)),
      1 / penalties.length,
    );
    return {
      loss: add(taskLoss!, scale(mean, this.#settings.gamma)),
      taskLoss: taskLoss!.item(),
      regularizer: mean.item(),
    };
  }

  /**
   * dL_tr/dm on `batch` at the current parameters, computing no A, B or head gradient. The regulariser is part of
   * L_tr but contributes nothing to dL_tr/dm, so it is not evaluated here.
   */
  #magnitudeGradients(batch: CollatedBatch): Tensor[] {
    return tidy(() => grad(this.lowerObjective(batch, false).loss, this.magnitudes));
  }

  #ensureOptimizers(totalSteps: number): void {
    const options = this.options as BiLevelTrainerOptions;
    this.#lowerOptimizer ??= new ScheduledOptimizer(this.lowerParameters, options.lowerOptimizer ?? {}, totalSteps);
    this.#upperOptimizer ??= new ScheduledOptimizer(
      this.magnitudes,
      options.upperOptimizer ?? { lr: options.lowerOptimizer?.lr },
      totalSteps,
    );
  }

  /**
   * One iteration: a lower step on `lowerExamples`; then, if `upperExamples` are given, the hypergradient of the
   * upper loss with respect to the magnitudes at the updated direction and one upper step. Returns the figures.
   * `index` is the iteration's 0-based position in the run, which the schedules follow; the record's `step` is
   * `index + 1`. Under MPI every rank passes the same global batches and trains its share of each.
   */
  step(lowerExamples: readonly Example[], upperExamples?: readonly Example[], index = 0): BiLevelStep {
    this.#ensureOptimizers(this.options.maxSteps ?? 1);
    // Under MPI every pass below runs on this rank's shard of its global batch and is averaged over the ranks
    // (distributed.ts): the lower gradients, the upper loss's direct gradient and v (so ||v|| and ε are the global
    // ones), and the perturbed magnitude gradients g±.
    const { rank, worldSize } = distributed();
    const lowerShard = shardOf(lowerExamples, rank, worldSize);
    const lowerBatch = lowerShard.length > 0 ? collateFor(this.model, lowerShard) : undefined;
    const {
      tensors: lowerGrads,
      figures: [taskLoss, regularizer],
    } = shardedPass(this.model, lowerExamples, this.lowerParameters, 2, () => {
      const figures = tidy(() => {
        const objective = this.lowerObjective(lowerBatch!);
        objective.loss.backward({ inputs: this.lowerParameters });
        return [objective.taskLoss, objective.regularizer];
      });
      return { tensors: this.lowerParameters.map((parameter) => parameter.grad), figures };
    });
    adoptGradients(this.lowerParameters, lowerGrads);
    const { lr } = this.#lowerOptimizer!.step(index);
    const record: BiLevelStep = {
      step: index + 1,
      loss: taskLoss,
      lr,
      lowerLoss: taskLoss,
      regularizer,
      upperLoss: NaN,
      directNorm: NaN,
      secondOrderNorm: NaN,
    };
    if (upperExamples === undefined) return withoutUpper(record);

    const count = this.magnitudes.length;
    // v = dL_val/dθ' is only needed for the second-order term: first-order asks for the magnitudes' gradients alone.
    const firstOrder = this.#settings.hypergradient === 'first-order';
    const wanted = firstOrder ? this.magnitudes : [...this.magnitudes, ...this.lowerParameters];
    const upper = shardedPass(this.model, upperExamples, wanted, 1, (shard) =>
      tidy(() => {
        const { loss } = this.model.forward(collateFor(this.model, shard));
        return { tensors: grad(loss!, wanted), figures: [loss!.item()] };
      }),
    );
    const [upperLoss] = upper.figures;
    const grads = upper.tensors as Tensor[];
    const direct = grads.slice(0, count);
    const direction = grads.slice(count);
    record.upperLoss = upperLoss;
    record.directNorm = globalNorm(direct);
    record.secondOrderNorm = 0;
    try {
      if (!firstOrder) {
        record.secondOrderNorm = this.#secondOrder(lowerExamples, lowerBatch, direct, direction, lr);
      }
      this.magnitudes.forEach((magnitude, index) => {
        magnitude.grad?.dispose();
        magnitude.grad = keep(direct[index]);
      });
      this.#upperOptimizer!.step(index);
    } finally {
      for (const tensor of direction) tensor.dispose();
    }
    return record;
  }

  /** Subtracts xi·(g+ − g−)/(2ε) from `direct` in place (same lower batch, same dropout masks); returns its norm. */
  #secondOrder(
    lowerExamples: readonly Example[],
    lowerBatch: CollatedBatch | undefined,
    direct: Tensor[],
    direction: Tensor[],
    lowerLr: number,
  ): number {
    const streams = this.model.seedStreams();
    const masks = streams.map((stream) => stream.state);
    const xi = this.#settings.xi === 'lower-lr' ? lowerLr : this.#settings.xi;
    return applySecondOrder(
      direct,
      {
        magnitudeGradients: () =>
          shardedPass(this.model, lowerExamples, this.magnitudes, 0, () => ({
            tensors: this.#magnitudeGradients(lowerBatch!),
            figures: [],
          })).tensors as Tensor[],
        lowerParameters: this.lowerParameters,
        direction,
        beforePass: () => streams.forEach((stream, index) => (stream.state = masks[index])),
      },
      xi,
    );
  }

  protected prepare(train: readonly Example[]): number {
    const { lower, upper } = splitLowerUpper([...train], this.#settings.upperFraction, this.seed);
    this.#train = train;
    this.#lowerBatches = new BatchStream(lower, this.batchSize, this.seed);
    this.#upperBatches = new BatchStream(upper, this.batchSize, this.seed + 1);
    // An epoch is a pass's worth of steps over the whole training set, as a Trainer's: with the same `epochs` the
    // direction takes as many steps as DoRA's (docs/bidora-map.md), the lower split going round 1/(1 − upperFraction)
    // times.
    const stepsPerEpoch = Math.ceil(train.length / this.batchSize);
    this.#lowerOptimizer?.optimizer.dispose();
    this.#upperOptimizer?.optimizer.dispose();
    this.#lowerOptimizer = undefined;
    this.#upperOptimizer = undefined;
    this.#ensureOptimizers(this.options.maxSteps ?? (this.options.epochs ?? 3) * stepsPerEpoch);
    return stepsPerEpoch;
  }

  protected nextStep(index: number): StepRecord {
    const lower = this.#lowerBatches!.next();
    const upper = (index + 1) % this.#settings.unrollSteps === 0 ? this.#upperBatches!.next() : undefined;
    return this.step(lower, upper, index);
  }

  /**
   * The bi-level search as {@link Trainer.fit}, then, with `retrain`, A, B and the head reset to their values at the
   * start of the search and trained on the whole training set with the magnitudes fixed. With a `checkpointDir` the
   * retraining checkpoints into its `retrain` folder, and a run killed in either phase resumes where it was.
   */
  override async fit(train: readonly Example[], options: FitOptions = {}): Promise<BiLevelFitResult> {
    const option = (this.options as BiLevelTrainerOptions).retrain ?? true;
    const retrain = option === true ? {} : option;
    const start = retrain ? this.#retrainStart(options) : undefined;
    try {
      const result: BiLevelFitResult = await super.fit(train, options);
      if (retrain && start) {
        const lower = this.#lowerByName();
        for (const [name, values] of start) lower.get(name)!.copyFrom(values);
        result.retrain = await this.#retrain(retrain, result.steps, options);
      }
      return result;
    } finally {
      disposeAll(start);
    }
  }

  #lowerByName(): Map<string, Tensor> {
    const trained = this.trainedTensors();
    const lower = new Set(this.lowerParameters);
    return new Map([...trained].filter(([, tensor]) => lower.has(tensor)));
  }

  /**
   * Copies of the lower parameters as the search starts from them: where the retraining starts. With a
   * `checkpointDir` they are also written beside the search's checkpoint, so a resumed run retrains from the same
   * start whatever its model was initialised with; a run that starts anew writes them and drops an earlier run's
   * retraining checkpoint.
   */
  #retrainStart(options: FitOptions): Map<string, Tensor> {
    const lower = this.#lowerByName();
    const dir = options.checkpointDir;
    const file = dir === undefined ? undefined : join(dir, RETRAIN_START_FILE);
    if (dir && file && options.resume && existsSync(join(dir, CHECKPOINT_FILE)) && existsSync(file)) {
      const { tensors } = readSafetensors(file);
      const start = new Map<string, Tensor>();
      try {
        for (const [name, tensor] of lower) {
          const saved = tensors.get(name);
          if (saved === undefined || saved.shape.join() !== tensor.shape.join()) {
            throw new RangeError(`resume: ${file} lacks ${name} of shape [${tensor.shape}]`);
          }
          const moved = saved.to(tensor.device); // itself when already there: then a copy outlives the file's
          start.set(name, keep(moved === saved ? saved.clone() : moved));
        }
        return start;
      } catch (error) {
        disposeAll(start);
        throw error;
      } finally {
        for (const tensor of tensors.values()) tensor.dispose();
      }
    }
    const start = new Map([...lower].map(([name, tensor]) => [name, keep(tensor.clone())]));
    if (dir && file && distributed().rank === 0) {
      removeCheckpoint(join(dir, RETRAIN_DIR));
      mkdirSync(dir, { recursive: true });
      writeSafetensors(file, start);
    }
    return start;
  }

  async #retrain(
    retrain: Exclude<BiLevelTrainerOptions['retrain'], boolean | undefined>,
    searchSteps: number,
    options: FitOptions,
  ): Promise<FitResult> {
    for (const magnitude of this.magnitudes) magnitude.requiresGrad = false;
    const trainer = new Trainer({
      ...this.options,
      maxSteps: retrain.maxSteps ?? (retrain.epochs === undefined ? searchSteps : undefined),
      epochs: retrain.epochs,
      optimizer: retrain.optimizer ?? (this.options as BiLevelTrainerOptions).lowerOptimizer,
      parameters: this.lowerParameters,
    });
    try {
      const checkpointDir = options.checkpointDir && join(options.checkpointDir, RETRAIN_DIR);
      return await trainer.fit(this.#train, { ...options, checkpointDir });
    } finally {
      trainer.dispose();
      for (const magnitude of this.magnitudes) magnitude.requiresGrad = true;
    }
  }

  protected trainedTensors(): Map<string, Tensor> {
    const names = new Map(this.model.namedParameters().map(([name, tensor]) => [tensor, name]));
    return new Map([...this.lowerParameters, ...this.magnitudes].map((tensor) => [names.get(tensor)!, tensor]));
  }

  protected namedOptimizers(): Map<string, Optimizer> {
    return new Map([
      ['lower', this.#lowerOptimizer!.optimizer],
      ['upper', this.#upperOptimizer!.optimizer],
    ]);
  }

  protected streamState(): Record<string, unknown> {
    return { lower: this.#lowerBatches!.state(), upper: this.#upperBatches!.state() };
  }

  protected restoreStreamState(state: Record<string, unknown>): void {
    this.#lowerBatches!.restore(state.lower as never);
    this.#upperBatches!.restore(state.upper as never);
  }

  /** Frees both optimizers' state. */
  dispose(): void {
    this.#lowerOptimizer?.optimizer.dispose();
    this.#upperOptimizer?.optimizer.dispose();
    this.#lowerOptimizer = undefined;
    this.#upperOptimizer = undefined;
  }
}

/** A lower-only step's record: the upper figures are absent, not NaN (the loop rejects non-finite figures). */
function withoutUpper(record: BiLevelStep): BiLevelStep {
  const { upperLoss: _upper, directNorm: _direct, secondOrderNorm: _second, ...rest } = record;
  return rest as BiLevelStep;
}
