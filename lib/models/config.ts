// Hugging Face `config.json` for the encoder families (BERT, RoBERTa, XLM-RoBERTa, CamemBERT, DistilBERT, ESM): parsing
// into one normalised config, with checks that name the offending key, and which class the config asks for. Decoder
// configs (GPT-2, Llama, Qwen2) are told apart here and parsed by decoder-config.ts.
import { boundedSize, choice, finiteNumber, flag, probability, shown, valueOf } from './config-values';
import {
  DECODER_ARCHITECTURES,
  decoderFamilyOf,
  type DecoderModelConfig,
  decoderParameterCount,
  parseDecoderConfig,
} from './decoder-config';

/**
 * The keys of a Hugging Face encoder config that bidora reads (snake_case, as in the file). The sizes are BERT's
 * names; DistilBERT's (dim, n_layers, n_heads, hidden_dim) are read as well. parseConfig checks whichever apply.
 */
export interface HuggingFaceConfig {
  /** The class to build; its first entry decides the task (`BertForTokenClassification`). */
  architectures?: string[];
  /** The family ('bert', 'roberta', 'xlm-roberta', 'camembert', 'distilbert', 'esm'). */
  model_type?: string;
  /** Rows of the word embedding: token ids are in [0, vocab_size). */
  vocab_size: number;
  /** Width of the hidden states. */
  hidden_size?: number;
  /** Encoder layers. */
  num_hidden_layers?: number;
  /** Attention heads; hidden_size must be a multiple. */
  num_attention_heads?: number;
  /** Width of the feed-forward layer's inner projection. */
  intermediate_size?: number;
  /** The feed-forward activation: 'gelu' (default) or 'relu'. */
  hidden_act?: string;
  /** Dropout after embeddings and output projections (default 0.1). */
  hidden_dropout_prob?: number;
  /** Dropout on the attention probabilities (default 0.1). */
  attention_probs_dropout_prob?: number;
  /** Rows of the learned position embedding, which bound the sequence length. */
  max_position_embeddings?: number;
  /** Token type (segment) ids are in [0, type_vocab_size) (default 2). */
  type_vocab_size?: number;
  /** LayerNorm's epsilon (default 1e-12). */
  layer_norm_eps?: number;
  /** Standard deviation of the initial weights (default 0.02). */
  initializer_range?: number;
  /** The padding token (default 0; 1 for the RoBERTa family). */
  pad_token_id?: number;
  /** Outputs of the task head (default the size of id2label, else 2). */
  num_labels?: number;
  /** Label names by class id ("0" to num_labels − 1). */
  id2label?: Record<string, string>;
  /** Class ids by label name. */
  label2id?: Record<string, number>;
  /** 'single_label_classification', 'regression' (default when num_labels is 1) or 'multi_label_classification'. */
  problem_type?: string;
  /** Dropout in the sequence head; null or absent: hidden_dropout_prob. */
  classifier_dropout?: number | null;
  /** Any other key: kept in {@link EncoderModelConfig.raw} and written back on save. */
  [key: string]: unknown;
}

/** The encoder families, by their Hugging Face model_type. */
export const ENCODER_FAMILIES = {
  /** BERT: BertModel, BertForSequenceClassification, BertForTokenClassification. */
  bert: 'Bert',
  /** RoBERTa: BERT's layers, positions counted from pad_token_id + 1, its own sequence head. */
  roberta: 'Roberta',
  /** XLM-RoBERTa: RoBERTa's layout with a multilingual vocabulary. */
  'xlm-roberta': 'XLMRoberta',
  /** CamemBERT: RoBERTa's layout. */
  camembert: 'Camembert',
  /** DistilBERT: six layers under their own names, no token types. */
  distilbert: 'DistilBert',
  /** ESM-2 and ESM-1b protein language models: pre-LayerNorm layers, rotary or learned positions. */
  esm: 'Esm',
} as const;

/** An encoder family's model_type: a key of {@link ENCODER_FAMILIES}. */
export type EncoderFamily = keyof typeof ENCODER_FAMILIES;

/** What a model computes on top of the encoder: one prediction per sequence, one per token, or hidden states. */
export type EncoderTask = 'sequence-classification' | 'token-classification' | 'base';

