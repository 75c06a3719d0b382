// Models by name: build one from a Hugging Face config, load a checkpoint folder, save one back.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';

import { adaptedLayers } from '../adapters/layers';
import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { writeFileAtomic } from '../io/atomic';
import { replaceParameter } from '../nn/module';
import { transpose2d } from '../ops/shape';
import { noGrad } from '../autograd';
import { type DType } from '../binding';
import { type Tensor } from '../tensor';
import {
  architectureName,
  type EncoderModelConfig,
  type HuggingFaceConfig,
  type ModelConfig,
  parameterCount,
  parseConfig,
} from './config';
import { CausalLM, type GenerationDefaults } from './decoder';
import { type DecoderHuggingFaceConfig, type DecoderModelConfig, tokenIdList } from './decoder-config';
import { boundedSize, valueOf } from './config-values';
import { type EncoderTaskModel } from './encoder';
import { buildModel, type PretrainedModel } from './registry';

export {
  BertForSequenceClassification,
  BertForTokenClassification,
  BertModel,
  Embeddings,
  Encoder,
  EncoderModel,
  Pooler,
  RobertaClassificationHead,
  RobertaForSequenceClassification,
  RobertaForTokenClassification,
  RobertaModel,
} from './bert';
export {
  architectureName,
  CONFIG_SIZE_LIMITS,
  ENCODER_FAMILIES,
  type EncoderFamily,
  type EncoderModelConfig,
  type EncoderTask,
  type EsmSettings,
  type HuggingFaceConfig,
  type ModelConfig,
  parameterCount,
  parseConfig,
  SUPPORTED_ARCHITECTURES,
} from './config';
export {
  DECODER_FAMILIES,
  type DecoderFamily,
  type DecoderHuggingFaceConfig,
  type DecoderModelConfig,
  DECODER_SIZE_LIMITS,
} from './decoder-config';
export {
  type CausalLMInputs,
  type CausalLMOutput,
  CausalLM,
  type DecoderPass,
  type GenerationDefaults,
  KeyValueCache,
} from './decoder';
export { type GenerateInputs, type GenerateOptions, type GenerateOutput, type TokenEvent } from './generation';
export { GPT2Attention, GPT2Block, GPT2LMHeadModel, GPT2MLP, GPT2Model } from './gpt2';
export { LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaMLP, LlamaModel, Qwen2ForCausalLM } from './llama';
export {
  DistilBertAttention,
  DistilBertEmbeddings,
  DistilBertEncoder,
  DistilBertFeedForward,
  DistilBertForSequenceClassification,
  DistilBertForTokenClassification,
  DistilBertLayer,
  DistilBertModel,
  DistilBertTransformer,
} from './distilbert';
export { type ClassifierInputs, type ClassifierOutput, type EncoderBody, EncoderTaskModel } from './encoder';
export {
  EsmAttention,
  EsmBody,
  EsmContactHead,
  EsmEmbeddings,
  EsmEncoder,
  EsmForSequenceClassification,
  EsmForTokenClassification,
  EsmIntermediate,
  EsmLayer,
  EsmModel,
  EsmResidualOutput,
  EsmSelfAttention,
} from './esm';
/** The models' common base under its earlier name. */
export { EncoderTaskModel as SequenceClassifier } from './encoder';
export { DECODER_CLASSES, type EncoderModelClass, MODEL_CLASSES, type PretrainedModel } from './registry';
export type { IdBatch, IdMatrix } from './inputs';

/**
 * The class a config asks for: its `architectures` entry, else its `model_type`. Throws a RangeError, before
 * allocating anything, when the parameters alone would need more memory than the machine has.
 */
export function fromConfig(config: EncoderModelConfig, options?: FromConfigOptions): EncoderTaskModel;
export function fromConfig(
  config: DecoderModelConfig | DecoderHuggingFaceConfig,
  options?: FromConfigOptions,
): CausalLM;
export function fromConfig(config: HuggingFaceConfig, options?: FromConfigOptions): EncoderTaskModel;
export function fromConfig(
  config: HuggingFaceConfig | DecoderHuggingFaceConfig | ModelConfig,
  options?: FromConfigOptions,
): PretrainedModel;
export function fromConfig(
  config: HuggingFaceConfig | DecoderHuggingFaceConfig | ModelConfig,
  options: FromConfigOptions = {},
): PretrainedModel {
  const parsed = 'raw' in config && 'modelType' in config ? (config as ModelConfig) : parseConfig(config);
  const bytes = 4 * parameterCount(parsed);
  if (bytes > totalmem()) {
    throw new RangeError(
      `config.json: the model has ${parameterCount(parsed).toLocaleString('en-US')} parameters, which need ` +
        `${gib(bytes)} of float32 memory; this machine has ${gib(totalmem())}`,
    );
  }
  const dtype = checkDtype(options.dtype, 'models.fromConfig');
  const model = buildModel(parsed, options);
  if (dtype === 'bfloat16') {
    try {
      model.to('bfloat16');
    } catch (error) {
      model.dispose();
      throw error;
    }
  }
  return model;
}

