// BERT and RoBERTa encoders for sequence classification, with Hugging Face's parameter names so checkpoints load by
// name: bert.embeddings.word_embeddings.weight, bert.encoder.layer.0.attention.self.query.weight, ..., classifier.*.
import { add } from '../ops/elementwise';
import { tanh } from '../ops/activation';
import { crossEntropy, mseLoss } from '../ops/loss';
import { reshape, select } from '../ops/shape';
import { Tensor } from '../tensor';
import { Dropout, Embedding, LayerNorm, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { type EncoderConfig, TransformerEncoderLayer } from '../nn/transformer';
import { type EncoderModelConfig } from './config';
import { expectSameShape, type IdBatch, type IdMatrix, maskTensor, toIdBatch } from './inputs';
import { SeedScope } from '../random';

export interface ClassifierInputs {
  /** [batch, seq] token ids. */
  inputIds: IdMatrix;
  /** [batch, seq], 1 for tokens and 0 for padding; all ones when omitted. */
  attentionMask?: IdMatrix;
  /** [batch, seq] segment ids (BERT's sentence A/B); zeros when omitted. */
  tokenTypeIds?: IdMatrix;
  /** Class indices (classification; -100 ignores a row) or targets (regression, num_labels = 1). */
  labels?: readonly number[] | Int32Array | Float32Array;
}

export interface ClassifierOutput {
  /** [batch, numLabels]. */
  logits: Tensor;
  /** Cross-entropy (or MSE for regression) when labels were given. */
  loss?: Tensor;
}

function encoderConfig(config: EncoderModelConfig): EncoderConfig {
  return {
    hiddenSize: config.hiddenSize,
    numHeads: config.numHeads,
    intermediateSize: config.intermediateSize,
    hiddenDropout: config.hiddenDropout,
    attentionDropout: config.attentionDropout,
    layerNormEps: config.layerNormEps,
    activation: config.activation,
    initializerRange: config.initializerRange,
  };
}

export class Embeddings extends Module {
  word_embeddings: Embedding;
  position_embeddings: Embedding;
  token_type_embeddings: Embedding;
  LayerNorm: LayerNorm;
  dropout: Dropout;

  constructor(
    readonly config: EncoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    const std = config.initializerRange;
    const { hiddenSize } = config;
    this.word_embeddings = new Embedding(config.vocabSize, hiddenSize, { std, seed: seeds.seed('word_embeddings') });
    this.position_embeddings = new Embedding(config.maxPositions, hiddenSize, {
      std,
      seed: seeds.seed('position_embeddings'),
    });
    this.token_type_embeddings = new Embedding(config.typeVocabSize, hiddenSize, {
      std,
      seed: seeds.seed('token_type_embeddings'),
    });
    this.LayerNorm = new LayerNorm(hiddenSize, config.layerNormEps);
    this.dropout = new Dropout(config.hiddenDropout, seeds.seed('dropout'));
  }

  /**
   * Position ids: 0, 1, ... for BERT; for RoBERTa, counted over non-padding tokens from padding_idx + 1, with padding
   * at padding_idx (transformers' create_position_ids_from_input_ids).
   */
  positionIds(ids: IdBatch): Int32Array {
    const positions = new Int32Array(ids.data.length);
    const pad = this.config.padTokenId;
    for (let row = 0; row < ids.batch; row++) {
      let count = 0;
      for (let column = 0; column < ids.seq; column++) {
        const index = row * ids.seq + column;
        if (this.config.modelType === 'roberta') {
          positions[index] = ids.data[index] === pad ? pad : pad + ++count;
        } else {
          positions[index] = column;
        }
      }
    }
    const largest = positions.reduce((max, value) => Math.max(max, value), 0);
    if (largest >= this.config.maxPositions) {
      throw new RangeError(
        `inputIds: sequences of ${ids.seq} tokens need position ${largest}, beyond max_position_embeddings ` +
          `${this.config.maxPositions}`,
      );
    }
    return positions;
  }

  forward(ids: IdBatch, tokenTypes: IdBatch): Tensor {
    const shape = [ids.batch, ids.seq];
    const words = this.word_embeddings.forward(ids.data, shape);
    const positions = this.position_embeddings.forward(this.positionIds(ids), shape);
    const types = this.token_type_embeddings.forward(tokenTypes.data, shape);
    return this.dropout.forward(this.LayerNorm.forward(add(add(words, positions), types)));
  }
}

export class Encoder extends Module {
  layer: TransformerEncoderLayer[];

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    const layerConfig = encoderConfig(config);
    this.layer = Array.from(
      { length: config.numLayers },
      (_, index) => new TransformerEncoderLayer(layerConfig, seeds.child(`layer.${index}`)),
    );
  }

  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    return this.layer.reduce((value, layer) => layer.forward(value, mask), hidden);
  }
}

/** tanh(dense(first token)): BERT's pooler. */
export class Pooler extends Module {
  dense: Linear;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.dense = new Linear(config.hiddenSize, config.hiddenSize, {
      std: config.initializerRange,
      seed: seeds.seed('dense.weight'),
    });
  }

  forward(hidden: Tensor): Tensor {
    return tanh(this.dense.forward(select(hidden, 1, 0)));
  }
}

/** Embeddings, the encoder stack and (for BERT) the pooler: `bert.*` / `roberta.*`. */
export class EncoderModel extends Module {
  embeddings: Embeddings;
  encoder: Encoder;
  pooler: Pooler | undefined;

  /** `seeds`: the scope of the base model's prefix (`bert`, `roberta`), so parameters are seeded by their full names. */
  constructor(config: EncoderModelConfig, options: { pooler: boolean; seeds: SeedScope }) {
    super();
    const { seeds } = options;
    this.embeddings = new Embeddings(config, seeds.child('embeddings'));
    this.encoder = new Encoder(config, seeds.child('encoder'));
    this.pooler = options.pooler ? new Pooler(config, seeds.child('pooler')) : undefined;
  }

