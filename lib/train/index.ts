// Training: the single-level Trainer and BiDoRA's BiLevelTrainer, evaluation, metrics, data and statistics.
export {
  type BiLevelFitResult,
  type BiLevelStep,
  BiLevelTrainer,
  type BiLevelTrainerOptions,
  DEFAULT_XI,
} from './bilevel';
export { type Checkpoint, CHECKPOINT_FILE, HISTORY_FILE, loadCheckpoint, saveCheckpoint } from './checkpoint';
export * from './data';
export * from './files';
export {
  allreduceMean,
  barrier,
  broadcastFromRoot,
  distributed,
  type DistributedInfo,
  type DistributedOptions,
} from './distributed';
export { type Evaluation, evaluate } from './evaluate';
export { applySecondOrder, finiteDifferenceTerm, type SecondOrderInputs } from './hypergradient';
export {
  type CheckpointLocation,
  type EvalRecord,
  type FitOptions,
  type FitResult,
  type LoopOptions,
  NonFiniteError,
  type StepRecord,
} from './loop';
export * from './metrics';
export { type OptimizerOptions } from './optimizers';
export { type Logger, type LogMode, type ProgressRecord } from './progress';
export { Random } from '../random';
export * from './stats';
export { Trainer, type TrainerOptions } from './trainer';
export {
  fitInWorker,
  type WorkerFitJob,
  type WorkerFitOptions,
  type WorkerMessage,
  type WorkerTrainerOptions,
} from './worker';
export * from './causal-data';
export { collateFor, type ModelInputs, paddingId, type TrainableConfig, type TrainableModel } from './model';
export * from './generation-eval';
