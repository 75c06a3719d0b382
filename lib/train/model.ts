// What the trainers and evaluation need of a model, whatever it computes: an encoder with a task head, or a causal
// language model. Both take a collated batch and return logits and, with labels, the task's loss.
import { type IdMatrix } from '../models/inputs';
import { type Module } from '../nn/module';
import { type Tensor } from '../tensor';
import { collate, type CollatedBatch, type CollateLimits, type Example } from './data';

export interface TrainableConfig extends CollateLimits {
  /** A language model may have none (GPT-2): its batches are then padded with its first eos token, or 0. */
  padTokenId: number | undefined;
  /** A language model's end-of-sequence tokens. */
  eosTokenIds?: readonly number[];
  /** The task: what the labels mean ('causal-lm': the next token at every position) and how evaluation scores. */
  task: NonNullable<CollateLimits['task']>;
}

/**
 * What forward takes: ids, masks, and labels in whatever form the model reads them (collate's are a Float32Array of
 * classes or targets, or an Int32Array of token ids for a language model).
 */
export interface ModelInputs {
  /** [batch, seq] token ids. */
  inputIds: IdMatrix;
  /** 1 = attend, 0 = padding, [batch, seq]; default all ones. */
  attentionMask?: IdMatrix;
  /** [batch, seq] segment ids for models with token types (BERT); default all zeros. */
  tokenTypeIds?: IdMatrix;
  /** Targets; with them forward also returns the task's loss. */
  labels?: unknown;
}

export interface TrainableModel extends Module {
  /** The model's config: its task, padding and limits. */
  readonly config: TrainableConfig;
  /** Logits, and with labels the task's loss (a language model shifts its labels inside, as transformers). */
  forward(inputs: ModelInputs): {
    /** The task's outputs: classes, targets, or next-token logits [batch, seq, vocab]. */
    logits: Tensor;
    /** The mean loss over what the labels count, when labels were given. */
    loss?: Tensor;
  };
}

/**
 * The id a model's batches are padded with: its pad token, else (a language model without one, as GPT-2) its first
 * eos token, else 0. Padding is masked out and labelled -100, so the choice changes no result.
 */
export function paddingId(config: TrainableConfig): number {
  return config.padTokenId ?? config.eosTokenIds?.[0] ?? 0;
}

/** `examples` collated as `model` takes them: its padding, its limits (vocabulary, labels) and its task. */
export function collateFor(model: TrainableModel, examples: readonly Example[]): CollatedBatch {
  return collate(examples, paddingId(model.config), model.config);
}
