// Building an optimizer and its learning-rate schedule from plain options.
import { AdamW, clipGradNorm, learningRateAt, type Optimizer, type Schedule, SGD } from '../optim/index';
import { type Tensor } from '../tensor';

/**
 * One optimizer of a training run (a Trainer's, or either level of a BiLevelTrainer): AdamW or SGD, its learning-rate
 * schedule and gradient clipping. Values are checked as `AdamW` and `SGD` check them (RangeError).
 */
export interface OptimizerOptions {
  /** 'adamw' (default) or 'sgd'. */
  type?: 'adamw' | 'sgd';
  /** The base learning rate the schedule scales; default 1e-3. */
  lr?: number;
  /** AdamW's decoupled weight decay (default 0.01) or SGD's L2 penalty (default 0). */
  weightDecay?: number;
  /** AdamW only: the moment decay rates; default [0.9, 0.999]. */
  betas?: [number, number];
  /** AdamW only: the denominator's stabilizing term; default 1e-8. */
  eps?: number;
  /** SGD only: the momentum factor; default 0. */
  momentum?: number;
  /** SGD only: Nesterov momentum (needs momentum above 0); default false. */
  nesterov?: boolean;
  /** The learning-rate schedule over the run (default constant); its totalSteps defaults to the run's. */
  schedule?: Schedule;
  /** Clip the gradients' global norm to this before each step (none by default). */
  maxGradNorm?: number;
}

/** An optimizer over `params` with its schedule: `step(at)` clips, steps with the scheduled rate, clears grads. */
export class ScheduledOptimizer {
  readonly optimizer: Optimizer;
  readonly baseLr: number;
  readonly schedule: Schedule;
  readonly maxGradNorm: number | undefined;

  constructor(
    readonly params: Tensor[],
    options: OptimizerOptions,
    totalSteps: number,
  ) {
    this.baseLr = options.lr ?? 1e-3;
    const schedule = options.schedule ?? { type: 'constant' };
    this.schedule =
      schedule.type === 'constant' ? schedule : { ...schedule, totalSteps: schedule.totalSteps ?? totalSteps };
    this.maxGradNorm = options.maxGradNorm;
    this.optimizer =
      options.type === 'sgd'
        ? new SGD(params, {
            lr: this.baseLr,
            momentum: options.momentum ?? 0,
            weightDecay: options.weightDecay ?? 0,
            nesterov: options.nesterov ?? false,
          })
        : new AdamW(params, {
            lr: this.baseLr,
            betas: options.betas,
            eps: options.eps,
            weightDecay: options.weightDecay ?? 0.01,
          });
  }

  learningRate(step: number): number {
    return learningRateAt(this.baseLr, this.schedule, step);
  }

  /** One update at schedule position `step`; returns the learning rate used and the gradient norm if clipped. */
  step(step: number): { lr: number; gradNorm?: number } {
    const lr = this.learningRate(step);
    const gradNorm = this.maxGradNorm === undefined ? undefined : clipGradNorm(this.params, this.maxGradNorm);
    this.optimizer.step({ lr });
    this.optimizer.zeroGrad();
    return gradNorm === undefined ? { lr } : { lr, gradNorm };
  }
}
