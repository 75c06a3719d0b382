// ESM protein language models (ESM-2, and ESM-1b's absolute positions) with Hugging Face's parameter names
// (esm.embeddings.word_embeddings.weight, esm.encoder.layer.0.attention.self.query.weight, ...): pre-LayerNorm layers,
// a final emb_layer_norm_after, rotary position embeddings on queries and keys, and token dropout's rescaling of the
// embeddings, all as transformers computes them.
import { gelu } from '../ops/activation';
import { add, mul } from '../ops/elementwise';
import { rotary } from '../ops/rotary';
import { mergeHeads, splitHeads } from '../ops/shape';
import { Tensor } from '../tensor';
import { Dropout, Embedding, LayerNorm, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { attention } from '../nn/transformer';
import { SeedScope } from '../random';
import { RobertaClassificationHead } from './bert';
import { type EncoderModelConfig, type EsmSettings } from './config';
import { type EncoderBody, EncoderTaskModel } from './encoder';
import { type IdBatch } from './inputs';

/** The share of tokens ESM's pretraining masked (15%, 80% of them with the mask token): token dropout's reference. */
const MASK_RATIO_TRAIN = 0.15 * 0.8;
/** transformers' RotaryEmbedding for ESM fixes the base at 10,000 whatever the config says. */
const ESM_ROTARY_BASE = 10_000;

function linear(inFeatures: number, outFeatures: number, config: EncoderModelConfig, seed: number): Linear {
  return new Linear(inFeatures, outFeatures, { std: config.initializerRange, seed });
}

function settingsOf(config: EncoderModelConfig): EsmSettings {
  if (config.esm === undefined) throw new TypeError(`${config.architecture}: the config has no ESM settings`);
  return config.esm;
}

/**
 * Token embeddings with ESM's token dropout rescaling; ESM-1b's learned absolute positions and LayerNorm when the
 * config has them (ESM-2 has neither: its positions are rotary, in attention).
 */
export class EsmEmbeddings extends Module {
  /** [vocabSize, hidden]. */
  word_embeddings: Embedding;
  /** LayerNorm of the embeddings (emb_layer_norm_before); undefined unless the config asks for it. */
  layer_norm: LayerNorm | undefined;
  /** Learned positions [maxPositions, hidden], counted from padTokenId + 1 as RoBERTa; undefined with rotary ones. */
  position_embeddings: Embedding | undefined;

  constructor(
    /** The parsed config it was built from, with its ESM settings. */
    readonly config: EncoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    const settings = settingsOf(config);
    const { hiddenSize, initializerRange: std } = config;
    this.word_embeddings = new Embedding(config.vocabSize, hiddenSize, { std, seed: seeds.seed('word_embeddings') });
    this.layer_norm = settings.layerNormBefore ? new LayerNorm(hiddenSize, config.layerNormEps) : undefined;
    this.position_embeddings =
      settings.positionEmbedding === 'absolute'
        ? new Embedding(config.maxPositions, hiddenSize, { std, seed: seeds.seed('position_embeddings') })
        : undefined;
  }

  /**
   * Token embeddings, with token dropout (when the config has it): the mask token's embedding zeroed and the rest
   * scaled by (1 − 0.12) / (1 − the share of mask tokens among the sequence's real tokens); padding zeroed.
   * ids and mask [batch, seq] → [batch, seq, hidden].
   */
  forward(ids: IdBatch, mask: IdBatch | undefined): Tensor {
    const settings = settingsOf(this.config);
    const { batch, seq } = ids;
    const hidden = this.config.hiddenSize;
    const shape = [batch, seq];
    const attended = (index: number) => mask === undefined || mask.data[index] !== 0;
    // transformers' order: token dropout, then positions and the LayerNorm, then padding zeroed. Without positions
    // and LayerNorm (ESM-2) the first and the last are one per-token factor, applied in one product.
    const separatePadding = this.position_embeddings !== undefined || this.layer_norm !== undefined;
    const factors = new Float32Array(batch * seq);
    for (let row = 0; row < batch; row++) {
      let tokens = 0;
      let masked = 0;
      for (let index = row * seq; index < (row + 1) * seq; index++) {
        if (attended(index)) tokens++;
        if (ids.data[index] === settings.maskTokenId) masked++;
      }
      const rescale = settings.tokenDropout ? (1 - MASK_RATIO_TRAIN) / (1 - masked / tokens) : 1;
      for (let index = row * seq; index < (row + 1) * seq; index++) {
        const dropped = settings.tokenDropout && ids.data[index] === settings.maskTokenId;
        factors[index] = dropped || (!separatePadding && !attended(index)) ? 0 : rescale;
      }
    }
    const words = this.word_embeddings.forward(ids.data, shape);
    let embeddings = mul(words, perTokenFactors(factors, hidden, words.device, [batch, seq, hidden]));
    if (!separatePadding) return embeddings;
    if (this.position_embeddings !== undefined) {
      const positions = new Int32Array(batch * seq);
      const pad = this.config.padTokenId;
      for (let row = 0; row < batch; row++) {
        let count = 0;
        for (let index = row * seq; index < (row + 1) * seq; index++) {
          positions[index] = ids.data[index] === pad ? pad : pad + ++count;
        }
      }
      embeddings = add(embeddings, this.position_embeddings.forward(positions, shape));
    }
    if (this.layer_norm !== undefined) embeddings = this.layer_norm.forward(embeddings);
    return mask === undefined ? embeddings : mul(embeddings, paddingMask(mask, hidden, embeddings.device));
  }
}

/** A [batch, seq, hidden] tensor repeating each token's factor over its features (mul broadcasts trailing dims only). */
function perTokenFactors(factors: Float32Array, hidden: number, device: Tensor['device'], shape: number[]): Tensor {
  const values = new Float32Array(factors.length * hidden);
  factors.forEach((factor, token) => values.fill(factor, token * hidden, (token + 1) * hidden));
  return Tensor.from(values, shape, { device });
}

function paddingMask(mask: IdBatch, hidden: number, device: Tensor['device']): Tensor {
  return perTokenFactors(
    Float32Array.from(mask.data, (value) => (value === 0 ? 0 : 1)),
    hidden,
    device,
    [mask.batch, mask.seq, hidden],
  );
}

/** Multi-head self-attention, with rotary position embeddings (base 10,000) on queries and keys in ESM-2. */
export class EsmSelfAttention extends Module {
  /** The query projection, [hidden] → [hidden]. */
  query: Linear;
  /** The key projection, [hidden] → [hidden]. */
  key: Linear;
  /** The value projection, [hidden] → [hidden]. */
  value: Linear;
  /** Dropout on the attention probabilities (`attentionDropout`). */
  dropout: Dropout;

  constructor(
    /** The parsed config it was built from, with its ESM settings. */
    readonly config: EncoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    const size = config.hiddenSize;
    this.query = linear(size, size, config, seeds.seed('query.weight'));
    this.key = linear(size, size, config, seeds.seed('key.weight'));
    this.value = linear(size, size, config, seeds.seed('value.weight'));
    this.dropout = new Dropout(config.attentionDropout, seeds.seed('dropout'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]; `mask` [batch, seq] (1 = token, 0 = padding). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    const heads = this.config.numHeads;
    let query = splitHeads(this.query.forward(hidden), heads);
    let key = splitHeads(this.key.forward(hidden), heads);
    // transformers scales the query by d^-½ before rotating it; the rotation is linear, so scaling the scores after
    // (as every other family does) is the same product.
    if (settingsOf(this.config).positionEmbedding === 'rotary') {
      query = rotary(query, { base: ESM_ROTARY_BASE });
      key = rotary(key, { base: ESM_ROTARY_BASE });
    }
    const value = splitHeads(this.value.forward(hidden), heads);
    return mergeHeads(attention(query, key, value, mask, this.dropout));
  }
}

/** dense → dropout → residual, with no LayerNorm: ESM normalises before each block instead. */
export class EsmResidualOutput extends Module {
  /** The projection back to the hidden size, [inFeatures] → [hidden]. */
  dense: Linear;
  /** Dropout on the projection, before the residual (`hiddenDropout`). */
  dropout: Dropout;

  constructor(inFeatures: number, config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.dense = linear(inFeatures, config.hiddenSize, config, seeds.seed('dense.weight'));
    this.dropout = new Dropout(config.hiddenDropout, seeds.seed('dropout'));
  }

  /** dropout(dense(hidden)) + residual: hidden [batch, seq, inFeatures], residual [batch, seq, hidden]. */
  forward(hidden: Tensor, residual: Tensor): Tensor {
    return add(this.dropout.forward(this.dense.forward(hidden)), residual);
  }
}

/** The pre-LayerNorm attention block: x + output(self(LayerNorm(x))). */
export class EsmAttention extends Module {
  /** Multi-head self-attention. */
  self: EsmSelfAttention;
  /** Output projection, dropout and residual. */
  output: EsmResidualOutput;
  /** LayerNorm of the block's input, before attention. */
  LayerNorm: LayerNorm;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.self = new EsmSelfAttention(config, seeds.child('self'));
    this.output = new EsmResidualOutput(config.hiddenSize, config, seeds.child('output'));
    this.LayerNorm = new LayerNorm(config.hiddenSize, config.layerNormEps);
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]; `mask` [batch, seq] (1 = token, 0 = padding). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    return this.output.forward(this.self.forward(this.LayerNorm.forward(hidden), mask), hidden);
  }
}

