// Hugging Face `config.json` for the decoder (causal language model) families, GPT-2 and the Llama family (Llama,
// Qwen2), parsed into one normalised config. Options that change the computation and that bidora does not implement
// (scaled RoPE, sliding windows, cross-attention) are refused with an error naming the key, never ignored.
import { boundedSize, choice, finiteNumber, flag, probability, shown, tokenId, valueOf } from './config-values';

/** The decoder families by Hugging Face model_type, with the one class each builds. */
export const DECODER_FAMILIES = {
  /** GPT-2: learned positions, fused query/key/value, Conv1D weights stored [in, out], tied head. */
  gpt2: 'GPT2LMHeadModel',
  /** Llama: RMSNorm, rotary positions, grouped-query attention, SwiGLU. */
  llama: 'LlamaForCausalLM',
  /** Qwen2: Llama's layout with query, key and value biases. */
  qwen2: 'Qwen2ForCausalLM',
} as const;

/** A decoder family's Hugging Face model_type. */
export type DecoderFamily = keyof typeof DECODER_FAMILIES;

export const DECODER_ARCHITECTURES: readonly string[] = Object.values(DECODER_FAMILIES);

/** Upper bounds on the decoder size keys: above any released checkpoint, low enough to refuse a corrupt value. */
export const DECODER_SIZE_LIMITS = {
  /** 2^24 tokens. */
  vocab_size: 1 << 24,
  /** 65,536 features. */
  hidden_size: 1 << 16,
  /** 1,024 layers. */
  num_hidden_layers: 1 << 10,
  /** 4,096 query heads. */
  num_attention_heads: 1 << 12,
  /** 4,096 key/value heads. */
  num_key_value_heads: 1 << 12,
  /** 4,096 features per head. */
  head_dim: 1 << 12,
  /** 262,144 features. */
  intermediate_size: 1 << 18,
  /** 2^24 positions. */
  max_position_embeddings: 1 << 24,
  // GPT-2's names for the same sizes.
  /** GPT-2's hidden_size. */
  n_embd: 1 << 16,
  /** GPT-2's num_hidden_layers. */
  n_layer: 1 << 10,
  /** GPT-2's num_attention_heads. */
  n_head: 1 << 12,
  /** GPT-2's intermediate_size. */
  n_inner: 1 << 18,
  /** GPT-2's max_position_embeddings. */
  n_positions: 1 << 24,
} as const;

/** A decoder's config.json as a typed object: its model_type tells it from an encoder's. */
export interface DecoderHuggingFaceConfig {
  /** 'gpt2', 'llama' or 'qwen2'. */
  model_type: DecoderFamily;
  /** The class, e.g. ['LlamaForCausalLM']. */
  architectures?: string[];
  /** Tokens of the vocabulary. */
  vocab_size?: number;
  [key: string]: unknown;
}

type DecoderSizeKey = keyof typeof DECODER_SIZE_LIMITS;

function size(config: Record<string, unknown>, key: DecoderSizeKey, fallback?: number): number {
  return boundedSize(config, key, DECODER_SIZE_LIMITS[key], fallback);
}

