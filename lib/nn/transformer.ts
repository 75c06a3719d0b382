// The Transformer encoder layer in Hugging Face's BERT layout (attention.self.{query,key,value},
// attention.output.{dense,LayerNorm}, intermediate.dense, output.{dense,LayerNorm}), so checkpoints load by name.
import { add } from '../ops/elementwise';
import { gelu, relu } from '../ops/activation';
import { scaledDotProductAttention } from '../ops/attention';
import { mergeHeads, splitHeads } from '../ops/shape';
import { type SeedScope } from '../random';
import { type Tensor } from '../tensor';
import { Dropout, LayerNorm, Linear } from './layers';
import { Module } from './module';

/** The sizes and settings one encoder layer is built from (a model's parsed config supplies them). */
export interface EncoderConfig {
  /** Width of the hidden states (768 in BERT-base); a multiple of `numHeads`. */
  hiddenSize: number;
  /** Attention heads; each has hiddenSize / numHeads features. */
  numHeads: number;
  /** Width of the feed-forward layer's inner projection (3072 in BERT-base). */
  intermediateSize: number;
  /** Dropout probability after the output projections and on embeddings, in [0, 1). */
  hiddenDropout: number;
  /** Dropout probability on the attention probabilities, in [0, 1). */
  attentionDropout: number;
  /** The epsilon added to the variance in LayerNorm (1e-12 in BERT). */
  layerNormEps: number;
  /** The feed-forward activation: exact (erf) GELU or ReLU. */
  activation: 'gelu' | 'relu';
  /** Standard deviation of the normal initialisation of every weight matrix (0.02 in BERT). */
  initializerRange: number;
}

/** Scaled dot-product self-attention over heads; `mask` [batch, seq] (1 = token, 0 = padding). */
export class MultiHeadSelfAttention extends Module {
  /** The query projection, [hidden] → [hidden]. */
  query: Linear;
  /** The key projection, [hidden] → [hidden]. */
  key: Linear;
  /** The value projection, [hidden] → [hidden]. */
  value: Linear;
  /** Dropout on the attention probabilities (`attentionDropout`). */
  dropout: Dropout;