  /** The last hidden states [batch, seq, hidden]. */
  forward(ids: IdBatch, tokenTypes: IdBatch, mask: Tensor | undefined): Tensor {
    return this.encoder.forward(this.embeddings.forward(ids, tokenTypes), mask);
  }
}

/** Shared by both architectures: input checks, the masked encoder pass, and the loss transformers computes. */
export abstract class SequenceClassifier extends Module {
  abstract readonly config: EncoderModelConfig;
  /** The encoder's parameters' prefix in checkpoints ('bert' or 'roberta'). */
  abstract readonly basePrefix: string;

  protected abstract head(hidden: Tensor): Tensor;
  protected abstract get base(): EncoderModel;

  forward(inputs: ClassifierInputs): ClassifierOutput {
    if (inputs === null || typeof inputs !== 'object') throw new TypeError('forward: expected { inputIds, ... }');
    const ids = toIdBatch(inputs.inputIds, 'inputIds');
    const tokenTypes =
      inputs.tokenTypeIds === undefined
        ? { data: new Int32Array(ids.data.length), batch: ids.batch, seq: ids.seq }
        : toIdBatch(inputs.tokenTypeIds, 'tokenTypeIds');
    expectSameShape(tokenTypes, ids, 'tokenTypeIds');
    const maskIds = inputs.attentionMask === undefined ? undefined : toIdBatch(inputs.attentionMask, 'attentionMask');
    if (maskIds) expectSameShape(maskIds, ids, 'attentionMask');
    const mask = maskIds === undefined ? undefined : maskTensor(maskIds, this.device);
    const hidden = this.base.forward(ids, tokenTypes, mask);
    mask?.dispose();
    const logits = this.head(hidden);
    if (inputs.labels === undefined) return { logits };
    return { logits, loss: this.loss(logits, inputs.labels, ids.batch) };
  }

  private loss(logits: Tensor, labels: ArrayLike<number>, batch: number): Tensor {
    if (labels.length !== batch) throw new RangeError(`labels has ${labels.length} entries for a batch of ${batch}`);
    if (this.config.problemType === 'regression') {
      const target = Tensor.from(Float32Array.from(labels), [batch], { device: logits.device });
      const loss = mseLoss(reshape(logits, [batch]), target);
      target.dispose();
      return loss;
    }
    const classes = Int32Array.from(labels, (label, index) => {
      if (!Number.isInteger(label)) throw new TypeError(`labels[${index}] must be an integer class, got ${label}`);
      // Checked before Int32Array storage, which would wrap 2^32 to class 0.
      if (label !== -100 && (label < 0 || label >= this.config.numLabels)) {
        throw new RangeError(
          `labels[${index}] is ${label}; expected a class in [0, ${this.config.numLabels}) or -100 (ignored)`,
        );
      }
      return label;
    });
    return crossEntropy(logits, classes);
  }
}

/** transformers' BertForSequenceClassification: pooler → dropout → classifier. */
export class BertForSequenceClassification extends SequenceClassifier {
  readonly basePrefix = 'bert';
  bert: EncoderModel;
  dropout: Dropout;
  classifier: Linear;

  constructor(
    readonly config: EncoderModelConfig,
    options: { seed?: number } = {},
  ) {
    super();
    const seeds = new SeedScope(options.seed ?? 0);
    this.bert = new EncoderModel(config, { pooler: true, seeds: seeds.child('bert') });
    this.dropout = new Dropout(config.classifierDropout, seeds.seed('dropout'));
    this.classifier = new Linear(config.hiddenSize, config.numLabels, {
      std: config.initializerRange,
      seed: seeds.seed('classifier.weight'),
    });
  }

  protected get base(): EncoderModel {
    return this.bert;
  }

  protected head(hidden: Tensor): Tensor {
    return this.classifier.forward(this.dropout.forward(this.bert.pooler!.forward(hidden)));
  }
}

/** transformers' RobertaClassificationHead: first token → dropout → dense → tanh → dropout → out_proj. */
export class RobertaClassificationHead extends Module {
  dense: Linear;
  dropout: Dropout;
  out_proj: Linear;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    const std = config.initializerRange;
    this.dense = new Linear(config.hiddenSize, config.hiddenSize, { std, seed: seeds.seed('dense.weight') });
    this.dropout = new Dropout(config.classifierDropout, seeds.seed('dropout'));
    this.out_proj = new Linear(config.hiddenSize, config.numLabels, { std, seed: seeds.seed('out_proj.weight') });
  }

  forward(hidden: Tensor): Tensor {
    const first = this.dropout.forward(select(hidden, 1, 0));
    return this.out_proj.forward(this.dropout.forward(tanh(this.dense.forward(first))));
  }
}

/** transformers' RobertaForSequenceClassification: no pooler, a two-layer head on the first token. */
export class RobertaForSequenceClassification extends SequenceClassifier {
  readonly basePrefix = 'roberta';
  roberta: EncoderModel;
  classifier: RobertaClassificationHead;

  constructor(
    readonly config: EncoderModelConfig,
    options: { seed?: number } = {},
  ) {
    super();
    const seeds = new SeedScope(options.seed ?? 0);
    this.roberta = new EncoderModel(config, { pooler: false, seeds: seeds.child('roberta') });
    this.classifier = new RobertaClassificationHead(config, seeds.child('classifier'));
  }

  protected get base(): EncoderModel {
    return this.roberta;
  }

  protected head(hidden: Tensor): Tensor {
    return this.classifier.forward(hidden);
  }
}