/** Options of `models.fromConfig`. */
export interface FromConfigOptions {
  /** Seed of the fresh parameters. */
  seed?: number;
  /**
   * 'bfloat16' keeps the base model's weight matrices in bfloat16, frozen, as PEFT users load a base with
   * `torch_dtype=torch.bfloat16`: half their memory, and products on AVX512-BF16 CPUs (and GPUs) at up to twice the
   * rate. Biases, norms, a task model's head and everything adapters add stay float32 (see `Module.to`).
   */
  dtype?: DType;
}

function checkDtype(dtype: unknown, where: string): DType {
  if (dtype === undefined) return 'float32';
  if (dtype !== 'float32' && dtype !== 'bfloat16') {
    throw new TypeError(`${where}: options.dtype must be 'float32' or 'bfloat16', got ${JSON.stringify(dtype)}`);
  }
  return dtype;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** How a checkpoint's tensor names matched the model's parameters, as transformers' loading info. */
export interface LoadReport {
  /** Parameters of the model the checkpoint lacked: they keep their fresh initialisation. */
  missingKeys: string[];
  /** Checkpoint tensors the model has no parameter for (an MLM head, buffers): ignored. */
  unexpectedKeys: string[];
}

/** Checkpoint names of older or headless saves, mapped to this model's: gamma/beta, and a missing base prefix. */
function canonicalName(name: string, model: PretrainedModel, known: Set<string>): string {
  let renamed = name.replace(/\.gamma$/, '.weight').replace(/\.beta$/, '.bias');
  if (!known.has(renamed) && known.has(`${model.basePrefix}.${renamed}`)) renamed = `${model.basePrefix}.${renamed}`;
  return renamed;
}

/**
 * Copies checkpoint tensors into the model by name (taking them over, no copy), reporting missing and unexpected
 * keys as transformers does. A tensor whose shape disagrees with the model's throws a RangeError naming it. Weights a
 * family stores transposed in checkpoints (GPT-2's Conv1D) are transposed into the model's [out, in] layout.
 */
export function loadStateDict(model: PretrainedModel, tensors: Map<string, Tensor>): LoadReport {
  const transposed = (name: string) => model instanceof CausalLM && model.transposedInCheckpoint(name);
  const parameters = new Map(model.namedParameters());
  const known = new Set(parameters.keys());
  const loaded = new Set<string>();
  const unexpectedKeys: string[] = [];
  for (const [name, tensor] of tensors) {
    const target = canonicalName(name, model, known);
    const current = parameters.get(target);
    if (current === undefined) {
      unexpectedKeys.push(name);
      continue;
    }
    const expected = transposed(target) ? [...current.shape].reverse() : current.shape;
    if (expected.join() !== tensor.shape.join()) {
      throw new RangeError(
        `checkpoint tensor ${name} has shape [${tensor.shape.join(', ')}] but the config makes ${target} ` +
          `[${expected.join(', ')}]${transposed(target) ? ' (stored [in, out])' : ''}`,
      );
    }
    loaded.add(target);
  }
  // Only after every shape checked out: a mismatch leaves the model untouched.
  for (const [name, tensor] of tensors) {
    const target = canonicalName(name, model, known);
    if (!loaded.has(target)) {
      tensor.dispose();
      continue;
    }
    let value = tensor;
    if (transposed(target)) {
      value = transposedCopy(tensor);
      tensor.dispose();
    }
    value.requiresGrad = parameters.get(target)!.requiresGrad;
    replaceParameter(model, target, value).dispose();
  }
  return { missingKeys: [...known].filter((name) => !loaded.has(name)), unexpectedKeys };
}

/** A matrix's transpose in its own dtype: transpose2d runs in float32, so bfloat16 goes there and back, exactly. */
function transposedCopy(tensor: Tensor): Tensor {
  if (tensor.dtype === 'float32') return noGrad(() => transpose2d(tensor));
  const wide = tensor.to('float32');
  let flipped: Tensor;
  try {
    flipped = noGrad(() => transpose2d(wide));
  } finally {
    wide.dispose();
  }
  try {
    return flipped.to(tensor.dtype);
  } finally {
    flipped.dispose();
  }
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/** Options of `models.load`. */
export interface LoadOptions {
  /** Seed of the parameters the checkpoint lacks (a fresh classifier head). */
  seed?: number;
  /**
   * Where transformers-style warnings about missing and unexpected keys go (`console.warn`, a logger's warn): by
   * default nowhere, as a library should be quiet; `model.loadReport` holds the same keys either way.
   */
  warn?: (message: string) => void;
  /** @deprecated Loads are quiet unless `warn` is given; kept so existing calls still type-check. */
  quiet?: boolean;
  /**
   * 'bfloat16' keeps the base weight matrices in bfloat16 (see `fromConfig`); BF16 checkpoint tensors are taken as
   * they are, without passing through float32.
   */
  dtype?: DType;
}

/**
 * Reads `config.json` and `model.safetensors` from a Hugging Face checkpoint folder (and, for a causal language
 * model, `generation_config.json` when there is one). Narrow the result with `instanceof models.CausalLM` or
 * `models.EncoderTaskModel`.
 */
export function load(
  dir: string,
  options: LoadOptions = {},
): PretrainedModel & {
  /** Which checkpoint tensors were missing or unused (integer buffers such as position_ids count as unused). */
  loadReport: LoadReport;
} {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('models.load: dir must be a non-empty string');
  const configFile = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(configFile, 'utf8');
  } catch (error) {
    throw new Error(`models.load: cannot read ${configFile}: ${(error as Error).message}`, { cause: error });
  }
  let model: PretrainedModel;
  try {
    model = fromConfig(parseConfig(JSON.parse(text) as unknown), { seed: options.seed, dtype: options.dtype });
  } catch (error) {
    throw locatedConfigError(error, configFile);
  }
  if (model instanceof CausalLM) {
    try {
      readGenerationConfig(model, dir);
    } catch (error) {
      model.dispose();
      throw error;
    }
  }
  // Integer buffers (transformers saves embeddings.position_ids as I64) are not parameters: skip and report them.
  const skipped: string[] = [];
  let tensors: Map<string, Tensor> | undefined;
  let report: LoadReport;
  const weightsFile = join(dir, 'model.safetensors');
  const parameters = new Map(model.namedParameters());
  const known = new Set(parameters.keys());
  try {
    tensors = readSafetensors(weightsFile, {
      only: (name, info) => {
        const floating = FLOAT_DTYPES.has(info.dtype);
        if (!floating) skipped.push(name);
        return floating;
      },
      // Read in the dtype of the parameter it replaces.
      bfloat16: (name) => parameters.get(canonicalName(name, model, known))?.dtype === 'bfloat16',
      requireFinite: true,
    }).tensors;
    report = loadStateDict(model, tensors);
    report.unexpectedKeys.push(...skipped);
  } catch (error) {
    // Nothing built here outlives a failed load: the model is freed now, not whenever the collector runs.
    for (const tensor of tensors?.values() ?? []) tensor.dispose();
    model.dispose();
    if (error instanceof RangeError && !error.message.includes(weightsFile)) {
      throw new RangeError(`models.load: ${weightsFile}: ${error.message}`, { cause: error });
    }
    throw error;
  }
  if (options.warn !== undefined && !options.quiet) warnAbout(report, model, dir, options.warn);
  return Object.assign(model, { loadReport: report });
}

/** A config error with the file's full path in place of "config.json", keeping its class. */
function locatedConfigError(error: unknown, configFile: string): unknown {
  if (error instanceof SyntaxError) {
    return new TypeError(`models.load: ${configFile} is not valid JSON (${error.message})`, { cause: error });
  }
  if (!(error instanceof Error)) return error;
  const message = `models.load: ${configFile}: ${error.message.replace(/^config\.json: /, '')}`;
  const Class = error instanceof RangeError ? RangeError : error instanceof TypeError ? TypeError : Error;
  return new Class(message, { cause: error });
}

/**
 * generation_config.json's end, pad and start tokens (and max_new_tokens), which transformers' generate prefers to
 * config.json's. Sampling settings in it are not applied: generate() samples only when asked.
 */
function readGenerationConfig(model: CausalLM, dir: string): void {
  const file = join(dir, 'generation_config.json');
  if (!existsSync(file)) return;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    const reason = (error as Error).message;
    throw new TypeError(`models.load: ${file} is not valid JSON (${reason})`, { cause: error });
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new TypeError(`models.load: ${file}: expected a JSON object`);
  }
  const config = raw as Record<string, unknown>;
  const vocab = model.config.vocabSize;
  try {
    const read = (key: string) => tokenIdList(config, key, vocab);
    const defaults: GenerationDefaults = { ...model.generationConfig };
    if (valueOf(config, 'eos_token_id') !== undefined) defaults.eosTokenIds = read('eos_token_id');
    if (valueOf(config, 'pad_token_id') !== undefined) defaults.padTokenId = read('pad_token_id')[0];
    if (valueOf(config, 'bos_token_id') !== undefined) defaults.bosTokenId = read('bos_token_id')[0];
    if (valueOf(config, 'max_new_tokens') !== undefined) {
      defaults.maxNewTokens = boundedSize(config, 'max_new_tokens', 2 ** 31 - 1);
    }
    model.generationConfig = defaults;
  } catch (error) {
    const message = `models.load: ${file}: ${(error as Error).message.replace(/^config\.json: /, '')}`;
    throw error instanceof RangeError
      ? new RangeError(message, { cause: error })
      : new TypeError(message, { cause: error });
  }
}