  /**
   * `seeds`: this module's scope (e.g. `bert.encoder.layer.0.attention.self`); each weight is seeded by its name.
   * Throws a RangeError when hiddenSize is not a multiple of numHeads.
   */
  constructor(
    /** The sizes it was built with. */
    readonly config: EncoderConfig,
    seeds: SeedScope,
  ) {
    super();
    const { hiddenSize: size, initializerRange: std } = config;
    if (size % config.numHeads !== 0) {
      throw new RangeError(`hidden size ${size} is not a multiple of the ${config.numHeads} attention heads`);
    }
    this.query = new Linear(size, size, { std, seed: seeds.seed('query.weight') });
    this.key = new Linear(size, size, { std, seed: seeds.seed('key.weight') });
    this.value = new Linear(size, size, { std, seed: seeds.seed('value.weight') });
    this.dropout = new Dropout(config.attentionDropout, seeds.seed('dropout'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden] (the heads' outputs concatenated). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    const heads = this.config.numHeads;
    return mergeHeads(
      attention(
        splitHeads(this.query.forward(hidden), heads),
        splitHeads(this.key.forward(hidden), heads),
        splitHeads(this.value.forward(hidden), heads),
        mask,
        this.dropout,
      ),
    );
  }
}

/**
 * softmax(q kᵀ / √d) v over heads, fused (lib/ops/attention.ts): q, k, v [batch, heads, seq, d]; `mask` [batch, seq]
 * (1 = token, 0 = padding); `dropout` on the attention probabilities, with the seed the module would have drawn for
 * them. Every family's self-attention runs through here.
 */
export function attention(
  query: Tensor,
  key: Tensor,
  value: Tensor,
  mask: Tensor | undefined,
  dropout: Dropout,
): Tensor {
  const seed = dropout.nextSeed();
  return scaledDotProductAttention(query, key, value, {
    keyMask: mask,
    dropout: seed === undefined ? undefined : { p: dropout.p, seed },
  });
}

/** dense → dropout → residual → LayerNorm: the output block after attention and after the feed-forward layer. */
export class ResidualOutput extends Module {
  /** The projection back to the hidden size, [inFeatures] → [hidden]. */
  dense: Linear;
  /** Normalises the sum of the projection and the residual. */
  LayerNorm: LayerNorm;
  /** Dropout on the projection, before the residual (`hiddenDropout`). */
  dropout: Dropout;

  constructor(inFeatures: number, config: EncoderConfig, seeds: SeedScope) {
    super();
    this.dense = new Linear(inFeatures, config.hiddenSize, {
      std: config.initializerRange,
      seed: seeds.seed('dense.weight'),
    });
    this.LayerNorm = new LayerNorm(config.hiddenSize, config.layerNormEps);
    this.dropout = new Dropout(config.hiddenDropout, seeds.seed('dropout'));
  }

  /** LayerNorm(dropout(dense(hidden)) + residual): hidden [batch, seq, inFeatures], residual [batch, seq, hidden]. */
  forward(hidden: Tensor, residual: Tensor): Tensor {
    return this.LayerNorm.forward(add(this.dropout.forward(this.dense.forward(hidden)), residual));
  }
}

/** The attention block: self-attention, then its output projection with the residual and LayerNorm. */
export class Attention extends Module {
  /** Multi-head self-attention. */
  self: MultiHeadSelfAttention;
  /** Output projection, dropout, residual and LayerNorm. */
  output: ResidualOutput;

  constructor(config: EncoderConfig, seeds: SeedScope) {
    super();
    this.self = new MultiHeadSelfAttention(config, seeds.child('self'));
    this.output = new ResidualOutput(config.hiddenSize, config, seeds.child('output'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]; `mask` [batch, seq] (1 = token, 0 = padding). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    return this.output.forward(this.self.forward(hidden, mask), hidden);
  }
}

/** The feed-forward layer's first half: projection to the intermediate size and the activation. */
export class Intermediate extends Module {
  /** [hidden] → [intermediate]. */
  dense: Linear;

  constructor(
    /** The sizes and the activation it was built with. */
    readonly config: EncoderConfig,
    seeds: SeedScope,
  ) {
    super();
    this.dense = new Linear(config.hiddenSize, config.intermediateSize, {
      std: config.initializerRange,
      seed: seeds.seed('dense.weight'),
    });
  }

  /** [batch, seq, hidden] → [batch, seq, intermediate]. */
  forward(hidden: Tensor): Tensor {
    const projected = this.dense.forward(hidden);
    return this.config.activation === 'relu' ? relu(projected) : gelu(projected);
  }
}

/** Post-LayerNorm encoder layer: self-attention block, then the feed-forward block, each with a residual. */
export class TransformerEncoderLayer extends Module {
  /** The self-attention block. */
  attention: Attention;
  /** The feed-forward projection up, with the activation. */
  intermediate: Intermediate;
  /** The feed-forward projection down, with the residual and LayerNorm. */
  output: ResidualOutput;

  /** `seeds`: this layer's scope, e.g. `bert.encoder.layer.3` (`new SeedScope(seed, name)`). */
  constructor(config: EncoderConfig, seeds: SeedScope) {
    super();
    this.attention = new Attention(config, seeds.child('attention'));
    this.intermediate = new Intermediate(config, seeds.child('intermediate'));
    this.output = new ResidualOutput(config.intermediateSize, config, seeds.child('output'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]; `mask` [batch, seq] (1 = token, 0 = padding). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    const attended = this.attention.forward(hidden, mask);
    return this.output.forward(this.intermediate.forward(attended), attended);
  }
}