/** A decoder's config.json, validated and with transformers' defaults filled in (parseConfig). */
export interface DecoderModelConfig {
  /** The family (its Hugging Face model_type). */
  modelType: DecoderFamily;
  /** The class this config builds, as `architectures[0]` names it. */
  architecture: string;
  /** What tells a decoder's config from an encoder's. */
  task: 'causal-lm';
  /** Tokens of the vocabulary (rows of the embedding and of the logits). */
  vocabSize: number;
  /** Width of the residual stream. */
  hiddenSize: number;
  /** Decoder layers (blocks). */
  numLayers: number;
  /** Query heads. */
  numHeads: number;
  /** Key/value heads (grouped-query attention); numHeads is a multiple of it. GPT-2: numHeads. */
  numKeyValueHeads: number;
  /** Features per head (Llama's head_dim may differ from hiddenSize / numHeads). */
  headDim: number;
  /** Width of the MLP's hidden layer. */
  intermediateSize: number;
  /** The MLP's activation: GPT-2's gelu_new (tanh approximation), gelu (erf), relu; Llama's silu inside SwiGLU. */
  activation: 'gelu_new' | 'gelu' | 'relu' | 'silu';
  /** LayerNorm's (GPT-2) or RMSNorm's (Llama) epsilon. */
  normEps: number;
  /** GPT-2: the learned position table's length; Llama: max_position_embeddings (informative, RoPE has no table). */
  maxPositions: number;
  /** Learned absolute positions (GPT-2) or rotary embeddings on queries and keys (Llama). */
  positionEmbedding: 'learned' | 'rotary';
  /** RoPE's base (rope_theta). */
  ropeTheta: number;
  /** Biases of the query, key and value projections (GPT-2, Qwen2, Llama with attention_bias). */
  qkvBias: boolean;
  /** Bias of the attention's output projection. */
  outputBias: boolean;
  /** Biases of the MLP's projections. */
  mlpBias: boolean;
  /** Whether the output projection is the token embedding matrix (no lm_head.weight of its own). */
  tieWordEmbeddings: boolean;
  /** GPT-2's embd_pdrop (0 for Llama). */
  embeddingDropout: number;
  /** Dropout on the attention probabilities (attn_pdrop, attention_dropout). */
  attentionDropout: number;
  /** GPT-2's resid_pdrop, after each block's output projection (0 for Llama). */
  residualDropout: number;
  /** Scores scaled by 1/√headDim (GPT-2's scale_attn_weights may turn it off). */
  scaleAttention: boolean;
  /** GPT-2's scale_attn_by_inverse_layer_idx: layer i's scores further divided by i + 1. */
  scaleByInverseLayer: boolean;
  /** Standard deviation of the normal initialisation. */
  initializerRange: number;
  /** pad_token_id, when the config has one. */
  padTokenId: number | undefined;
  /** bos_token_id, when the config has one. */
  bosTokenId: number | undefined;
  /** Tokens that end a generated sequence (eos_token_id, which may be a list); empty when the config has none. */
  eosTokenIds: number[];
  /** The parsed file, kept so a saved model writes back every key it was given. */
  raw: Record<string, unknown>;
}

/** The decoder family a config names, by architecture or model_type; undefined for anything else. */
export function decoderFamilyOf(config: Record<string, unknown>): DecoderFamily | undefined {
  const architectures = valueOf(config, 'architectures');
  if (Array.isArray(architectures) && typeof architectures[0] === 'string') {
    const found = (Object.entries(DECODER_FAMILIES) as [DecoderFamily, string][]).find(
      ([, name]) => name === architectures[0],
    );
    if (found !== undefined) return found[0];
  }
  const modelType = valueOf(config, 'model_type');
  return typeof modelType === 'string' && modelType in DECODER_FAMILIES ? (modelType as DecoderFamily) : undefined;
}

/** Token ids of eos_token_id: one id or a list of them (Llama 3 lists several). */
export function tokenIdList(config: Record<string, unknown>, key: string, vocabSize: number): number[] {
  const value = valueOf(config, key);
  if (value === undefined) return [];
  const ids = Array.isArray(value) ? value : [value];
  return ids.map((id, index) => {
    if (typeof id !== 'number' || !Number.isInteger(id)) {
      throw new TypeError(`config.json: ${key} must be a token id or a list of them, got ${shown(value)}`);
    }
    if (id < 0 || id >= vocabSize) {
      throw new RangeError(
        `config.json: ${key}${Array.isArray(value) ? `[${index}]` : ''} must be a token id in [0, ${vocabSize}), got ${id}`,
      );
    }
    return id;
  });
}

/** Validates a decoder config.json and fills transformers' defaults for its family. */
export function parseDecoderConfig(config: Record<string, unknown>): DecoderModelConfig {
  const family = decoderFamilyOf(config);
  if (family === undefined) throw new RangeError('config.json: not a decoder config (GPT-2, Llama or Qwen2)');
  const architectures = valueOf(config, 'architectures');
  if (architectures !== undefined && !Array.isArray(architectures)) {
    throw new TypeError(`config.json: architectures must be a list of class names, got ${shown(architectures)}`);
  }
  const named = (architectures as unknown[] | undefined)?.[0];
  if (named !== undefined && named !== DECODER_FAMILIES[family]) {
    throw new RangeError(
      `config.json: architecture ${shown(named)} is not supported for model_type '${family}'; ` +
        `bidora builds ${DECODER_FAMILIES[family]}`,
    );
  }
  const modelType = valueOf(config, 'model_type');
  if (modelType !== undefined && modelType !== family) {
    throw new RangeError(`config.json: model_type ${shown(modelType)} disagrees with architecture '${named}'`);
  }
  const parsed = family === 'gpt2' ? gpt2Config(config) : llamaConfig(config, family);
  if (parsed.numHeads % parsed.numKeyValueHeads !== 0) {
    throw new RangeError(
      `config.json: num_attention_heads ${parsed.numHeads} is not a multiple of num_key_value_heads ${parsed.numKeyValueHeads}`,
    );
  }
  const vocabSize = parsed.vocabSize;
  return {
    ...parsed,
    modelType: family,
    architecture: DECODER_FAMILIES[family],
    task: 'causal-lm',
    tieWordEmbeddings: flag(config, 'tie_word_embeddings', family === 'gpt2'),
    initializerRange: finiteNumber(config, 'initializer_range', 0.02, (std) => std >= 0, 'a non-negative number'),
    padTokenId: tokenId(config, 'pad_token_id', vocabSize),
    bosTokenId: tokenId(config, 'bos_token_id', vocabSize),
    eosTokenIds: tokenIdList(config, 'eos_token_id', vocabSize),
    raw: config,
  };
}

