// Models by name: build one from a Hugging Face config, load a checkpoint folder, save one back.
import { mkdirSync, readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';

import { adaptedLayers } from '../adapters/layers';
import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { writeFileAtomic } from '../io/atomic';
import { replaceParameter } from '../nn/module';
import { type Tensor } from '../tensor';
import {
  architectureName,
  type EncoderModelConfig,
  type HuggingFaceConfig,
  parameterCount,
  parseConfig,
} from './config';
import { type EncoderTaskModel } from './encoder';
import { buildModel } from './registry';

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
  parameterCount,
  parseConfig,
  SUPPORTED_ARCHITECTURES,
} from './config';
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
export { MODEL_CLASSES } from './registry';
export type { IdBatch, IdMatrix } from './inputs';

/**
 * The class a config asks for: its `architectures` entry, else its `model_type`. Throws a RangeError, before
 * allocating anything, when the parameters alone would need more memory than the machine has.
 */
export function fromConfig(config: HuggingFaceConfig | EncoderModelConfig, options: { seed?: number } = {}) {
  const parsed = 'raw' in config && 'modelType' in config ? (config as EncoderModelConfig) : parseConfig(config);
  const bytes = 4 * parameterCount(parsed);
  if (bytes > totalmem()) {
    throw new RangeError(
      `config.json: the model has ${parameterCount(parsed).toLocaleString('en-US')} parameters, which need ` +
        `${gib(bytes)} of float32 memory; this machine has ${gib(totalmem())}`,
    );
  }
  return buildModel(parsed, options);
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
function canonicalName(name: string, model: EncoderTaskModel, known: Set<string>): string {
  let renamed = name.replace(/\.gamma$/, '.weight').replace(/\.beta$/, '.bias');
  if (!known.has(renamed) && known.has(`${model.basePrefix}.${renamed}`)) renamed = `${model.basePrefix}.${renamed}`;
  return renamed;
}

/**
 * Copies checkpoint tensors into the model by name (taking them over, no copy), reporting missing and unexpected
 * keys as transformers does. A tensor whose shape disagrees with the model's throws a RangeError naming it.
 */
export function loadStateDict(model: EncoderTaskModel, tensors: Map<string, Tensor>): LoadReport {
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
    if (current.shape.join() !== tensor.shape.join()) {
      throw new RangeError(
        `checkpoint tensor ${name} has shape [${tensor.shape.join(', ')}] but the config makes ${target} ` +
          `[${current.shape.join(', ')}]`,
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
    tensor.requiresGrad = parameters.get(target)!.requiresGrad;
    replaceParameter(model, target, tensor).dispose();
  }
  return { missingKeys: [...known].filter((name) => !loaded.has(name)), unexpectedKeys };
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
}

/** Reads `config.json` and `model.safetensors` from a Hugging Face checkpoint folder. */
export function load(
  dir: string,
  options: LoadOptions = {},
): EncoderTaskModel & {
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
  let model: EncoderTaskModel;
  try {
    model = fromConfig(parseConfig(JSON.parse(text)), { seed: options.seed });
  } catch (error) {
    throw locatedConfigError(error, configFile);
  }
  // Integer buffers (transformers saves embeddings.position_ids as I64) are not parameters: skip and report them.
  const skipped: string[] = [];
  let tensors: Map<string, Tensor> | undefined;
  let report: LoadReport;
  const weightsFile = join(dir, 'model.safetensors');
  try {
    tensors = readSafetensors(weightsFile, {
      only: (name, info) => {
        const floating = FLOAT_DTYPES.has(info.dtype);
        if (!floating) skipped.push(name);
        return floating;
      },
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

function warnAbout(report: LoadReport, model: EncoderTaskModel, dir: string, warn: (message: string) => void): void {
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

/** Writes `config.json` and `model.safetensors` (Hugging Face names; adapters must be merged first). */
export function save(model: EncoderTaskModel, dir: string): void {
  const unmerged = adaptedLayers(model).filter(({ adapter }) => !adapter.merged);
  if (unmerged.length > 0) {
    throw new TypeError(
      `models.save: ${unmerged[0].path} carries an unmerged adapter; merge it first (adapters.merge)`,
    );
  }
  mkdirSync(dir, { recursive: true });
  const { modelType, task } = model.config;
  const config = { ...model.config.raw, architectures: [architectureName(modelType, task)], model_type: modelType };
  writeFileAtomic(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  // A merged model saves only its Hugging Face parameters: the attached adapters stay out of the checkpoint.
  const parameters = model.namedParameters().filter(([name]) => !name.includes('.adapter.'));
  writeSafetensors(join(dir, 'model.safetensors'), new Map(parameters), { format: 'pt' });
}
