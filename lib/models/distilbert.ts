// DistilBERT with Hugging Face's parameter names (distilbert.embeddings.*, distilbert.transformer.layer.0.attention
// .q_lin.weight, ..., pre_classifier.*, classifier.*): BERT's post-LayerNorm layers under other names, no token
// types, no dropout after the attention's output projection, and its own sequence head.
import { gelu, relu } from '../ops/activation';
import { add } from '../ops/elementwise';
import { mergeHeads, select, splitHeads } from '../ops/shape';
import { type Tensor } from '../tensor';
import { Dropout, Embedding, LayerNorm, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { attention } from '../nn/transformer';
import { SeedScope } from '../random';
import { type EncoderModelConfig } from './config';
import { type EncoderBody, EncoderTaskModel } from './encoder';
import { type IdBatch } from './inputs';

function linear(inFeatures: number, outFeatures: number, config: EncoderModelConfig, seed: number): Linear {
  return new Linear(inFeatures, outFeatures, { std: config.initializerRange, seed });
}

/** Word plus learned absolute position embeddings, LayerNorm, dropout (no token types). */
export class DistilBertEmbeddings extends Module {
  /** [vocabSize, hidden]. */
  word_embeddings: Embedding;
  /** Learned positions, [maxPositions, hidden]: position p adds row p. */
  position_embeddings: Embedding;
  /** Normalises the sum of the two embeddings. */
  LayerNorm: LayerNorm;
  /** Dropout on the result (`hiddenDropout`). */
  dropout: Dropout;

  constructor(
    /** The parsed config it was built from. */
    readonly config: EncoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    const { hiddenSize: dim, initializerRange: std } = config;
    this.word_embeddings = new Embedding(config.vocabSize, dim, { std, seed: seeds.seed('word_embeddings') });
    this.position_embeddings = new Embedding(config.maxPositions, dim, {
      std,
      seed: seeds.seed('position_embeddings'),
    });
    this.LayerNorm = new LayerNorm(dim, config.layerNormEps);
    this.dropout = new Dropout(config.hiddenDropout, seeds.seed('dropout'));
  }

  /** ids [batch, seq] → [batch, seq, hidden]; a RangeError when seq exceeds `maxPositions`. */
  forward(ids: IdBatch): Tensor {
    if (ids.seq > this.config.maxPositions) {
      throw new RangeError(
        `inputIds: sequences of ${ids.seq} tokens exceed max_position_embeddings ${this.config.maxPositions}`,
      );
    }
    const shape = [ids.batch, ids.seq];
    const positions = Int32Array.from({ length: ids.data.length }, (_, index) => index % ids.seq);
    const words = this.word_embeddings.forward(ids.data, shape);
    return this.dropout.forward(this.LayerNorm.forward(add(words, this.position_embeddings.forward(positions, shape))));
  }
}

/** Multi-head self-attention with its output projection (the residual and LayerNorm are the layer's). */
export class DistilBertAttention extends Module {
  /** The query projection, [hidden] → [hidden]. */
  q_lin: Linear;
  /** The key projection, [hidden] → [hidden]. */
  k_lin: Linear;
  /** The value projection, [hidden] → [hidden]. */
  v_lin: Linear;
  /** The output projection of the concatenated heads, [hidden] → [hidden]. */
  out_lin: Linear;
  /** Dropout on the attention probabilities (`attentionDropout`). */
  dropout: Dropout;

  constructor(
    /** The parsed config it was built from. */
    readonly config: EncoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    const dim = config.hiddenSize;
    this.q_lin = linear(dim, dim, config, seeds.seed('q_lin.weight'));
    this.k_lin = linear(dim, dim, config, seeds.seed('k_lin.weight'));
    this.v_lin = linear(dim, dim, config, seeds.seed('v_lin.weight'));
    this.out_lin = linear(dim, dim, config, seeds.seed('out_lin.weight'));
    this.dropout = new Dropout(config.attentionDropout, seeds.seed('dropout'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]; `mask` [batch, seq] (1 = token, 0 = padding). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    const heads = this.config.numHeads;
    const context = attention(
      splitHeads(this.q_lin.forward(hidden), heads),
      splitHeads(this.k_lin.forward(hidden), heads),
      splitHeads(this.v_lin.forward(hidden), heads),
      mask,
      this.dropout,
    );
    return this.out_lin.forward(mergeHeads(context));
  }
}

/** lin1 → activation → lin2 → dropout. */
export class DistilBertFeedForward extends Module {
  /** [hidden] → [intermediate]. */
  lin1: Linear;
  /** [intermediate] → [hidden]. */
  lin2: Linear;
  /** Dropout on the output (`hiddenDropout`). */
  dropout: Dropout;

  constructor(
    /** The parsed config it was built from. */
    readonly config: EncoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    this.lin1 = linear(config.hiddenSize, config.intermediateSize, config, seeds.seed('lin1.weight'));
    this.lin2 = linear(config.intermediateSize, config.hiddenSize, config, seeds.seed('lin2.weight'));
    this.dropout = new Dropout(config.hiddenDropout, seeds.seed('dropout'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]. */
  forward(hidden: Tensor): Tensor {
    const inner = this.lin1.forward(hidden);
    return this.dropout.forward(this.lin2.forward(this.config.activation === 'relu' ? relu(inner) : gelu(inner)));
  }
}

/** One layer: attention, residual, sa_layer_norm; feed-forward, residual, output_layer_norm. */
export class DistilBertLayer extends Module {
  /** Self-attention with its output projection. */
  attention: DistilBertAttention;
  /** LayerNorm after the attention's residual. */
  sa_layer_norm: LayerNorm;
  /** The feed-forward block. */
  ffn: DistilBertFeedForward;
  /** LayerNorm after the feed-forward residual. */
  output_layer_norm: LayerNorm;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.attention = new DistilBertAttention(config, seeds.child('attention'));
    this.sa_layer_norm = new LayerNorm(config.hiddenSize, config.layerNormEps);
    this.ffn = new DistilBertFeedForward(config, seeds.child('ffn'));
    this.output_layer_norm = new LayerNorm(config.hiddenSize, config.layerNormEps);
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]; `mask` [batch, seq] (1 = token, 0 = padding). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    const attended = this.sa_layer_norm.forward(add(this.attention.forward(hidden, mask), hidden));
    return this.output_layer_norm.forward(add(this.ffn.forward(attended), attended));
  }
}

/** `distilbert.transformer`: the stack of `numLayers` layers. */
export class DistilBertTransformer extends Module {
  /** The layers, in order (`layer.0`, `layer.1`, ...). */
  layer: DistilBertLayer[];

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.layer = Array.from(
      { length: config.numLayers },
      (_, index) => new DistilBertLayer(config, seeds.child(`layer.${index}`)),
    );
  }

  /** [batch, seq, hidden] through every layer; `mask` [batch, seq] (1 = token, 0 = padding). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    return this.layer.reduce((value, layer) => layer.forward(value, mask), hidden);
  }
}

/** `distilbert.*`: embeddings and the layer stack. */
export class DistilBertEncoder extends Module implements EncoderBody {
  /** Word and position embeddings. */
  embeddings: DistilBertEmbeddings;
  /** The layer stack. */
  transformer: DistilBertTransformer;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.embeddings = new DistilBertEmbeddings(config, seeds.child('embeddings'));
    this.transformer = new DistilBertTransformer(config, seeds.child('transformer'));
  }

  /** ids [batch, seq] → [batch, seq, hidden]; token types are a TypeError (DistilBERT has none). */
  forward(ids: IdBatch, tokenTypes: IdBatch | undefined, mask: Tensor | undefined): Tensor {
    if (tokenTypes !== undefined) throw new TypeError('forward: DistilBERT has no token types; pass no tokenTypeIds');
    return this.transformer.forward(this.embeddings.forward(ids), mask);
  }
}

abstract class DistilBertTaskModel extends EncoderTaskModel {
  readonly basePrefix = 'distilbert';
  /** The encoder: embeddings and layers. */
  distilbert: DistilBertEncoder;

  constructor(
    /** The parsed config it was built from. */
    readonly config: EncoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    this.distilbert = new DistilBertEncoder(config, seeds.child('distilbert'));
  }

  protected get base(): DistilBertEncoder {
    return this.distilbert;
  }
}

/** transformers' DistilBertForSequenceClassification: first token → pre_classifier → ReLU → dropout → classifier. */
export class DistilBertForSequenceClassification extends DistilBertTaskModel {
  /** [hidden] → [hidden], on the first token's hidden state. */
  pre_classifier: Linear;
  /** Dropout before the classifier (`classifierDropout`, seq_classif_dropout). */
  dropout: Dropout;
  /** [hidden] → [numLabels]. */
  classifier: Linear;

  constructor(config: EncoderModelConfig, options: { seed?: number } = {}) {
    const seeds = new SeedScope(options.seed ?? 0);
    super(config, seeds);
    this.pre_classifier = linear(config.hiddenSize, config.hiddenSize, config, seeds.seed('pre_classifier.weight'));
    this.dropout = new Dropout(config.classifierDropout, seeds.seed('dropout'));
    this.classifier = linear(config.hiddenSize, config.numLabels, config, seeds.seed('classifier.weight'));
  }

  protected head(hidden: Tensor): Tensor {
    const pooled = relu(this.pre_classifier.forward(select(hidden, 1, 0)));
    return this.classifier.forward(this.dropout.forward(pooled));
  }
}

/** transformers' DistilBertForTokenClassification: dropout (the model's) → classifier on every token. */
export class DistilBertForTokenClassification extends DistilBertTaskModel {
  /** Dropout on every token's hidden state (`hiddenDropout`). */
  dropout: Dropout;
  /** [hidden] → [numLabels], per token. */
  classifier: Linear;

  constructor(config: EncoderModelConfig, options: { seed?: number } = {}) {
    const seeds = new SeedScope(options.seed ?? 0);
    super(config, seeds);
    this.dropout = new Dropout(config.hiddenDropout, seeds.seed('dropout'));
    this.classifier = linear(config.hiddenSize, config.numLabels, config, seeds.seed('classifier.weight'));
  }

  protected head(hidden: Tensor): Tensor {
    return this.classifier.forward(this.dropout.forward(hidden));
  }
}

/** transformers' DistilBertModel: the last hidden states (saved without the `distilbert.` prefix). */
export class DistilBertModel extends DistilBertTaskModel {
  constructor(config: EncoderModelConfig, options: { seed?: number } = {}) {
    super(config, new SeedScope(options.seed ?? 0));
  }

  protected head(hidden: Tensor): Tensor {
    return hidden;
  }
}