type FamilyPart = Omit<
  DecoderModelConfig,
  | 'modelType'
  | 'architecture'
  | 'task'
  | 'tieWordEmbeddings'
  | 'initializerRange'
  | 'padTokenId'
  | 'bosTokenId'
  | 'eosTokenIds'
  | 'raw'
>;

function refuse(config: Record<string, unknown>, key: string, unsupported: (value: unknown) => boolean, why: string) {
  const value = valueOf(config, key);
  if (value !== undefined && unsupported(value)) {
    throw new RangeError(`config.json: ${key} ${shown(value)} is not supported (${why})`);
  }
}

/** GPT-2's names (n_embd, n_layer, n_head, n_inner, n_positions) and its dropout keys. */
function gpt2Config(config: Record<string, unknown>): FamilyPart {
  refuse(config, 'add_cross_attention', (value) => value !== false, 'GPT2LMHeadModel here is decoder-only');
  const hiddenSize = size(config, 'n_embd', 768);
  const numHeads = size(config, 'n_head', 12);
  if (hiddenSize % numHeads !== 0) {
    throw new RangeError(`config.json: n_embd ${hiddenSize} is not a multiple of n_head ${numHeads}`);
  }
  // reorder_and_upcast_attn only changes where transformers casts half precision to float32; bidora computes in
  // float32 throughout, so either value gives the same scores. It is still type-checked.
  flag(config, 'reorder_and_upcast_attn', false);
  const activation = choice(config, 'activation_function', 'gelu_new', [
    'gelu_new',
    'gelu_pytorch_tanh',
    'gelu',
    'relu',
  ] as const);
  return {
    vocabSize: size(config, 'vocab_size', 50257),
    hiddenSize,
    numLayers: size(config, 'n_layer', 12),
    numHeads,
    numKeyValueHeads: numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: size(config, 'n_inner', 4 * hiddenSize),
    // gelu_pytorch_tanh is the same tanh approximation as gelu_new.
    activation: activation === 'gelu_pytorch_tanh' ? 'gelu_new' : activation,
    normEps: finiteNumber(config, 'layer_norm_epsilon', 1e-5, (eps) => eps > 0 && eps < 1, 'a number in (0, 1)'),
    maxPositions: size(config, 'n_positions', 1024),
    positionEmbedding: 'learned',
    ropeTheta: 10_000,
    qkvBias: true,
    outputBias: true,
    mlpBias: true,
    embeddingDropout: probability(config, 'embd_pdrop', 0.1),
    attentionDropout: probability(config, 'attn_pdrop', 0.1),
    residualDropout: probability(config, 'resid_pdrop', 0.1),
    scaleAttention: flag(config, 'scale_attn_weights', true),
    scaleByInverseLayer: flag(config, 'scale_attn_by_inverse_layer_idx', false),
  };
}

/** RoPE's base from rope_theta or transformers 5's rope_parameters; any scaling of the angles is refused. */
function ropeTheta(config: Record<string, unknown>): number {
  const parameters = valueOf(config, 'rope_parameters');
  for (const key of ['rope_scaling', 'rope_parameters']) {
    const value = valueOf(config, key);
    if (value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new TypeError(`config.json: ${key} must be an object, got ${shown(value)}`);
    }
    const settings = value as Record<string, unknown>;
    const type = valueOf(settings, 'rope_type') ?? valueOf(settings, 'type') ?? 'default';
    if (type !== 'default') {
      throw new RangeError(
        `config.json: ${key}.rope_type ${shown(type)} is not supported (bidora implements plain RoPE, rope_type 'default')`,
      );
    }
    const partial = valueOf(settings, 'partial_rotary_factor');
    if (partial !== undefined && partial !== 1) {
      throw new RangeError(
        `config.json: ${key}.partial_rotary_factor ${shown(partial)} is not supported (every feature rotates)`,
      );
    }
  }
  if (parameters !== undefined && valueOf(parameters as Record<string, unknown>, 'rope_theta') !== undefined) {
    const nested = parameters as Record<string, unknown>;
    const theta = finiteNumber(nested, 'rope_theta', 10_000, (base) => base > 1, 'a number above 1');
    const top = valueOf(config, 'rope_theta');
    if (top !== undefined && top !== theta) {
      throw new RangeError(`config.json: rope_theta ${shown(top)} disagrees with rope_parameters.rope_theta ${theta}`);
    }
    return theta;
  }
  return finiteNumber(config, 'rope_theta', 10_000, (base) => base > 1, 'a number above 1');
}