/** The feed-forward layer's projection up (the layer applies LayerNorm before it and GELU after). */
export class EsmIntermediate extends Module {
  /** [hidden] → [intermediate]. */
  dense: Linear;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.dense = linear(config.hiddenSize, config.intermediateSize, config, seeds.seed('dense.weight'));
  }
}

/** Pre-LayerNorm layer: x + attention(LN(x)), then y + feed-forward(LN(y)). */
export class EsmLayer extends Module {
  /** The attention block, with its own LayerNorm and residual. */
  attention: EsmAttention;
  /** The feed-forward projection up. */
  intermediate: EsmIntermediate;
  /** The feed-forward projection down, with the residual. */
  output: EsmResidualOutput;
  /** LayerNorm before the feed-forward block. */
  LayerNorm: LayerNorm;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.attention = new EsmAttention(config, seeds.child('attention'));
    this.intermediate = new EsmIntermediate(config, seeds.child('intermediate'));
    this.output = new EsmResidualOutput(config.intermediateSize, config, seeds.child('output'));
    this.LayerNorm = new LayerNorm(config.hiddenSize, config.layerNormEps);
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]; `mask` [batch, seq] (1 = token, 0 = padding). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    const attended = this.attention.forward(hidden, mask);
    const inner = gelu(this.intermediate.dense.forward(this.LayerNorm.forward(attended)));
    return this.output.forward(inner, attended);
  }
}

