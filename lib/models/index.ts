// Models by name: build one from a Hugging Face config, load a checkpoint folder, save one back.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { adaptedLayers } from '../adapters/layers';
import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { writeFileAtomic } from '../io/atomic';
import { replaceParameter } from '../nn/module';
import { type Tensor } from '../tensor';
import { BertForSequenceClassification, RobertaForSequenceClassification, type SequenceClassifier } from './bert';
import { type EncoderModelConfig, type HuggingFaceConfig, parseConfig } from './config';

export { BertForSequenceClassification, RobertaForSequenceClassification, SequenceClassifier } from './bert';
export type { ClassifierInputs, ClassifierOutput } from './bert';
export { type EncoderModelConfig, type HuggingFaceConfig, parseConfig } from './config';
export type { IdMatrix } from './inputs';

/** The class a config asks for: its `architectures` entry, else its `model_type`. */
export function fromConfig(config: HuggingFaceConfig | EncoderModelConfig, options: { seed?: number } = {}) {
  const parsed = 'raw' in config && 'modelType' in config ? (config as EncoderModelConfig) : parseConfig(config);
  const architecture = parsed.raw.architectures?.[0];
  if (
    architecture !== undefined &&
    !/^(Bert|Roberta)(ForSequenceClassification|Model|ForMaskedLM|ForPreTraining)$/.test(architecture)
  ) {
    throw new RangeError(`config.json: architecture '${architecture}' is not supported`);
  }
  return parsed.modelType === 'roberta'
    ? new RobertaForSequenceClassification(parsed, options)
    : new BertForSequenceClassification(parsed, options);
}

export interface LoadReport {
  /** Parameters of the model the checkpoint lacked: they keep their fresh initialisation. */
  missingKeys: string[];
  /** Checkpoint tensors the model has no parameter for (an MLM head, buffers): ignored. */
  unexpectedKeys: string[];
}

/** Checkpoint names of older or headless saves, mapped to this model's: gamma/beta, and a missing base prefix. */
function canonicalName(name: string, model: SequenceClassifier, known: Set<string>): string {
  let renamed = name.replace(/\.gamma$/, '.weight').replace(/\.beta$/, '.bias');
  if (!known.has(renamed) && known.has(`${model.basePrefix}.${renamed}`)) renamed = `${model.basePrefix}.${renamed}`;
  return renamed;
}

/**
 * Copies checkpoint tensors into the model by name (taking them over, no copy), reporting missing and unexpected
 * keys as transformers does. A tensor whose shape disagrees with the model's throws a RangeError naming it.
 */
export function loadStateDict(model: SequenceClassifier, tensors: Map<string, Tensor>): LoadReport {
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

export interface LoadOptions {
  /** Seed of the parameters the checkpoint lacks (a fresh classifier head). */
  seed?: number;
  /** Do not print transformers-style warnings about missing and unexpected keys. */
  quiet?: boolean;
}

/** Reads `config.json` and `model.safetensors` from a Hugging Face checkpoint folder. */
export function load(dir: string, options: LoadOptions = {}): SequenceClassifier & { loadReport: LoadReport } {
  let rawConfig: unknown;
  try {
    rawConfig = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  } catch (error) {
    throw new Error(`models.load: cannot read ${join(dir, 'config.json')}: ${(error as Error).message}`);
  }
  const model = fromConfig(parseConfig(rawConfig), { seed: options.seed });
  // Integer buffers (transformers saves embeddings.position_ids as I64) are not parameters: skip and report them.
  const skipped: string[] = [];
  const { tensors } = readSafetensors(join(dir, 'model.safetensors'), {
    only: (name, info) => {
      const floating = FLOAT_DTYPES.has(info.dtype);
      if (!floating) skipped.push(name);
      return floating;
    },
  });
  let report: LoadReport;
  try {
    report = loadStateDict(model, tensors);
    report.unexpectedKeys.push(...skipped);
  } catch (error) {
    for (const tensor of tensors.values()) tensor.dispose();
    model.dispose();
    throw error;
  }
  if (!options.quiet) warnAbout(report, model, dir);
  return Object.assign(model, { loadReport: report });
}

function warnAbout(report: LoadReport, model: SequenceClassifier, dir: string): void {
  const name = model.constructor.name;
  if (report.unexpectedKeys.length > 0) {
    console.warn(
      `Some weights of the model checkpoint at ${dir} were not used when initializing ${name}: ` +
        `[${report.unexpectedKeys.join(', ')}]`,
    );
  }
  if (report.missingKeys.length > 0) {
    console.warn(
      `Some weights of ${name} were not initialized from the model checkpoint at ${dir} and are newly ` +
        `initialized: [${report.missingKeys.join(', ')}]. You should probably TRAIN this model on a down-stream task.`,
    );
  }
}

/** Writes `config.json` and `model.safetensors` (Hugging Face names; adapters must be merged first). */
export function save(model: SequenceClassifier, dir: string): void {
  const unmerged = adaptedLayers(model).filter(({ adapter }) => !adapter.merged);
  if (unmerged.length > 0) {
    throw new TypeError(
      `models.save: ${unmerged[0].path} carries an unmerged adapter; merge it first (adapters.merge)`,
    );
  }
  mkdirSync(dir, { recursive: true });
  const architecture =
    model instanceof RobertaForSequenceClassification
      ? 'RobertaForSequenceClassification'
      : 'BertForSequenceClassification';
  const config = { ...model.config.raw, architectures: [architecture], model_type: model.config.modelType };
  writeFileAtomic(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  // A merged model saves only its Hugging Face parameters: the attached adapters stay out of the checkpoint.
  const parameters = model.namedParameters().filter(([name]) => !name.includes('.adapter.'));
  writeSafetensors(join(dir, 'model.safetensors'), new Map(parameters), { format: 'pt' });
}