/** Llama's names, shared by Qwen2 (which adds q/k/v biases and refuses sliding windows here). */
function llamaConfig(config: Record<string, unknown>, family: 'llama' | 'qwen2'): FamilyPart {
  const qwen = family === 'qwen2';
  const hiddenSize = size(config, 'hidden_size', 4096);
  const numHeads = size(config, 'num_attention_heads', 32);
  const numKeyValueHeads = size(config, 'num_key_value_heads', numHeads);
  const headDimGiven = valueOf(config, 'head_dim') !== undefined;
  if (!headDimGiven && hiddenSize % numHeads !== 0) {
    throw new RangeError(
      `config.json: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} (and no head_dim)`,
    );
  }
  const headDim = size(config, 'head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) throw new RangeError(`config.json: head_dim ${headDim} must be even for rotary embeddings`);
  choice(config, 'hidden_act', 'silu', ['silu']);
  if (qwen) {
    refuse(config, 'use_sliding_window', (value) => value !== false, 'sliding-window attention is not implemented');
    const layerTypes = valueOf(config, 'layer_types');
    if (
      layerTypes !== undefined &&
      (!Array.isArray(layerTypes) || layerTypes.some((type) => type !== 'full_attention'))
    ) {
      throw new RangeError(
        `config.json: layer_types ${shown(layerTypes)} is not supported (every layer must be 'full_attention')`,
      );
    }
  }
  const attentionBias = flag(config, 'attention_bias', false);
  return {
    vocabSize: size(config, 'vocab_size', qwen ? 151936 : 32000),
    hiddenSize,
    numLayers: size(config, 'num_hidden_layers', 32),
    numHeads,
    numKeyValueHeads,
    headDim,
    intermediateSize: size(config, 'intermediate_size', qwen ? 22016 : 11008),
    activation: 'silu',
    normEps: finiteNumber(config, 'rms_norm_eps', 1e-6, (eps) => eps > 0 && eps < 1, 'a number in (0, 1)'),
    maxPositions: size(config, 'max_position_embeddings', qwen ? 32768 : 2048),
    positionEmbedding: 'rotary',
    ropeTheta: ropeTheta(config),
    // Qwen2 always has q/k/v biases and never an o_proj bias; Llama follows attention_bias for all four.
    qkvBias: qwen || attentionBias,
    outputBias: !qwen && attentionBias,
    mlpBias: qwen ? false : flag(config, 'mlp_bias', false),
    embeddingDropout: 0,
    attentionDropout: probability(config, 'attention_dropout', 0),
    residualDropout: 0,
    scaleAttention: true,
    scaleByInverseLayer: false,
  };
}

/** The number of parameters of the model a decoder config describes (tied embeddings counted once). */
export function decoderParameterCount(config: DecoderModelConfig): number {
  const { vocabSize, hiddenSize: hidden, numHeads, numKeyValueHeads, headDim, intermediateSize, numLayers } = config;
  const linear = (inputs: number, outputs: number, bias: boolean) => inputs * outputs + (bias ? outputs : 0);
  const gpt2 = config.modelType === 'gpt2';
  const norm = gpt2 ? 2 * hidden : hidden;
  const attention =
    linear(hidden, (numHeads + 2 * numKeyValueHeads) * headDim, config.qkvBias) +
    linear(numHeads * headDim, hidden, config.outputBias);
  const mlp = gpt2
    ? linear(hidden, intermediateSize, true) + linear(intermediateSize, hidden, true)
    : 2 * linear(hidden, intermediateSize, config.mlpBias) + linear(intermediateSize, hidden, config.mlpBias);
  const embeddings = vocabSize * hidden + (gpt2 ? config.maxPositions * hidden : 0);
  const head = config.tieWordEmbeddings ? 0 : vocabSize * hidden;
  return embeddings + numLayers * (attention + mlp + 2 * norm) + norm + head;
}