function warnAbout(report: LoadReport, model: PretrainedModel, dir: string, warn: (message: string) => void): void {
  const name = model.constructor.name;
  if (report.unexpectedKeys.length > 0) {
    warn(
      `Some weights of the model checkpoint at ${dir} were not used when initializing ${name}: ` +
        `[${report.unexpectedKeys.join(', ')}]`,
    );
  }
  if (report.missingKeys.length > 0) {
    warn(
      `Some weights of ${name} were not initialized from the model checkpoint at ${dir} and are newly ` +
        `initialized: [${report.missingKeys.join(', ')}]. You should probably TRAIN this model on a down-stream task.`,
    );
  }
}

/**
 * Writes `config.json` and `model.safetensors` (Hugging Face names and layouts; adapters must be merged first), and
 * for a causal language model `generation_config.json`.
 */
export function save(model: PretrainedModel, dir: string): void {
  const unmerged = adaptedLayers(model).filter(({ adapter }) => !adapter.merged);
  if (unmerged.length > 0) {
    throw new TypeError(
      `models.save: ${unmerged[0].path} carries an unmerged adapter; merge it first (adapters.merge)`,
    );
  }
  mkdirSync(dir, { recursive: true });
  const architecture =
    model.config.task === 'causal-lm'
      ? model.config.architecture
      : architectureName(model.config.modelType, model.config.task);
  const config: Record<string, unknown> = {
    ...model.config.raw,
    architectures: [architecture],
    model_type: model.config.modelType,
  };
  // transformers' name for the dtype the weights are stored in: bfloat16 when the base's matrices are.
  const stored = model.parameters().some((tensor) => tensor.dtype === 'bfloat16') ? 'bfloat16' : 'float32';
  if ('torch_dtype' in config || stored === 'bfloat16') config.torch_dtype = stored;
  writeFileAtomic(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  if (model instanceof CausalLM) {
    const { eosTokenIds, padTokenId, bosTokenId, maxNewTokens } = model.generationConfig;
    const generation = {
      ...(bosTokenId === undefined ? {} : { bos_token_id: bosTokenId }),
      ...(eosTokenIds.length === 0 ? {} : { eos_token_id: eosTokenIds.length === 1 ? eosTokenIds[0] : eosTokenIds }),
      ...(padTokenId === undefined ? {} : { pad_token_id: padTokenId }),
      ...(maxNewTokens === undefined ? {} : { max_new_tokens: maxNewTokens }),
    };
    writeFileAtomic(join(dir, 'generation_config.json'), JSON.stringify(generation, null, 2) + '\n');
  }
  // A merged model saves only its Hugging Face parameters: the attached adapters stay out of the checkpoint.
  const parameters = model.namedParameters().filter(([name]) => !name.includes('.adapter.'));
  const transposed: Tensor[] = [];
  try {
    const layout = parameters.map(([name, tensor]): [string, Tensor] => {
      if (!(model instanceof CausalLM && model.transposedInCheckpoint(name))) return [name, tensor];
      const stored = transposedCopy(tensor);
      transposed.push(stored);
      return [name, stored];
    });
    writeSafetensors(join(dir, 'model.safetensors'), new Map(layout), { format: 'pt' });
  } finally {
    for (const tensor of transposed) tensor.dispose();
  }
}
