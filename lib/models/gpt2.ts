// GPT-2 (transformers' GPT2LMHeadModel) with Hugging Face's parameter names (transformer.wte.weight,
// transformer.h.0.attn.c_attn.weight, ...): learned positions, pre-LayerNorm blocks, one fused query/key/value
// projection, and the output projection tied to the token embeddings. GPT-2's Conv1D layers store their weights
// [in, out]; here they are ordinary Linear layers [out, in], transposed when a checkpoint is read or written.
import { gelu, geluTanh, relu } from '../ops/activation';
import { add } from '../ops/elementwise';
import { mergeHeads, narrow, splitHeads } from '../ops/shape';
import { type Tensor } from '../tensor';
import { Dropout, Embedding, LayerNorm, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { SeedScope } from '../random';
import { type DecoderModelConfig } from './decoder-config';
import { CausalLM, causalAttention, type DecoderPass, languageModelHead, projectToVocabulary } from './decoder';

/** The checkpoint names of GPT-2's Conv1D weights, stored [in, out]. */
const CONV1D_WEIGHT = /(^|\.)(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/;

function activationOf(config: DecoderModelConfig): (x: Tensor) => Tensor {
  switch (config.activation) {
    case 'gelu_new':
      return geluTanh;
    case 'gelu':
      return gelu;
    case 'relu':
      return relu;
    default:
      throw new RangeError(`GPT-2: activation_function '${config.activation}' is not supported`);
  }
}

/**
 * transformers initialises every projection that writes into the residual stream (the c_proj layers) with std
 * initializer_range / √(2 · n_layer), so the stream's variance does not grow with depth.
 */
function residualStd(config: DecoderModelConfig): number {
  return config.initializerRange / Math.sqrt(2 * config.numLayers);
}

/** Causal multi-head self-attention with GPT-2's fused query/key/value projection. */
export class GPT2Attention extends Module {
  /** Queries, keys and values side by side, [hidden] → [3 · hidden] (a Conv1D [in, out] in checkpoints). */
  c_attn: Linear;
  /** The output projection, [hidden] → [hidden], initialised with std initializer_range / √(2 · n_layer). */
  c_proj: Linear;
  /** Dropout on the attention probabilities (attn_pdrop). */
  attn_dropout: Dropout;
  /** Dropout on the output projection (resid_pdrop). */
  resid_dropout: Dropout;

  constructor(
    /** The parsed config it was built from. */
    readonly config: DecoderModelConfig,
    /** The block's index from 0: its slot in the key/value cache, and the divisor of scale_attn_by_inverse_layer_idx. */
    readonly layerIndex: number,
    seeds: SeedScope,
  ) {
    super();
    const size = config.hiddenSize;
    const std = config.initializerRange;
    // One Linear of 3·hidden outputs, as the checkpoint's c_attn: queries, keys and values side by side.
    this.c_attn = new Linear(size, 3 * size, { std, seed: seeds.seed('c_attn.weight') });
    this.c_proj = new Linear(size, size, { std: residualStd(config), seed: seeds.seed('c_proj.weight') });
    this.attn_dropout = new Dropout(config.attentionDropout, seeds.seed('attn_dropout'));
    this.resid_dropout = new Dropout(config.residualDropout, seeds.seed('resid_dropout'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden], attending over the cached keys too when the pass has a cache. */
  forward(hidden: Tensor, pass: DecoderPass): Tensor {
    const { hiddenSize: size, numHeads, headDim } = this.config;
    const fused = this.c_attn.forward(hidden);
    const part = (index: number) => splitHeads(narrow(fused, 2, index * size, size), numHeads);
    let scale = this.config.scaleAttention ? 1 / Math.sqrt(headDim) : 1;
    if (this.config.scaleByInverseLayer) scale /= this.layerIndex + 1;
    const attended = causalAttention(part(0), part(1), part(2), pass, this.layerIndex, {
      scale,
      dropout: this.attn_dropout,
    });
    return this.resid_dropout.forward(this.c_proj.forward(mergeHeads(attended)));
  }
}

/** The feed-forward layer: c_fc → activation (gelu_new) → c_proj → dropout. */
export class GPT2MLP extends Module {
  /** [hidden] → [intermediate] (n_inner, default 4 · hidden). */
  c_fc: Linear;
  /** [intermediate] → [hidden], initialised with std initializer_range / √(2 · n_layer). */
  c_proj: Linear;
  /** Dropout on the output (resid_pdrop). */
  dropout: Dropout;

  constructor(
    /** The parsed config it was built from. */
    readonly config: DecoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    const { hiddenSize, intermediateSize, initializerRange: std } = config;
    this.c_fc = new Linear(hiddenSize, intermediateSize, { std, seed: seeds.seed('c_fc.weight') });
    this.c_proj = new Linear(intermediateSize, hiddenSize, {
      std: residualStd(config),
      seed: seeds.seed('c_proj.weight'),
    });
    this.dropout = new Dropout(config.residualDropout, seeds.seed('dropout'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]. */
  forward(hidden: Tensor): Tensor {
    return this.dropout.forward(this.c_proj.forward(activationOf(this.config)(this.c_fc.forward(hidden))));
  }
}

/** Pre-LayerNorm block: x + attn(ln_1(x)), then y + mlp(ln_2(y)). */
export class GPT2Block extends Module {
  /** LayerNorm before attention. */
  ln_1: LayerNorm;
  /** Causal self-attention. */
  attn: GPT2Attention;
  /** LayerNorm before the feed-forward layer. */
  ln_2: LayerNorm;
  /** The feed-forward layer. */
  mlp: GPT2MLP;

  constructor(config: DecoderModelConfig, layerIndex: number, seeds: SeedScope) {
    super();
    this.ln_1 = new LayerNorm(config.hiddenSize, config.normEps);
    this.attn = new GPT2Attention(config, layerIndex, seeds.child('attn'));
    this.ln_2 = new LayerNorm(config.hiddenSize, config.normEps);
    this.mlp = new GPT2MLP(config, seeds.child('mlp'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]. */
  forward(hidden: Tensor, pass: DecoderPass): Tensor {
    const attended = add(hidden, this.attn.forward(this.ln_1.forward(hidden), pass));
    return add(attended, this.mlp.forward(this.ln_2.forward(attended)));
  }
}

/** `transformer.*`: token and position embeddings, the blocks, the final LayerNorm. */
export class GPT2Model extends Module {
  /** Token embeddings, [vocab, hidden]; also the output projection when the head is tied. */
  wte: Embedding;
  /** Learned positions, [n_positions, hidden]. */
  wpe: Embedding;
  /** Dropout on the summed embeddings (embd_pdrop). */
  drop: Dropout;
  /** The blocks, in order (`h.0`, `h.1`, ...). */
  h: GPT2Block[];
  /** The final LayerNorm. */
  ln_f: LayerNorm;

  constructor(
    /** The parsed config it was built from. */
    readonly config: DecoderModelConfig,
    seeds: SeedScope,
  ) {
    super();
    const { vocabSize, hiddenSize, maxPositions, initializerRange: std } = config;
    this.wte = new Embedding(vocabSize, hiddenSize, { std, seed: seeds.seed('wte.weight') });
    this.wpe = new Embedding(maxPositions, hiddenSize, { std, seed: seeds.seed('wpe.weight') });
    this.drop = new Dropout(config.embeddingDropout, seeds.seed('drop'));
    this.h = Array.from(
      { length: config.numLayers },
      (_, index) => new GPT2Block(config, index, seeds.child(`h.${index}`)),
    );
    this.ln_f = new LayerNorm(hiddenSize, config.normEps);
  }

  /**
   * The last hidden states [batch, seq, hidden] of a pass, after ln_f. Throws a RangeError for a position outside
   * [0, n_positions).
   */
  forward(pass: DecoderPass): Tensor {
    const { ids, positions } = pass;
    const limit = this.config.maxPositions;
    positions.forEach((position, index) => {
      if (position < 0 || position >= limit) {
        throw new RangeError(
          `GPT-2: position ${position} (row ${Math.floor(index / ids.seq)}) is outside the ${limit} learned positions (n_positions)`,
        );
      }
    });
    const shape = [ids.batch, ids.seq];
    const embedded = add(this.wte.forward(ids.data, shape), this.wpe.forward(positions, shape));
    const hidden = this.h.reduce((value, block) => block.forward(value, pass), this.drop.forward(embedded));
    return this.ln_f.forward(hidden);
  }
}

/** transformers' GPT2LMHeadModel: the decoder and the output projection (the token embeddings when tied). */
export class GPT2LMHeadModel extends CausalLM {
  readonly basePrefix = 'transformer';
  /** The decoder: embeddings, blocks and the final LayerNorm. */
  transformer: GPT2Model;
  /** [hidden] → [vocab] without bias; undefined when tied to `transformer.wte` (tie_word_embeddings, the default). */
  lm_head: Linear | undefined;

  constructor(
    /** The parsed config it was built from. */
    readonly config: DecoderModelConfig,
    options: { seed?: number } = {},
  ) {
    super();
    const seeds = new SeedScope(options.seed ?? 0);
    this.transformer = new GPT2Model(config, seeds.child('transformer'));
    this.lm_head = languageModelHead(config, seeds.seed('lm_head.weight'));
    this.initGenerationConfig();
  }

  protected hiddenStates(pass: DecoderPass): Tensor {
    return this.transformer.forward(pass);
  }

  protected outputProjection(hidden: Tensor): Tensor {
    return projectToVocabulary(hidden, this.lm_head, this.transformer.wte.weight);
  }

  override transposedInCheckpoint(name: string): boolean {
    return CONV1D_WEIGHT.test(name) && !name.includes('.adapter.');
  }
}