/** `esm.encoder`: the layer stack and the final LayerNorm. */
export class EsmEncoder extends Module {
  /** The layers, in order (`layer.0`, `layer.1`, ...). */
  layer: EsmLayer[];
  /** LayerNorm of the last layer's output (pre-LayerNorm stacks end with one). */
  emb_layer_norm_after: LayerNorm;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.layer = Array.from(
      { length: config.numLayers },
      (_, index) => new EsmLayer(config, seeds.child(`layer.${index}`)),
    );
    this.emb_layer_norm_after = new LayerNorm(config.hiddenSize, config.layerNormEps);
  }

  /** [batch, seq, hidden] through every layer and the final LayerNorm; `mask` [batch, seq] (1 = token, 0 = padding). */
  forward(hidden: Tensor, mask: Tensor | undefined): Tensor {
    return this.emb_layer_norm_after.forward(this.layer.reduce((value, layer) => layer.forward(value, mask), hidden));
  }
}

/** transformers' EsmContactPredictionHead's parameters: kept so checkpoints load and save whole (unused here). */
export class EsmContactHead extends Module {
  /** [numLayers × numHeads] → [1], frozen (requiresGrad false). */
  regression: Linear;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.regression = linear(config.numLayers * config.numHeads, 1, config, seeds.seed('regression.weight'));
    this.regression.weight.requiresGrad = false;
    this.regression.bias!.requiresGrad = false;
  }
}