/** Class-name suffixes by task. Pretraining heads load as sequence classifiers: the usual start of a fine-tune. */
const TASK_SUFFIXES: Record<string, EncoderTask> = {
  ForSequenceClassification: 'sequence-classification',
  ForTokenClassification: 'token-classification',
  Model: 'base',
  ForMaskedLM: 'sequence-classification',
  ForPreTraining: 'sequence-classification',
};

const ENCODER_ARCHITECTURES: readonly string[] = Object.values(ENCODER_FAMILIES).flatMap((prefix) =>
  Object.keys(TASK_SUFFIXES)
    .filter((suffix) => !((prefix === 'DistilBert' || prefix === 'Esm') && suffix === 'ForPreTraining'))
    .map((suffix) => prefix + suffix),
);

/** Every architecture name bidora builds, encoders and decoders, for the error that lists them. */
export const SUPPORTED_ARCHITECTURES: readonly string[] = [...ENCODER_ARCHITECTURES, ...DECODER_ARCHITECTURES];

/** A parsed config of either kind: `task` 'causal-lm' marks a decoder. */
export type ModelConfig = EncoderModelConfig | DecoderModelConfig;

/** The class name transformers gives a family's model for a task (what models.save writes in architectures). */
export function architectureName(family: EncoderFamily, task: EncoderTask): string {
  const suffix = {
    'sequence-classification': 'ForSequenceClassification',
    'token-classification': 'ForTokenClassification',
    base: 'Model',
  }[task];
  return ENCODER_FAMILIES[family] + suffix;
}

/** The family and task of an architecture name, or undefined when bidora does not build it. */
export function architectureInfo(architecture: string): { family: EncoderFamily; task: EncoderTask } | undefined {
  if (!ENCODER_ARCHITECTURES.includes(architecture)) return undefined;
  // Longest prefix first: "XLMRoberta..." must not read as "Roberta...".
  const families = (Object.entries(ENCODER_FAMILIES) as [EncoderFamily, string][]).sort(
    ([, a], [, b]) => b.length - a.length,
  );
  const [family, prefix] = families.find(([, name]) => architecture.startsWith(name))!;
  return { family, task: TASK_SUFFIXES[architecture.slice(prefix.length)] };
}

/** An encoder config as {@link parseConfig} normalises it: every family's keys under one set of names, checked. */
export interface EncoderModelConfig {
  /** The family (its Hugging Face model_type). */
  modelType: EncoderFamily;
  /** The class this config builds (`BertForTokenClassification`, ...), as `architectures[0]` names it. */
  architecture: string;
  /** What the head computes, from the architecture (a sequence classifier when none is named). */
  task: EncoderTask;
  /** Token ids are in [0, vocabSize). */
  vocabSize: number;
  /** Width of the hidden states; a multiple of numHeads. */
  hiddenSize: number;
  /** Encoder layers. */
  numLayers: number;
  /** Attention heads. */
  numHeads: number;
  /** Width of the feed-forward layer's inner projection. */
  intermediateSize: number;
  /** The feed-forward activation. */
  activation: 'gelu' | 'relu';
  /** Dropout after embeddings and output projections. */
  hiddenDropout: number;
  /** Dropout on the attention probabilities. */
  attentionDropout: number;
  /** Dropout in the task head (classifier_dropout, else hiddenDropout; DistilBERT's seq_classif_dropout, 0.2). */
  classifierDropout: number;
  /** Rows of the position embedding (max_position_embeddings), which bound the sequence length. */
  maxPositions: number;
  /** Token type ids are in [0, typeVocabSize); 0 for families without them (DistilBERT, ESM). */
  typeVocabSize: number;
  /** LayerNorm's epsilon. */
  layerNormEps: number;
  /** Standard deviation of the initial weights. */
  initializerRange: number;
  /** The padding token, in [0, vocabSize). */
  padTokenId: number;
  /** Outputs of the task head (classes, 1 for regression, or the label set for multi-label). */
  numLabels: number;
  /** One class per example (cross-entropy), a real value (MSE), or any set of classes (BCE with logits). */
  problemType: 'single_label_classification' | 'regression' | 'multi_label_classification';
  /** RoBERTa's layout: positions count from pad_token_id + 1 over real tokens, as transformers does. */
  positionsFromPadding: boolean;
  /** ESM's settings (protein language models), for the esm family. */
  esm?: EsmSettings;
  /** The parsed file, kept so a saved model writes back every key it was given. */
  raw: HuggingFaceConfig;
}

