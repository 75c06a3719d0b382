// Adapter folders in PEFT's layout (adapter_config.json + adapter_model.safetensors), so adapters trained here load
// in Python's PEFT and adapters trained in PEFT load here. A BiDoRA adapter is a DoRA adapter on disk; bidora's own
// settings ride along under the config's "bidora" key.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { writeFileAtomic } from '../io/atomic';
import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { replaceParameter, type Module } from '../nn/module';
import { type Tensor } from '../tensor';
import { type AdapterConfig, type AdapterMethod, apply, appliedConfig } from './apply';
import { adaptedLayers } from './layers';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
const PREFIX = 'base_model.model.';

/** The keys of PEFT's LoraConfig that bidora writes and reads (snake_case, as in the file). */
export interface PeftAdapterConfig {
  peft_type: 'LORA';
  task_type: string | null;
  base_model_name_or_path: string | null;
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[] | string;
  modules_to_save: string[] | null;
  use_dora: boolean;
  use_rslora: boolean;
  fan_in_fan_out: boolean;
  bias: 'none';
  init_lora_weights: boolean | 'gaussian';
  inference_mode: boolean;
  bidora?: { method: AdapterMethod; detachNorm: boolean };
  [key: string]: unknown;
}

export interface SaveOptions {
  /** Recorded as base_model_name_or_path (the base checkpoint folder or hub id). */
  baseModelNameOrPath?: string;
  /** PEFT's task_type (default SEQ_CLS). */
  taskType?: string;
}

function toPeftConfig(config: AdapterConfig, options: SaveOptions): PeftAdapterConfig {
  const targets = config.targetModules;
  const alpha = config.alpha ?? config.r;
  return {
    peft_type: 'LORA',
    task_type: options.taskType ?? 'SEQ_CLS',
    base_model_name_or_path: options.baseModelNameOrPath ?? null,
    r: config.r,
    lora_alpha: alpha,
    lora_dropout: config.dropout ?? 0,
    // PEFT reads a list as names to match by suffix and a string as a regular expression, as apply() does.
    target_modules: targets instanceof RegExp ? targets.source : typeof targets === 'string' ? targets : [...targets],
    modules_to_save: config.modulesToSave && config.modulesToSave.length > 0 ? [...config.modulesToSave] : null,
    use_dora: config.method !== 'lora',
    use_rslora: config.useRslora ?? false,
    fan_in_fan_out: false,
    bias: 'none',
    init_lora_weights: config.init === 'gaussian' ? 'gaussian' : true,
    inference_mode: true,
    bidora: { method: config.method, detachNorm: config.detachNorm ?? config.method !== 'bidora' },
  };
}

function fromPeftConfig(raw: unknown, file: string): AdapterConfig {
  const config = raw as Partial<PeftAdapterConfig>;
  if (config === null || typeof config !== 'object') throw new TypeError(`${file}: expected a JSON object`);
  if (config.peft_type !== 'LORA')
    throw new RangeError(`${file}: peft_type must be "LORA", got ${JSON.stringify(config.peft_type)}`);
  if (config.fan_in_fan_out) throw new RangeError(`${file}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported`);
  if (config.bias !== undefined && config.bias !== 'none') {
    throw new RangeError(`${file}: bias "${String(config.bias)}" is not supported (only "none")`);
  }
  const method: AdapterMethod = config.bidora?.method ?? (config.use_dora ? 'dora' : 'lora');
  return {
    method,
    r: config.r as number,
    alpha: config.lora_alpha,
    dropout: config.lora_dropout ?? 0,
    targetModules: config.target_modules as string[] | string,
    modulesToSave: config.modules_to_save ?? [],
    useRslora: config.use_rslora ?? false,
    detachNorm: config.bidora?.detachNorm,
    init: config.init_lora_weights === 'gaussian' ? 'gaussian' : 'kaiming',
  };
}

/** Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` with PEFT's key names. */
export function save(model: Module, dir: string, options: SaveOptions = {}): void {
  const config = appliedConfig(model);
  const layers = adaptedLayers(model);
  if (config === undefined || layers.length === 0) throw new TypeError('adapters.save: the model carries no adapters');
  const tensors = new Map<string, Tensor>();
  for (const { path, adapter } of layers) {
    if (adapter.merged) throw new TypeError(`adapters.save: ${path} is merged; unmerge it first`);
    tensors.set(`${PREFIX}${path}.lora_A.weight`, adapter.loraA);
    tensors.set(`${PREFIX}${path}.lora_B.weight`, adapter.loraB);
    if (adapter.magnitude) tensors.set(`${PREFIX}${path}.lora_magnitude_vector`, adapter.magnitude);
  }
  for (const name of config.modulesToSave ?? []) {
    const module = model.namedModules().find(([path]) => path === name)?.[1];
    for (const [parameter, tensor] of module?.namedParameters(name) ?? []) tensors.set(`${PREFIX}${parameter}`, tensor);
  }
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), tensors, { format: 'pt' });
  writeFileAtomic(join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(toPeftConfig(config, options), null, 2) + '\n');
}

/**
 * Loads a PEFT adapter folder into `model`: applies the adapters its config describes when the model has none, then
 * copies every tensor in by name. Missing tensors and shape mismatches throw before the model changes.
 */
export function load(model: Module, dir: string): AdapterConfig {
  const file = join(dir, ADAPTER_CONFIG_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`adapters.load: cannot read ${file}: ${(error as Error).message}`);
  }
  const config = fromPeftConfig(raw, file);
  const { tensors } = readSafetensors(join(dir, ADAPTER_WEIGHTS_FILE));
  try {
    if (adaptedLayers(model).length === 0) apply(model, config);
    assign(model, tensors, config);
  } catch (error) {
    for (const tensor of tensors.values()) tensor.dispose();
    throw error;
  }
  return config;
}

/** Where each file tensor goes, checked in full before anything is replaced. */
function assign(model: Module, tensors: Map<string, Tensor>, config: AdapterConfig): void {
  const targets = new Map<string, { current: Tensor; place: (tensor: Tensor) => void }>();
  for (const { path, adapter } of adaptedLayers(model)) {
    targets.set(`${PREFIX}${path}.lora_A.weight`, {
      current: adapter.loraA,
      place: (tensor) => (adapter.loraA = tensor),
    });
    targets.set(`${PREFIX}${path}.lora_B.weight`, {
      current: adapter.loraB,
      place: (tensor) => (adapter.loraB = tensor),
    });
    const magnitude = adapter.magnitude;
    if (magnitude) {
      targets.set(`${PREFIX}${path}.lora_magnitude_vector`, {
        current: magnitude,
        place: (tensor) => (adapter.magnitude = tensor),
      });
    }
  }
  const parameters = new Map(model.namedParameters());
  for (const name of config.modulesToSave ?? []) {
    for (const [parameter] of [...parameters].filter(([key]) => key === name || key.startsWith(`${name}.`))) {
      targets.set(`${PREFIX}${parameter}`, {
        current: parameters.get(parameter)!,
        place: (tensor) => replaceParameter(model, parameter, tensor),
      });
    }
  }
  const missing = [...targets.keys()].filter((key) => !tensors.has(key));
  if (missing.length > 0) throw new RangeError(`adapters.load: the adapter file lacks ${missing.join(', ')}`);
  for (const [key, tensor] of tensors) {
    const target = targets.get(key);
    if (target === undefined) throw new RangeError(`adapters.load: the model has no place for ${key}`);
    if (target.current.shape.join() !== tensor.shape.join()) {
      throw new RangeError(
        `adapters.load: ${key} has shape [${tensor.shape.join(', ')}] but the model expects [${target.current.shape.join(', ')}]`,
      );
    }
  }
  for (const [key, tensor] of tensors) {
    const target = targets.get(key)!;
    // Onto the model's device: the file is read onto the CPU.
    const placed = tensor.to(target.current.device);
    if (placed !== tensor) tensor.dispose();
    placed.requiresGrad = target.current.requiresGrad;
    target.current.dispose();
    target.place(placed);
  }
}

/** PEFT's print_trainable_parameters line: "trainable params: … || all params: … || trainable%: …". */
export function trainableParameters(model: Module): { trainable: number; all: number; line: string } {
  const all = model.parameterCount();
  const trainable = model.parameterCount({ trainableOnly: true });
  const line =
    `trainable params: ${trainable.toLocaleString('en-US')} || all params: ${all.toLocaleString('en-US')} || ` +
    `trainable%: ${((100 * trainable) / all).toFixed(4)}`;
  return { trainable, all, line };
}