/** `esm.*`: embeddings, the layer stack and the contact head's parameters. */
export class EsmBody extends Module implements EncoderBody {
  /** Token (and, in ESM-1b, position) embeddings. */
  embeddings: EsmEmbeddings;
  /** The layer stack and the final LayerNorm. */
  encoder: EsmEncoder;
  /** The contact head's frozen parameters, carried for checkpoints only. */
  contact_head: EsmContactHead;

  constructor(config: EncoderModelConfig, seeds: SeedScope) {
    super();
    this.embeddings = new EsmEmbeddings(config, seeds.child('embeddings'));
    this.encoder = new EsmEncoder(config, seeds.child('encoder'));
    this.contact_head = new EsmContactHead(config, seeds.child('contact_head'));
  }

  /** ids [batch, seq] → [batch, seq, hidden]; token types are a TypeError (ESM has none). */
  forward(ids: IdBatch, tokenTypes: IdBatch | undefined, mask: Tensor | undefined, maskIds?: IdBatch): Tensor {
    if (tokenTypes !== undefined) throw new TypeError('forward: ESM has no token types; pass no tokenTypeIds');
    return this.encoder.forward(this.embeddings.forward(ids, maskIds), mask);
  }
}

abstract class EsmTaskModel extends EncoderTaskModel {
  readonly basePrefix = 'esm';
  /** The encoder: embeddings, layers and the contact head's parameters. */
  esm: EsmBody;

  constructor(
    /** The parsed config it was built from, with its ESM settings. */
    readonly config: EncoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    this.esm = new EsmBody(config, seeds.child('esm'));
  }

  protected get base(): EsmBody {
    return this.esm;
  }
}

/**
 * transformers' EsmForSequenceClassification: RoBERTa's head (first token → dropout → dense → tanh → dropout →
 * out_proj), its dropout ESM's hidden_dropout_prob (the config has no classifier_dropout, which parsing falls back from).
 */
export class EsmForSequenceClassification extends EsmTaskModel {
  /** RoBERTa's classification head on the first token, [hidden] → [numLabels]. */
  classifier: RobertaClassificationHead;

  constructor(config: EncoderModelConfig, options: { seed?: number } = {}) {
    const seeds = new SeedScope(options.seed ?? 0);
    super(config, seeds);
    this.classifier = new RobertaClassificationHead(config, seeds.child('classifier'));
  }

  protected head(hidden: Tensor): Tensor {
    return this.classifier.forward(hidden);
  }
}

/** transformers' EsmForTokenClassification: dropout → classifier on every token (per-residue labels). */
export class EsmForTokenClassification extends EsmTaskModel {
  /** Dropout on every token's hidden state (`hiddenDropout`). */
  dropout: Dropout;
  /** [hidden] → [numLabels], per residue. */
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

/** transformers' EsmModel: the last hidden states. */
export class EsmModel extends EsmTaskModel {
  constructor(config: EncoderModelConfig, options: { seed?: number } = {}) {
    super(config, new SeedScope(options.seed ?? 0));
  }

  protected head(hidden: Tensor): Tensor {
    return hidden;
  }
}