/** What sets an ESM config apart, from its own keys. */
export interface EsmSettings {
  /** 'rotary' (ESM-2) rotates queries and keys; 'absolute' (ESM-1b) adds learned position embeddings. */
  positionEmbedding: 'rotary' | 'absolute';
  /** Zero the mask token's embedding and rescale the rest by (1 − 0.12) / (1 − the sequence's mask share). */
  tokenDropout: boolean;
  /** The mask token's id (mask_token_id); token dropout needs it. */
  maskTokenId: number | undefined;
  /** A LayerNorm on the embeddings (ESM-1b); ESM-2 normalises after the last layer only. */
  layerNormBefore: boolean;
}

/**
 * Upper bounds on the size keys: well above any BERT-family checkpoint (XLM-R's vocabulary is 250,002; BERT-large has
 * 24 layers of 1,024), low enough that a corrupt value is refused before anything is allocated.
 */
export const CONFIG_SIZE_LIMITS = {
  /** 2^24 tokens. */
  vocab_size: 1 << 24,
  /** 65,536 features. */
  hidden_size: 1 << 16,
  /** 1,024 layers. */
  num_hidden_layers: 1 << 10,
  /** 4,096 heads. */
  num_attention_heads: 1 << 12,
  /** 262,144 features. */
  intermediate_size: 1 << 18,
  /** 2^20 positions. */
  max_position_embeddings: 1 << 20,
  /** 65,536 token types. */
  type_vocab_size: 1 << 16,
  /** 2^20 labels. */
  num_labels: 1 << 20,
  // DistilBERT's names for the same sizes.
  /** DistilBERT's hidden_size. */
  dim: 1 << 16,
  /** DistilBERT's num_hidden_layers. */
  n_layers: 1 << 10,
  /** DistilBERT's num_attention_heads. */
  n_heads: 1 << 12,
  /** DistilBERT's intermediate_size. */
  hidden_dim: 1 << 18,
} as const;

type SizeKey = keyof typeof CONFIG_SIZE_LIMITS;

function size(config: Record<string, unknown>, key: SizeKey, fallback?: number): number {
  return boundedSize(config, key, CONFIG_SIZE_LIMITS[key], fallback);
}

function firstArchitecture(config: Record<string, unknown>): string | undefined {
  const architectures = valueOf(config, 'architectures');
  if (architectures === undefined) return undefined;
  if (!Array.isArray(architectures) || !architectures.every((item) => typeof item === 'string')) {
    throw new TypeError(`config.json: architectures must be a list of class names, got ${shown(architectures)}`);
  }
  const architecture = architectures[0] as string | undefined;
  if (architecture !== undefined && architectureInfo(architecture) === undefined) {
    throw new RangeError(
      `config.json: architecture '${architecture}' is not supported; bidora builds ${SUPPORTED_ARCHITECTURES.join(', ')}`,
    );
  }
  return architecture;
}

/** The number of labels id2label/label2id describe (checked), or undefined when neither is given. */
function labelCount(config: Record<string, unknown>): number | undefined {
  const id2label = valueOf(config, 'id2label');
  const label2id = valueOf(config, 'label2id');
  const isObject = (value: unknown) => value !== null && typeof value === 'object' && !Array.isArray(value);
  if (id2label !== undefined) {
    if (!isObject(id2label) || !Object.values(id2label as object).every((label) => typeof label === 'string')) {
      throw new TypeError(`config.json: id2label must map ids to label names, got ${shown(id2label)}`);
    }
    const ids = Object.keys(id2label as object);
    if (!ids.every((id) => /^(0|[1-9]\d*)$/.test(id) && Number(id) < ids.length)) {
      throw new RangeError(`config.json: id2label must have the ids 0 to ${ids.length - 1}, got ${shown(ids)}`);
    }
  }
  if (label2id !== undefined) {
    if (!isObject(label2id) || !Object.values(label2id as object).every((id) => Number.isInteger(id) && id >= 0)) {
      throw new TypeError(`config.json: label2id must map label names to ids, got ${shown(label2id)}`);
    }
  }
  return id2label === undefined ? undefined : Object.keys(id2label as object).length;
}

/**
 * Validates a parsed config.json and fills Hugging Face's defaults; every key bidora reads is checked here. A decoder
 * config (GPT-2, Llama, Qwen2, by architecture or model_type) gives a DecoderModelConfig, anything else an encoder's.
 */
