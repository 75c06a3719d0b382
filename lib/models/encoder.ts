// What every encoder model shares whatever its family: input checks, the masked pass through the family's encoder,
// the task's head, and the loss transformers computes for that task.
import { bceWithLogits, crossEntropy, IGNORE_INDEX, mseLoss } from '../ops/loss';
import { reshape } from '../ops/shape';
import { Module } from '../nn/module';
import { Tensor } from '../tensor';
import { type EncoderModelConfig } from './config';
import { expectSameShape, type IdBatch, type IdMatrix, maskTensor, toIdBatch } from './inputs';

/** What an encoder model's forward takes: a padded batch of ids, and labels for the loss. */
export interface ClassifierInputs {
  /** [batch, seq] token ids. */
  inputIds: IdMatrix;
  /** [batch, seq], 1 for tokens and 0 for padding; all ones when omitted. */
  attentionMask?: IdMatrix;
  /** [batch, seq] segment ids (BERT's sentence A/B); zeros when omitted. Families without token types refuse them. */
  tokenTypeIds?: IdMatrix;
  /**
   * Per sequence: class indices (-100 ignores a row) or regression targets (num_labels 1), one per example; for
   * multi-label classification, numLabels targets (0 or 1) per example. Per token: one class per token, -100 ignored
   * (padding). Rows ([batch][...]) or flattened row by row.
   */
  labels?: readonly number[] | Int32Array | Float32Array | readonly (readonly number[])[];
}

/** What an encoder model's forward returns. */
export interface ClassifierOutput {
  /** [batch, numLabels] per sequence, [batch, seq, numLabels] per token; the last hidden states for a bare model. */
  logits: Tensor;
  /** The task's loss, as transformers computes it, when labels were given. */
  loss?: Tensor;
}

/**
 * A family's encoder: ids (and token types) in, the last hidden states [batch, seq, hidden] out. `mask` is the
 * attention mask as the softmax reads it; `maskIds` the same as ids, for families whose embeddings use it (ESM).
 */
export interface EncoderBody extends Module {
  /** ids [batch, seq] → the last hidden states [batch, seq, hidden]. */
  forward(ids: IdBatch, tokenTypes: IdBatch | undefined, mask: Tensor | undefined, maskIds?: IdBatch): Tensor;
}

/**
 * An encoder model of any family with its task's head: the bare model ('base'), a sequence classifier (one label, a
 * regression target, or multi-label) or a token classifier. Build one with `models.fromConfig` or `models.load`.
 */
export abstract class EncoderTaskModel extends Module {
  /** The parsed config it was built from: family, sizes, task and labels. */
  abstract readonly config: EncoderModelConfig;
  /** The encoder's parameters' prefix in checkpoints ('bert', 'roberta', 'distilbert'). */
  abstract readonly basePrefix: string;

  /** The family's encoder, under its checkpoint name (`bert`, `roberta`, `distilbert`, `esm`). */
  protected abstract get base(): EncoderBody;
  /** The task's output from the last hidden states (the hidden states themselves for a bare model). */
  protected abstract head(hidden: Tensor): Tensor;

  /** In bfloat16 (`to('bfloat16')`) the encoder's matrices freeze; the task head, trained with the adapters, stays. */
  protected override keepsFloat32(name: string): boolean {
    return !name.startsWith(`${this.basePrefix}.`);
  }

  /**
   * Encodes the batch and applies the head; with labels, also the task's loss as transformers computes it
   * (cross-entropy, MSE for regression, BCE with logits for multi-label). Throws a TypeError or RangeError for ids,
   * masks or labels of the wrong shape or range, and a TypeError for labels on a bare model.
   */
  forward(inputs: ClassifierInputs): ClassifierOutput {
    if (inputs === null || typeof inputs !== 'object') throw new TypeError('forward: expected { inputIds, ... }');
    const ids = toIdBatch(inputs.inputIds, 'inputIds');
    let tokenTypes: IdBatch | undefined;
    if (inputs.tokenTypeIds !== undefined) {
      tokenTypes = toIdBatch(inputs.tokenTypeIds, 'tokenTypeIds');
      expectSameShape(tokenTypes, ids, 'tokenTypeIds');
    }
    const maskIds = inputs.attentionMask === undefined ? undefined : toIdBatch(inputs.attentionMask, 'attentionMask');
    if (maskIds) expectSameShape(maskIds, ids, 'attentionMask');
    const mask = maskIds === undefined ? undefined : maskTensor(maskIds, this.device);
    let hidden: Tensor;
    try {
      hidden = this.base.forward(ids, tokenTypes, mask, maskIds);
    } finally {
      mask?.dispose();
    }
    const logits = this.head(hidden);
    if (inputs.labels === undefined) return { logits };
    return { logits, loss: this.loss(logits, inputs.labels, ids) };
  }

  private loss(logits: Tensor, labels: NonNullable<ClassifierInputs['labels']>, ids: IdBatch): Tensor {
    const { task, numLabels, problemType } = this.config;
    if (task === 'base') {
      throw new TypeError(`forward: ${this.config.architecture} has no head, so no loss: pass no labels`);
    }
    const values = flatLabels(labels);
    const perExample =
      task === 'token-classification' ? ids.seq : problemType === 'multi_label_classification' ? numLabels : 1;
    const expected = ids.batch * perExample;
    if (values.length !== expected) {
      throw new RangeError(
        `labels has ${values.length} entries; a batch of ${ids.batch}` +
          (perExample === 1
            ? ' needs one per example'
            : ` × ${perExample} needs ${expected} (${task === 'token-classification' ? 'one per token' : 'one per class'})`),
      );
    }
    if (problemType === 'multi_label_classification') {
      const targets = Float32Array.from(values, (value, index) => {
        if (!(value >= 0 && value <= 1))
          throw new RangeError(`labels[${index}] is ${value}; expected a target in [0, 1]`);
        return value;
      });
      const target = Tensor.from(targets, [ids.batch, numLabels], { device: logits.device });
      try {
        return bceWithLogits(logits, target);
      } finally {
        target.dispose();
      }
    }
    if (problemType === 'regression') {
      const target = Tensor.from(Float32Array.from(values), [ids.batch], { device: logits.device });
      try {
        return mseLoss(reshape(logits, [ids.batch]), target);
      } finally {
        target.dispose();
      }
    }
    const classes = Int32Array.from(values, (label, index) => {
      if (!Number.isInteger(label)) throw new TypeError(`labels[${index}] must be an integer class, got ${label}`);
      // Checked before Int32Array storage, which would wrap 2^32 to class 0.
      if (label !== IGNORE_INDEX && (label < 0 || label >= numLabels)) {
        throw new RangeError(`labels[${index}] is ${label}; expected a class in [0, ${numLabels}) or -100 (ignored)`);
      }
      return label;
    });
    // Per token: every position is a row of the cross-entropy, padding and sub-word continuations ignored (-100).
    return crossEntropy(task === 'token-classification' ? reshape(logits, [expected, numLabels]) : logits, classes);
  }
}

function flatLabels(labels: NonNullable<ClassifierInputs['labels']>): ArrayLike<number> {
  if (Array.isArray(labels) && labels.some((row) => Array.isArray(row))) {
    return (labels as readonly (readonly number[])[]).flat();
  }
  if (!(Array.isArray(labels) || labels instanceof Int32Array || labels instanceof Float32Array)) {
    throw new TypeError('labels must be an array of numbers, an Int32Array or a Float32Array');
  }
  return labels as ArrayLike<number>;
}
