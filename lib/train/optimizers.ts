// Building an optimizer and its learning-rate schedule from plain options.
import { AdamW, clipGradNorm, learningRateAt, type Optimizer, type Schedule, SGD } from '../optim/index';
import { type Tensor } from '../tensor';

export interface OptimizerOptions {
  /** 'adamw' (default) or 'sgd'. */
  type?: 'adamw' | 'sgd';
  lr?: number;
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
  momentum?: number;
  nesterov?: boolean;
  /** The learning-rate schedule over the run (default constant). */
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