export function parseConfig(raw: HuggingFaceConfig): EncoderModelConfig;
export function parseConfig(raw: unknown): ModelConfig;
export function parseConfig(raw: unknown): ModelConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new TypeError('config.json: expected a JSON object');
  }
  if (decoderFamilyOf(raw as Record<string, unknown>) !== undefined) {
    return parseDecoderConfig(raw as Record<string, unknown>);
  }
  return parseEncoderConfig(raw as HuggingFaceConfig);
}

function parseEncoderConfig(config: HuggingFaceConfig): EncoderModelConfig {
  const named = firstArchitecture(config);
  const fromName = named === undefined ? undefined : architectureInfo(named)!;
  const modelType = choice(
    config,
    'model_type',
    fromName?.family ?? 'bert',
    Object.keys(ENCODER_FAMILIES) as EncoderFamily[],
  );
  if (fromName !== undefined && fromName.family !== modelType) {
    throw new RangeError(`config.json: model_type '${modelType}' disagrees with architecture '${named}'`);
  }
  const architecture = named ?? `${ENCODER_FAMILIES[modelType]}ForSequenceClassification`;
  const task = fromName?.task ?? 'sequence-classification';
  const sizes =
    modelType === 'distilbert'
      ? distilbertSizes(config)
      : modelType === 'esm'
        ? { ...bertSizes(config), typeVocabSize: 0, activation: 'gelu' as const }
        : bertSizes(config);
  const { hiddenSize, numHeads } = sizes;
  if (hiddenSize % numHeads !== 0) {
    const [hiddenKey, headsKey] =
      modelType === 'distilbert' ? ['dim', 'n_heads'] : ['hidden_size', 'num_attention_heads'];
    throw new RangeError(`config.json: ${hiddenKey} ${hiddenSize} is not a multiple of ${headsKey} ${numHeads}`);
  }
  const labels = labelCount(config);
  const numLabels = size(config, 'num_labels', labels ?? 2);
  if (labels !== undefined && labels !== numLabels) {
    throw new RangeError(`config.json: num_labels ${numLabels} disagrees with the ${labels} labels of id2label`);
  }
  const problemType = choice(
    config,
    'problem_type',
    numLabels === 1 && task === 'sequence-classification' ? 'regression' : 'single_label_classification',
    ['single_label_classification', 'regression', 'multi_label_classification'],
  );
  if (problemType === 'multi_label_classification' && task !== 'sequence-classification') {
    throw new RangeError(
      `config.json: problem_type 'multi_label_classification' needs a sequence classifier, not ${architecture}`,
    );
  }
  if (problemType === 'regression' && (numLabels !== 1 || task !== 'sequence-classification')) {
    throw new RangeError(
      `config.json: problem_type 'regression' needs num_labels 1 on a sequence classifier, got ${numLabels} on ${architecture}`,
    );
  }
  const vocabSize = size(config, 'vocab_size');
  const esm = modelType === 'esm' ? esmSettings(config, size(config, 'vocab_size')) : undefined;
  const positionsFromPadding =
    modelType === 'roberta' ||
    modelType === 'xlm-roberta' ||
    modelType === 'camembert' ||
    esm?.positionEmbedding === 'absolute';
  const padTokenId = valueOf(config, 'pad_token_id') ?? (positionsFromPadding ? 1 : 0);
  if (typeof padTokenId !== 'number') {
    throw new TypeError(`config.json: pad_token_id must be a token id, got ${shown(padTokenId)}`);
  }
  if (!Number.isInteger(padTokenId) || padTokenId < 0 || padTokenId >= vocabSize) {
    throw new RangeError(`config.json: pad_token_id must be a token id in [0, ${vocabSize}), got ${padTokenId}`);
  }
  return {
    modelType,
    architecture,
    task,
    vocabSize,
    ...sizes,
    initializerRange: finiteNumber(config, 'initializer_range', 0.02, (std) => std >= 0, 'a non-negative number'),
    padTokenId,
    numLabels,
    problemType,
    positionsFromPadding,
    ...(esm === undefined ? {} : { esm }),
    raw: config,
  };
}

