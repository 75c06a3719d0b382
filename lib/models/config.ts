// Hugging Face `config.json` for BERT-family encoders: parsing with checks that name the offending key.

/** The keys of a Hugging Face BERT/RoBERTa config that bidora reads (snake_case, as in the file). */
export interface HuggingFaceConfig {
  architectures?: string[];
  model_type?: string;
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  hidden_act?: string;
  hidden_dropout_prob?: number;
  attention_probs_dropout_prob?: number;
  max_position_embeddings: number;
  type_vocab_size?: number;
  layer_norm_eps?: number;
  initializer_range?: number;
  pad_token_id?: number;
  num_labels?: number;
  id2label?: Record<string, string>;
  label2id?: Record<string, number>;
  problem_type?: string;
  classifier_dropout?: number | null;
  [key: string]: unknown;
}

export interface EncoderModelConfig {
  modelType: 'bert' | 'roberta';
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  activation: 'gelu' | 'relu';
  hiddenDropout: number;
  attentionDropout: number;
  classifierDropout: number;
  maxPositions: number;
  typeVocabSize: number;
  layerNormEps: number;
  initializerRange: number;
  padTokenId: number;
  numLabels: number;
  problemType: 'single_label_classification' | 'regression';
  /** The parsed file, kept so a saved model writes back every key it was given. */
  raw: HuggingFaceConfig;
}

function positiveInteger(config: Record<string, unknown>, key: string, fallback?: number): number {
  const value = config[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new RangeError(`config.json: ${key} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

function probability(config: Record<string, unknown>, key: string, fallback: number): number {
  const value = config[key] ?? fallback;
  if (typeof value !== 'number' || !(value >= 0 && value < 1)) {
    throw new RangeError(`config.json: ${key} must be a probability in [0, 1), got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Validates a parsed config.json and fills Hugging Face's defaults. */
export function parseConfig(raw: unknown): EncoderModelConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new TypeError('config.json: expected a JSON object');
  }
  const config = raw as HuggingFaceConfig;
  const architecture = config.architectures?.[0] ?? '';
  const modelType = config.model_type ?? (architecture.startsWith('Roberta') ? 'roberta' : 'bert');
  if (modelType !== 'bert' && modelType !== 'roberta') {
    throw new RangeError(`config.json: model_type '${modelType}' is not supported (expected 'bert' or 'roberta')`);
  }
  const activation = config.hidden_act ?? 'gelu';
  if (activation !== 'gelu' && activation !== 'relu') {
    throw new RangeError(`config.json: hidden_act '${activation}' is not supported (expected 'gelu' or 'relu')`);
  }
  const hiddenSize = positiveInteger(config, 'hidden_size');
  const numHeads = positiveInteger(config, 'num_attention_heads');
  if (hiddenSize % numHeads !== 0) {
    throw new RangeError(`config.json: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  }
  const labels = config.id2label ? Object.keys(config.id2label).length : undefined;
  const numLabels = positiveInteger(config, 'num_labels', labels ?? 2);
  const problemType = config.problem_type ?? (numLabels === 1 ? 'regression' : 'single_label_classification');
  if (problemType !== 'regression' && problemType !== 'single_label_classification') {
    throw new RangeError(`config.json: problem_type '${problemType}' is not supported`);
  }
  const hiddenDropout = probability(config, 'hidden_dropout_prob', 0.1);
  return {
    modelType,
    vocabSize: positiveInteger(config, 'vocab_size'),
    hiddenSize,
    numLayers: positiveInteger(config, 'num_hidden_layers'),
    numHeads,
    intermediateSize: positiveInteger(config, 'intermediate_size'),
    activation,
    hiddenDropout,
    attentionDropout: probability(config, 'attention_probs_dropout_prob', 0.1),
    classifierDropout: config.classifier_dropout == null ? hiddenDropout : probability(config, 'classifier_dropout', 0),
    maxPositions: positiveInteger(config, 'max_position_embeddings'),
    typeVocabSize: positiveInteger(config, 'type_vocab_size', 2),
    layerNormEps: typeof config.layer_norm_eps === 'number' ? config.layer_norm_eps : 1e-12,
    initializerRange: typeof config.initializer_range === 'number' ? config.initializer_range : 0.02,
    padTokenId: typeof config.pad_token_id === 'number' ? config.pad_token_id : modelType === 'roberta' ? 1 : 0,
    numLabels,
    problemType,
    raw: config,
  };
}
