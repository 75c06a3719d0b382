// Single-level training (LoRA, DoRA, full fine-tuning, head only): whatever requires grad is trained on the whole
// training set.
import { type Optimizer } from '../optim/index';
import { tidy, type Tensor } from '../tensor';
import { BatchStream, type Example } from './data';
import { adoptGradients, shardedPass } from './distributed';
import { collateFor } from './model';
import { type LoopOptions, type StepRecord, TrainingLoop } from './loop';
import { type OptimizerOptions, ScheduledOptimizer } from './optimizers';

/** Options of the single-level {@link Trainer}. */
export interface TrainerOptions extends LoopOptions {
  /** The optimizer and its schedule over `parameters` (default AdamW, lr 1e-3). */
  optimizer?: OptimizerOptions;
  /** The tensors to train; by default every parameter of the model that requires grad. */
  parameters?: Tensor[];
}

/**
 * Trains whatever requires grad (an adapter's A, B and magnitudes, a head, or every weight) on the whole training set
 * with one optimizer: LoRA, DoRA, full fine-tuning, head only. Throws a RangeError when nothing requires grad.
 */
export class Trainer extends TrainingLoop {
  /** The tensors trained: `options.parameters`, else every model parameter that required grad at construction. */
  readonly parameters: Tensor[];
  #optimizer: ScheduledOptimizer | undefined;
  #batches: BatchStream<Example> | undefined;

  constructor(options: TrainerOptions) {
    super(options);
    this.parameters = options.parameters ?? this.model.parameters().filter((tensor) => tensor.requiresGrad);
    if (this.parameters.length === 0) throw new RangeError('Trainer: nothing to train (no parameter requires grad)');
  }

  protected prepare(train: readonly Example[]): number {
    this.#batches = new BatchStream(train, this.batchSize, this.seed);
    const stepsPerEpoch = Math.ceil(train.length / this.batchSize);
    const options = this.options as TrainerOptions;
    const totalSteps = options.maxSteps ?? (options.epochs ?? 3) * stepsPerEpoch;
    this.#optimizer?.optimizer.dispose();
    this.#optimizer = new ScheduledOptimizer(this.parameters, options.optimizer ?? {}, totalSteps);
    return stepsPerEpoch;
  }

  /**
   * One optimizer step on `examples` (for custom loops; fit() calls it with its own batches). `index` is the step's
   * 0-based position in the run, which the learning-rate schedule follows; the record's `step` is `index + 1`. Under
   * MPI every rank passes the same global batch and trains its share of it; the loss is the global batch's.
   */
  step(examples: readonly Example[], index = 0): StepRecord {
    if (this.#optimizer === undefined) {
      const options = this.options as TrainerOptions;
      this.#optimizer = new ScheduledOptimizer(this.parameters, options.optimizer ?? {}, options.maxSteps ?? 1);
    }
    // Under MPI: this rank's shard of the global batch, its gradients and loss averaged over the ranks (weighted by
    // what each shard's loss counts), so every rank takes the same optimizer step.
    const {
      tensors: grads,
      figures: [loss],
    } = shardedPass(this.model, examples, this.parameters, 1, (shard) => {
      const loss = tidy(() => {
        const { loss } = this.model.forward(collateFor(this.model, shard));
        loss!.backward({ inputs: this.parameters });
        return loss!.item();
      });
      return { tensors: this.parameters.map((parameter) => parameter.grad), figures: [loss] };
    });
    adoptGradients(this.parameters, grads);
    const { lr, gradNorm } = this.#optimizer.step(index);
    const step = index + 1;
    return gradNorm === undefined ? { step, loss, lr } : { step, loss, lr, gradNorm };
  }

  protected nextStep(index: number): StepRecord {
    return this.step(this.#batches!.next(), index);
  }

  protected trainedTensors(): Map<string, Tensor> {
    const names = new Map(this.model.namedParameters().map(([name, tensor]) => [tensor, name]));
    return new Map(this.parameters.map((tensor, index) => [names.get(tensor) ?? `parameter.${index}`, tensor]));
  }

  protected namedOptimizers(): Map<string, Optimizer> {
    return new Map(this.#optimizer ? [['main', this.#optimizer.optimizer]] : []);
  }

  protected streamState(): Record<string, unknown> {
    return { batches: this.#batches!.state() };
  }

  protected restoreStreamState(state: Record<string, unknown>): void {
    this.#batches!.restore(state.batches as never);
  }

  /** Frees the optimizer's state. */
  dispose(): void {
    this.#optimizer?.optimizer.dispose();
    this.#optimizer = undefined;
  }
}
