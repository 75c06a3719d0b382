// What the trainers and evaluation need of a model, whatever it computes: an encoder with a task head, or a causal
// language model. Both take a collated batch and return logits and, with labels, the task's loss.
import { type Module } from '../nn/module';
import { type Tensor } from '../tensor';
import { type CollatedBatch, type CollateLimits } from './data';

export interface TrainableConfig extends CollateLimits {
  padTokenId: number;
  /** The task: what the labels mean ('causal-lm': the next token at every position) and how evaluation scores. */
  task: NonNullable<CollateLimits['task']>;
}

export interface TrainableModel extends Module {
  readonly config: TrainableConfig;
  forward(batch: CollatedBatch): { logits: Tensor; loss?: Tensor };
}