function esmSettings(config: Record<string, unknown>, vocabSize: number): EsmSettings {
  const maskTokenId = valueOf(config, 'mask_token_id');
  if (
    maskTokenId !== undefined &&
    (!Number.isInteger(maskTokenId) || (maskTokenId as number) < 0 || (maskTokenId as number) >= vocabSize)
  ) {
    throw new RangeError(
      `config.json: mask_token_id must be a token id in [0, ${vocabSize}), got ${shown(maskTokenId)}`,
    );
  }
  const tokenDropout = flag(config, 'token_dropout', false);
  if (tokenDropout && maskTokenId === undefined) {
    throw new RangeError('config.json: token_dropout needs mask_token_id');
  }
  return {
    positionEmbedding: choice(config, 'position_embedding_type', 'absolute', ['absolute', 'rotary']),
    tokenDropout,
    maskTokenId: maskTokenId as number | undefined,
    layerNormBefore: flag(config, 'emb_layer_norm_before', false),
  };
}

type FamilySizes = Omit<
  EncoderModelConfig,
  | 'modelType'
  | 'architecture'
  | 'task'
  | 'vocabSize'
  | 'initializerRange'
  | 'padTokenId'
  | 'numLabels'
  | 'problemType'
  | 'positionsFromPadding'
  | 'raw'
>;

/** BERT's key names, shared by RoBERTa, XLM-RoBERTa and CamemBERT. */
function bertSizes(config: Record<string, unknown>): FamilySizes {
  const hiddenDropout = probability(config, 'hidden_dropout_prob', 0.1);
  return {
    hiddenSize: size(config, 'hidden_size'),
    numLayers: size(config, 'num_hidden_layers'),
    numHeads: size(config, 'num_attention_heads'),
    intermediateSize: size(config, 'intermediate_size'),
    activation: choice(config, 'hidden_act', 'gelu', ['gelu', 'relu']),
    hiddenDropout,
    attentionDropout: probability(config, 'attention_probs_dropout_prob', 0.1),
    classifierDropout: probability(config, 'classifier_dropout', hiddenDropout),
    maxPositions: size(config, 'max_position_embeddings'),
    typeVocabSize: size(config, 'type_vocab_size', 2),
    layerNormEps: finiteNumber(config, 'layer_norm_eps', 1e-12, (eps) => eps > 0 && eps < 1, 'a number in (0, 1)'),
  };
}

/** DistilBERT's names (dim, n_layers, ...): no token types, its own head dropout, LayerNorm eps fixed at 1e-12. */
function distilbertSizes(config: Record<string, unknown>): FamilySizes {
  if (valueOf(config, 'sinusoidal_pos_embds') === true) {
    throw new RangeError('config.json: sinusoidal_pos_embds true is not supported (learned positions only)');
  }
  return {
    hiddenSize: size(config, 'dim', 768),
    numLayers: size(config, 'n_layers', 6),
    numHeads: size(config, 'n_heads', 12),
    intermediateSize: size(config, 'hidden_dim', 3072),
    activation: choice(config, 'activation', 'gelu', ['gelu', 'relu']),
    hiddenDropout: probability(config, 'dropout', 0.1),
    attentionDropout: probability(config, 'attention_dropout', 0.1),
    classifierDropout: probability(config, 'seq_classif_dropout', 0.2),
    maxPositions: size(config, 'max_position_embeddings', 512),
    typeVocabSize: 0,
    layerNormEps: 1e-12,
  };
}

/** The number of parameters the model a config describes has: known before anything is allocated. */
export function parameterCount(config: ModelConfig): number {
  return config.task === 'causal-lm' ? decoderParameterCount(config) : encoderParameterCount(config);
}

function encoderParameterCount(config: EncoderModelConfig): number {
  const { vocabSize, maxPositions, typeVocabSize, hiddenSize: hidden, intermediateSize, numLayers, numLabels } = config;
  const linear = (inputs: number, outputs: number) => inputs * outputs + outputs;
  const layerNorm = 2 * hidden;
  const embeddings = (vocabSize + maxPositions + typeVocabSize) * hidden + layerNorm;
  const layer =
    4 * linear(hidden, hidden) +
    layerNorm +
    linear(hidden, intermediateSize) +
    linear(intermediateSize, hidden) +
    layerNorm;
  // BERT: pooler + classifier; RoBERTa: no pooler, a dense + out_proj head. The same count either way.
  const head = linear(hidden, hidden) + linear(hidden, numLabels);
  return embeddings + numLayers * layer + head;
}
