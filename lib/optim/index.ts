// Optimizers, learning-rate schedules and gradient clipping.
export { clipGradNorm } from './clip';
export {
  AdamW,
  type AdamWOptions,
  Optimizer,
  type OptimizerStateDict,
  SGD,
  type SGDOptions,
  type StepOptions,
} from './optimizer';
export { learningRateAt, type Schedule } from './schedule';
