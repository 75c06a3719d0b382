// The BERT layout, shared by RoBERTa, XLM-RoBERTa and CamemBERT: embeddings, post-LayerNorm encoder layers and the
// task heads transformers puts on them, with Hugging Face's parameter names so checkpoints load by name
// (bert.embeddings.word_embeddings.weight, roberta.encoder.layer.0.attention.self.query.weight, classifier.*, ...).
import { add } from '../ops/elementwise';
import { tanh } from '../ops/activation';
import { select } from '../ops/shape';
import { type Tensor } from '../tensor';
import { Dropout, Embedding, LayerNorm, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { type EncoderConfig, TransformerEncoderLayer } from '../nn/transformer';
import { SeedScope } from '../random';
import { type EncoderModelConfig } from './config';
import { type EncoderBody, EncoderTaskModel } from './encoder';
import { type IdBatch } from './inputs';

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

/**
 * BERT's embeddings (`bert.embeddings.*`): word + position + token type, then LayerNorm and dropout. Field names are
 * transformers' so checkpoints load by name.
 */
export class Embeddings extends Module {
  /** One row per token id, [vocabSize, hidden]. */
  word_embeddings: Embedding;
  /** One row per position, [maxPositions, hidden]. */
  position_embeddings: Embedding;
  /** One row per segment (token type), [typeVocabSize, hidden]. */
  token_type_embeddings: Embedding;
  /** Normalizes the sum of the three embeddings (post-LayerNorm layout). */
  LayerNorm: LayerNorm;
  /** Hidden dropout on the embeddings' output (config.hiddenDropout). */
  dropout: Dropout;

  /** `seeds`: the scope of `<prefix>.embeddings`, so each table is seeded by its full name. */
  constructor(
    /** The model's config: sizes, padding id and whether positions count from padding (RoBERTa). */
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
        if (this.config.positionsFromPadding) {
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

  /**
   * The embedded tokens, [batch, seq, hidden]; token types default to 0. A RangeError when a sequence needs a
   * position beyond max_position_embeddings.
   */
  forward(ids: IdBatch, tokenTypes: IdBatch | undefined): Tensor {
    const shape = [ids.batch, ids.seq];
    const words = this.word_embeddings.forward(ids.data, shape);
    const positions = this.position_embeddings.forward(this.positionIds(ids), shape);
    const types = this.token_type_embeddings.forward(tokenTypes?.data ?? new Int32Array(ids.data.length), shape);
    return this.dropout.forward(this.LayerNorm.forward(add(add(words, positions), types)));
  }
}

/** The stack of post-LayerNorm transformer layers (`bert.encoder.layer.N.*`). */
export class Encoder extends Module {
  /** config.numLayers layers, applied in order. */
  layer: TransformerEncoderLayer[];

  /** `seeds`: the scope of `<prefix>.encoder`. */
  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    const layerConfig = encoderConfig(config);
    this.layer = Array.from(
      { length: config.numLayers },
      (_, index) => new TransformerEncoderLayer(layerConfig, seeds.child(`layer.${index}`)),
    );
  }

  /** [batch, seq, hidden] through every layer; `mask` is the float [batch, seq] attention mask (1 keeps a token). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    return this.layer.reduce((value, layer) => layer.forward(value, mask), hidden);
  }
}

/** tanh(dense(first token)): BERT's pooler. */
export class Pooler extends Module {
  /** [hidden, hidden] projection of the first token. */
  dense: Linear;

  /** `seeds`: the scope of `<prefix>.pooler`. */
  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.dense = new Linear(config.hiddenSize, config.hiddenSize, {
      std: config.initializerRange,
      seed: seeds.seed('dense.weight'),
    });
  }

  /** [batch, hidden] from the last hidden states [batch, seq, hidden]. */
  forward(hidden: Tensor): Tensor {
    return tanh(this.dense.forward(select(hidden, 1, 0)));
  }
}

/** Embeddings, the encoder stack and (for BERT) the pooler: `bert.*` / `roberta.*`. */
export class EncoderModel extends Module implements EncoderBody {
  /** Token, position and type embeddings. */
  embeddings: Embeddings;
  /** The transformer layers, where adapters usually go (attention.self.query, .value, ...). */
  encoder: Encoder;
  /** BERT's pooler, for sequence classification; undefined where the model has none (RoBERTa's heads, token tasks). */
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
  forward(ids: IdBatch, tokenTypes: IdBatch | undefined, mask: Tensor | undefined): Tensor {
    return this.encoder.forward(this.embeddings.forward(ids, tokenTypes), mask);
  }
}

/** transformers' BertForSequenceClassification: pooler → dropout → classifier. */
export class BertForSequenceClassification extends EncoderTaskModel {
  readonly basePrefix = 'bert';
  /** The encoder with its pooler (`bert.*`). */
  bert: EncoderModel;
  /** Dropout on the pooled output (config.classifierDropout). */
  dropout: Dropout;
  /** The logits: hidden → numLabels. */
  classifier: Linear;

  /** `options.seed` (default 0) is the root every parameter's seed derives from, by its name. */
  constructor(
    /** The model's parsed config. */
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

  /** The encoder the task head reads: `bert`. */
  protected get base(): EncoderModel {
    return this.bert;
  }

  protected head(hidden: Tensor): Tensor {
    return this.classifier.forward(this.dropout.forward(this.bert.pooler!.forward(hidden)));
  }
}

/** transformers' RobertaClassificationHead: first token → dropout → dense → tanh → dropout → out_proj. */
export class RobertaClassificationHead extends Module {
  /** [hidden, hidden] projection before the tanh. */
  dense: Linear;
  /** Applied before dense and before out_proj (config.classifierDropout). */
  dropout: Dropout;
  /** The logits: hidden → numLabels. */
  out_proj: Linear;

  /** `seeds`: the scope of `classifier`. */
  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    const std = config.initializerRange;
    this.dense = new Linear(config.hiddenSize, config.hiddenSize, { std, seed: seeds.seed('dense.weight') });
    this.dropout = new Dropout(config.classifierDropout, seeds.seed('dropout'));
    this.out_proj = new Linear(config.hiddenSize, config.numLabels, { std, seed: seeds.seed('out_proj.weight') });
  }

  /** Logits [batch, numLabels] from the last hidden states [batch, seq, hidden]. */
  forward(hidden: Tensor): Tensor {
    const first = this.dropout.forward(select(hidden, 1, 0));
    return this.out_proj.forward(this.dropout.forward(tanh(this.dense.forward(first))));
  }
}

/** transformers' RobertaForSequenceClassification: no pooler, a two-layer head on the first token. */
export class RobertaForSequenceClassification extends EncoderTaskModel {
  readonly basePrefix = 'roberta';
  /** The encoder, without a pooler (`roberta.*`). */
  roberta: EncoderModel;
  /** The two-layer head on the first token. */
  classifier: RobertaClassificationHead;

  /** `options.seed` (default 0) is the root every parameter's seed derives from, by its name. */
  constructor(
    /** The model's parsed config. */
    readonly config: EncoderModelConfig,
    options: { seed?: number } = {},
  ) {
    super();
    const seeds = new SeedScope(options.seed ?? 0);
    this.roberta = new EncoderModel(config, { pooler: false, seeds: seeds.child('roberta') });
    this.classifier = new RobertaClassificationHead(config, seeds.child('classifier'));
  }

  /** The encoder the task head reads: `roberta`. */
  protected get base(): EncoderModel {
    return this.roberta;
  }

  protected head(hidden: Tensor): Tensor {
    return this.classifier.forward(hidden);
  }
}

/** The per-token head of every BERT-layout family (transformers' …ForTokenClassification): dropout → classifier. */
abstract class TokenClassifier extends EncoderTaskModel {
  /** Dropout on every token's hidden state (config.classifierDropout). */
  dropout: Dropout;
  /** Per-token logits: hidden → numLabels. */
  classifier: Linear;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.dropout = new Dropout(config.classifierDropout, seeds.seed('dropout'));
    this.classifier = new Linear(config.hiddenSize, config.numLabels, {
      std: config.initializerRange,
      seed: seeds.seed('classifier.weight'),
    });
  }

  protected head(hidden: Tensor): Tensor {
    return this.classifier.forward(this.dropout.forward(hidden));
  }
}

/** transformers' BertForTokenClassification: the encoder without its pooler, a classifier on every token. */
export class BertForTokenClassification extends TokenClassifier {
  readonly basePrefix = 'bert';
  /** The encoder (`bert.*`), pooler included only in the bare model. */
  bert: EncoderModel;

  /** `options.seed` (default 0) is the root every parameter's seed derives from, by its name. */
  constructor(
    /** The model's parsed config. */
    readonly config: EncoderModelConfig,
    options: { seed?: number } = {},
  ) {
    const seeds = new SeedScope(options.seed ?? 0);
    super(config, seeds);
    this.bert = new EncoderModel(config, { pooler: false, seeds: seeds.child('bert') });
  }

  /** The encoder the task head reads: `bert`. */
  protected get base(): EncoderModel {
    return this.bert;
  }
}

/** transformers' RobertaForTokenClassification (XLM-RoBERTa's and CamemBERT's too). */
export class RobertaForTokenClassification extends TokenClassifier {
  readonly basePrefix = 'roberta';
  /** The encoder (`roberta.*`), pooler included only in the bare model. */
  roberta: EncoderModel;

  /** `options.seed` (default 0) is the root every parameter's seed derives from, by its name. */
  constructor(
    /** The model's parsed config. */
    readonly config: EncoderModelConfig,
    options: { seed?: number } = {},
  ) {
    const seeds = new SeedScope(options.seed ?? 0);
    super(config, seeds);
    this.roberta = new EncoderModel(config, { pooler: false, seeds: seeds.child('roberta') });
  }

  /** The encoder the task head reads: `roberta`. */
  protected get base(): EncoderModel {
    return this.roberta;
  }
}

/**
 * transformers' BertModel: the bare encoder, whose output is the last hidden states, for users who bring their own
 * head. Held under the family's prefix like the task models, so one checkpoint loads into either; models.save writes
 * a bare model's names without the prefix, as transformers does.
 */
export class BertModel extends EncoderTaskModel {
  readonly basePrefix = 'bert';
  /** The encoder (`bert.*`), pooler included only in the bare model. */
  bert: EncoderModel;

  /** `options.seed` (default 0) is the root every parameter's seed derives from, by its name. */
  constructor(
    /** The model's parsed config. */
    readonly config: EncoderModelConfig,
    options: { seed?: number } = {},
  ) {
    super();
    this.bert = new EncoderModel(config, { pooler: true, seeds: new SeedScope(options.seed ?? 0).child('bert') });
  }

  /** The encoder the task head reads: `bert`. */
  protected get base(): EncoderModel {
    return this.bert;
  }

  protected head(hidden: Tensor): Tensor {
    return hidden;
  }
}

/** transformers' RobertaModel (XLM-RoBERTa's and CamemBERT's too): the bare encoder, pooler included. */
export class RobertaModel extends EncoderTaskModel {
  readonly basePrefix = 'roberta';
  /** The encoder (`roberta.*`), pooler included only in the bare model. */
  roberta: EncoderModel;

  /** `options.seed` (default 0) is the root every parameter's seed derives from, by its name. */
  constructor(
    /** The model's parsed config. */
    readonly config: EncoderModelConfig,
    options: { seed?: number } = {},
  ) {
    super();
    this.roberta = new EncoderModel(config, { pooler: true, seeds: new SeedScope(options.seed ?? 0).child('roberta') });
  }

  /** The encoder the task head reads: `roberta`. */
  protected get base(): EncoderModel {
    return this.roberta;
  }

  protected head(hidden: Tensor): Tensor {
    return hidden;
  }
}
