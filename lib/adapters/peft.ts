// Adapter folders in PEFT's layout (adapter_config.json + adapter_model.safetensors), so adapters trained here load
// in Python's PEFT and adapters trained in PEFT load here. A BiDoRA adapter is a DoRA adapter on disk; bidora's own
// settings ride along under the config's "bidora" key.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { writeFileAtomic } from '../io/atomic';
import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { replaceParameter, type Module } from '../nn/module';
import { type Tensor } from '../tensor';
import { type Device } from '../binding';
import { ADAPTER_METHODS, checkAdapterMethod } from './methods';
import {
  type AdapterConfig,
  type AdapterMethod,
  type AdapterPlan,
  appliedConfig,
  attachAdapters,
  compilePattern,
  planAdapters,
  setAppliedConfig,
} from './apply';
import { adaptedLayers } from './layers';

/** The config file of an adapter folder, as PEFT names it. */
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
/** The weights file of an adapter folder, as PEFT names it: A, B and magnitudes under PEFT's tensor names. */
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
const PREFIX = 'base_model.model.';

/** The keys of PEFT's LoraConfig that bidora writes and reads (snake_case, as in the file). */
export interface PeftAdapterConfig {
  /** Always 'LORA': DoRA and BiDoRA are LoRA configs with `use_dora`. */
  peft_type: 'LORA';
  /** SEQ_CLS, TOKEN_CLS, CAUSAL_LM, or null. */
  task_type: string | null;
  /** The base checkpoint folder or hub id, when saved with one. */
  base_model_name_or_path: string | null;
  /** The default rank. */
  r: number;
  /** The default alpha: the scale is alpha / r (alpha / sqrt(r) with `use_rslora`). */
  lora_alpha: number;
  /** Dropout on the low-rank branch's input, in [0, 1). */
  lora_dropout: number;
  /** Module names matched by suffix (a list), or a regular expression over the whole name (a string). */
  target_modules: string[] | string;
  /** Modules trained in full and saved with the adapter (the head), or null. */
  modules_to_save: string[] | null;
  /** True for DoRA and BiDoRA: the folder holds `lora_magnitude_vector`s. */
  use_dora: boolean;
  /** rsLoRA's scale alpha / sqrt(r). */
  use_rslora: boolean;
  /** True when the adapted layers store weights [in, out] (GPT-2's Conv1D). */
  fan_in_fan_out: boolean;
  /** Bias training: 'none' is the only kind bidora does. */
  bias: 'none';
  /** A's initialisation: true (Kaiming-uniform) or 'gaussian'; a trained adapter's values replace it on load. */
  init_lora_weights: boolean | 'gaussian';
  /** Written true: the saved adapter is for inference until loaded for training. */
  inference_mode: boolean;
  /** Rank per layer, by pattern (see {@link AdapterConfig.rankPattern}). */
  rank_pattern: Record<string, number>;
  /** Alpha per layer, by pattern. */
  alpha_pattern: Record<string, number>;
  /** Only layers with these indices get adapters, or null for all. */
  layers_to_transform: number | number[] | null;
  /** The module list whose index `layers_to_transform` reads, or null. */
  layers_pattern: string | string[] | null;
  /** bidora's own settings, which PEFT ignores: the method (PEFT knows only `use_dora`) and `detachNorm`. */
  bidora?: {
    /** 'lora', 'dora' or 'bidora'. */
    method: AdapterMethod;
    /** Whether the row norm was a constant in backward. */
    detachNorm: boolean;
  };
  /** Other PEFT keys, read and checked on load (those that change the computation must hold their defaults). */
  [key: string]: unknown;
}

/** Options of {@link save}. */
export interface SaveOptions {
  /** Recorded as base_model_name_or_path (the base checkpoint folder or hub id). */
  baseModelNameOrPath?: string;
  /** PEFT's task_type (default TOKEN_CLS for a token classifier, CAUSAL_LM for a language model, else SEQ_CLS). */
  taskType?: string;
}

function toPeftConfig(
  config: AdapterConfig,
  options: SaveOptions,
  defaults: { taskType: string; fanInFanOut: boolean },
): PeftAdapterConfig {
  const targets = config.targetModules;
  const alpha = config.alpha ?? config.r;
  const { layersToTransform, layersPattern } = config;
  return {
    peft_type: 'LORA',
    task_type: options.taskType ?? defaults.taskType,
    base_model_name_or_path: options.baseModelNameOrPath ?? null,
    r: config.r,
    lora_alpha: alpha,
    lora_dropout: config.dropout ?? 0,
    // PEFT reads a list as names to match by suffix and a string as a regular expression, as apply() does.
    target_modules: targets instanceof RegExp ? targets.source : typeof targets === 'string' ? targets : [...targets],
    modules_to_save: config.modulesToSave && config.modulesToSave.length > 0 ? [...config.modulesToSave] : null,
    use_dora: ADAPTER_METHODS[config.method].peftUseDora,
    use_rslora: config.useRslora ?? false,
    fan_in_fan_out: defaults.fanInFanOut,
    bias: 'none',
    init_lora_weights: config.init === 'gaussian' ? 'gaussian' : true,
    inference_mode: true,
    rank_pattern: { ...config.rankPattern },
    alpha_pattern: { ...config.alphaPattern },
    layers_to_transform:
      layersToTransform === undefined
        ? null
        : typeof layersToTransform === 'number'
          ? layersToTransform
          : [...layersToTransform],
    layers_pattern:
      layersPattern === undefined ? null : typeof layersPattern === 'string' ? layersPattern : [...layersPattern],
    bidora: { method: config.method, detachNorm: config.detachNorm ?? ADAPTER_METHODS[config.method].detachNorm },
  };
}

/** PEFT's init_lora_weights values that only choose A's and B's first values, so a trained adapter loads as is. */
const INIT_ONLY_WEIGHTS: readonly unknown[] = [true, false, 'gaussian', 'eva', 'orthogonal'];

/**
 * Keys of newer PEFT versions that change what the adapter computes when set: bidora does not implement them, so a
 * folder that uses one is refused instead of loading into something else. The value is each key's "unused" value.
 */
const UNSUPPORTED_UNLESS_DEFAULT: Record<string, (value: unknown) => boolean> = {
  exclude_modules: (value) => value == null || (Array.isArray(value) && value.length === 0),
  lora_bias: (value) => value === undefined || value === false,
  layer_replication: (value) => value == null,
  trainable_token_indices: (value) => value == null,
  target_parameters: (value) => value == null || (Array.isArray(value) && value.length === 0),
  use_qalora: (value) => value === undefined || value === false,
  alora_invocation_tokens: (value) => value == null,
  arrow_config: (value) => value == null,
};

/** Largest r accepted from a file: far above any real adapter, low enough that a corrupt value cannot exhaust memory. */
const MAX_RANK = 1 << 16;

/** Checks of one config key's value, each throwing a TypeError or RangeError that names the key and the file. */
class ConfigReader {
  constructor(
    private readonly config: Record<string, unknown>,
    private readonly where: string,
  ) {}

  private describe(value: unknown): string {
    const json = JSON.stringify(value) ?? String(value);
    return json.length > 80 ? `${json.slice(0, 80)}...` : json;
  }

  fail(key: string, expected: string, error: 'type' | 'range' = 'type'): never {
    const message = `${this.where}: ${key} must be ${expected}, got ${this.describe(this.config[key])}`;
    throw error === 'type' ? new TypeError(message) : new RangeError(message);
  }

  /** The value, or undefined for a key that is absent or null (PEFT writes null for "not set"). */
  value(key: string): unknown {
    const value = this.config[key];
    return value === null ? undefined : value;
  }

  string(key: string): string | undefined {
    const value = this.value(key);
    if (value !== undefined && typeof value !== 'string') this.fail(key, 'a string or null');
    return value as string | undefined;
  }

  boolean(key: string, fallback: boolean): boolean {
    const value = this.value(key) ?? fallback;
    if (typeof value !== 'boolean') this.fail(key, 'true or false');
    return value;
  }

  number(key: string, fallback: number, valid: (value: number) => boolean, expected: string): number {
    const value = this.value(key) ?? fallback;
    if (typeof value !== 'number') this.fail(key, expected);
    if (!valid(value)) this.fail(key, expected, 'range');
    return value;
  }

  strings(key: string, options: { nonEmpty: boolean }): string[] | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    const valid =
      Array.isArray(value) &&
      value.every((item) => typeof item === 'string') &&
      (!options.nonEmpty || value.length > 0);
    if (!valid) this.fail(key, options.nonEmpty ? 'a non-empty list of names' : 'a list of names or null');
    return value as string[];
  }

  patterns(key: string, valid: (value: unknown) => boolean, expected: string): Record<string, number> | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'object' || Array.isArray(value)) this.fail(key, `an object mapping patterns to ${expected}`);
    for (const [pattern, item] of Object.entries(value as Record<string, unknown>)) {
      if (!valid(item)) {
        throw new RangeError(
          `${this.where}: ${key}[${JSON.stringify(pattern)}] must be ${expected}, got ${this.describe(item)}`,
        );
      }
      compilePattern(pattern, '', `${key} key ${JSON.stringify(pattern)}`, this.where);
    }
    const entries = Object.entries(value as Record<string, number>);
    return entries.length === 0 ? undefined : Object.fromEntries(entries);
  }
}

/** Reads adapter_config.json into an AdapterConfig, checking every key bidora uses (unknown keys are ignored). */
export function fromPeftConfig(raw: unknown, file: string): AdapterConfig {
  const where = `adapters.load: ${file}`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new TypeError(`${where}: expected a JSON object`);
  const config = raw as Record<string, unknown>;
  const read = new ConfigReader(config, where);
  if (config.peft_type !== 'LORA') read.fail('peft_type', '"LORA"', 'range');
  for (const key of ['task_type', 'base_model_name_or_path', 'revision']) read.string(key);
  // PEFT itself overrides this flag per layer (True for a Conv1D, False for an nn.Linear, with a warning), and A and
  // B have the same shapes either way: each layer's orientation comes from the model, not the file.
  read.boolean('fan_in_fan_out', false);
  if ((read.value('bias') ?? 'none') !== 'none') read.fail('bias', '"none" (bias training is not supported)', 'range');
  read.boolean('inference_mode', true);
  const init = read.value('init_lora_weights') ?? true;
  if (!INIT_ONLY_WEIGHTS.includes(init)) {
    // PiSSA, OLoRA, CorDA and LoftQ also change the base weights, which this folder does not hold.
    read.fail('init_lora_weights', 'true, false, "gaussian", "eva" or "orthogonal"', 'range');
  }
  for (const [key, isDefault] of Object.entries(UNSUPPORTED_UNLESS_DEFAULT)) {
    if (!isDefault(config[key])) read.fail(key, 'unset (bidora does not support it)', 'range');
  }
  // PEFT's LoraConfig defaults: r = 8, lora_alpha = 8.
  const isRank = (value: number) => Number.isInteger(value) && value >= 1 && value <= MAX_RANK;
  const r = read.number('r', 8, isRank, `an integer in [1, ${MAX_RANK}]`);
  const alpha = read.number('lora_alpha', 8, Number.isFinite, 'a finite number');
  const dropout = read.number('lora_dropout', 0, (value) => value >= 0 && value < 1, 'a number in [0, 1)');
  const useDora = read.boolean('use_dora', false);
  const useRslora = read.boolean('use_rslora', false);
  let targetModules: string[] | string;
  const targets = config.target_modules;
  if (typeof targets === 'string') {
    compilePattern(targets, '', 'target_modules', where);
    targetModules = targets;
  } else {
    targetModules =
      read.strings('target_modules', { nonEmpty: true }) ??
      read.fail('target_modules', 'a non-empty list of names or a regular expression');
  }
  const modulesToSave = read.strings('modules_to_save', { nonEmpty: false }) ?? [];
  const rankPattern = read.patterns(
    'rank_pattern',
    (value) => typeof value === 'number' && isRank(value),
    `integers in [1, ${MAX_RANK}]`,
  );
  const alphaPattern = read.patterns(
    'alpha_pattern',
    (value) => typeof value === 'number' && Number.isFinite(value),
    'finite numbers',
  );
  const layersToTransform = readLayersToTransform(read);
  const layersPattern = readLayersPattern(read);
  if (layersToTransform !== undefined && typeof targetModules === 'string') {
    throw new RangeError(`${where}: layers_to_transform cannot be used when target_modules is a regular expression`);
  }
  if (layersPattern !== undefined && layersToTransform === undefined) {
    throw new RangeError(`${where}: layers_pattern needs layers_to_transform`);
  }
  const { method, detachNorm } = readBidoraSettings(config.bidora, useDora, where);
  return {
    method,
    r,
    alpha,
    dropout,
    targetModules,
    modulesToSave,
    useRslora,
    detachNorm,
    init: init === 'gaussian' ? 'gaussian' : 'kaiming',
    ...(rankPattern && { rankPattern }),
    ...(alphaPattern && { alphaPattern }),
    ...(layersToTransform !== undefined && { layersToTransform }),
    ...(layersPattern !== undefined && { layersPattern }),
  };
}

/** layers_to_transform: an index, a list of them, or unset (null or an empty list, as PEFT reads it). */
function readLayersToTransform(read: ConfigReader): number | number[] | undefined {
  const value = read.value('layers_to_transform');
  const isIndex = (item: unknown) => Number.isSafeInteger(item) && (item as number) >= 0;
  if (value === undefined || (Array.isArray(value) && value.length === 0)) return undefined;
  if (isIndex(value)) return value as number;
  if (Array.isArray(value) && value.every(isIndex)) return value as number[];
  return read.fail('layers_to_transform', 'a layer index, a list of them, or null');
}

function readLayersPattern(read: ConfigReader): string | string[] | undefined {
  const value = read.value('layers_pattern');
  if (value === undefined || value === '' || (Array.isArray(value) && value.length === 0)) return undefined;
  if (typeof value === 'string') return value;
  return read.strings('layers_pattern', { nonEmpty: true });
}

/** bidora's own settings: absent in PEFT's folders, where use_dora alone says LoRA or DoRA. */
function readBidoraSettings(
  value: unknown,
  useDora: boolean,
  where: string,
): { method: AdapterMethod; detachNorm: boolean | undefined } {
  if (value === undefined || value === null) return { method: useDora ? 'dora' : 'lora', detachNorm: undefined };
  const settings = value as Record<string, unknown>;
  if (typeof value !== 'object' || Array.isArray(value)) throw new TypeError(`${where}: bidora must be an object`);
  const method = checkAdapterMethod(settings.method, `${where}: bidora.method`);
  if (ADAPTER_METHODS[method].peftUseDora !== useDora) {
    throw new RangeError(`${where}: bidora.method "${method}" disagrees with use_dora ${String(useDora)}`);
  }
  const detachNorm = settings.detachNorm;
  if (detachNorm !== undefined && typeof detachNorm !== 'boolean') {
    throw new TypeError(`${where}: bidora.detachNorm must be true or false, got ${JSON.stringify(detachNorm)}`);
  }
  return { method, detachNorm };
}

/** Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` with PEFT's key names. */
export function save(model: Module, dir: string, options: SaveOptions = {}): void {
  const config = appliedConfig(model);
  const layers = adaptedLayers(model);
  if (config === undefined || layers.length === 0) throw new TypeError('adapters.save: the model carries no adapters');
  const tensors = new Map<string, Tensor>();
  for (const { path, adapter } of layers) {
    if (adapter.merged) throw new TypeError(`adapters.save: ${path} is merged; unmerge it first`);
    const names = adapter.layerKind.peftTensors;
    tensors.set(`${PREFIX}${path}.${names.loraA}`, adapter.loraA);
    tensors.set(`${PREFIX}${path}.${names.loraB}`, adapter.loraB);
    if (names.magnitude !== undefined) tensors.set(`${PREFIX}${path}.${names.magnitude}`, adapter.magnitude!);
  }
  for (const name of config.modulesToSave ?? []) {
    const module = model.namedModules().find(([path]) => path === name)?.[1];
    for (const [parameter, tensor] of module?.namedParameters(name) ?? []) tensors.set(`${PREFIX}${parameter}`, tensor);
  }
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), tensors, { format: 'pt' });
  // PEFT's task type from the model's head: per token TOKEN_CLS, a language model CAUSAL_LM, else SEQ_CLS (what it
  // was before heads had a task).
  const task = (model as { config?: { task?: string } }).config?.task;
  const taskType = task === 'token-classification' ? 'TOKEN_CLS' : task === 'causal-lm' ? 'CAUSAL_LM' : 'SEQ_CLS';
  const fanInFanOut = layers.some(({ path }) => isConv1D(model, path));
  const peftConfig = toPeftConfig(config, options, { taskType, fanInFanOut });
  writeFileAtomic(join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(peftConfig, null, 2) + '\n');
}

/** GPT-2's Conv1D layers in transformers: bidora keeps their weights as Linear's [out, in], transposed on load. */
const CONV1D_LAYERS = /(^|\.)(c_attn|c_proj|c_fc|q_attn)$/;

/**
 * Whether transformers holds the layer at `path` as a Conv1D (weights [in, out]), for which PEFT writes
 * fan_in_fan_out true: the Conv1D layers of a GPT-2 model.
 */
function isConv1D(model: Module, path: string): boolean {
  const modelType = (model as { config?: { modelType?: string } }).config?.modelType;
  return modelType === 'gpt2' && CONV1D_LAYERS.test(path);
}

function readJson(file: string, where: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`${where}: cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new TypeError(`${where}: ${file} is not valid JSON (${(error as Error).message})`, { cause: error });
  }
}

/**
 * Loads a PEFT adapter folder into `model`, as one step: the config and every tensor (name, shape, dtype, finite
 * values) are read and checked before the model changes, and any failure after that undoes what was done, so a load
 * that throws leaves the model exactly as it was. Adapters the model already carries are replaced by the folder's
 * (its r, alpha, method, target and saved modules); merged ones must be unmerged first. Modules to save that the
 * model lacks (PEFT's SEQ_CLS configs list both "classifier" and "score") are skipped, as PEFT does.
 */
export function load(model: Module, dir: string): AdapterConfig {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('adapters.load: dir must be a non-empty string');
  const configFile = join(dir, ADAPTER_CONFIG_FILE);
  const config = fromPeftConfig(readJson(configFile, 'adapters.load'), configFile);
  const merged = adaptedLayers(model).find(({ adapter }) => adapter.merged);
  if (merged) throw new TypeError(`adapters.load: ${merged.path} carries a merged adapter; unmerge it first`);
  const plan = planAdapters(model, config, {
    where: `adapters.load: ${configFile}`,
    replacing: true,
    skipMissingModules: true,
  });
  const weightsFile = join(dir, ADAPTER_WEIGHTS_FILE);
  const { tensors } = readSafetensors(weightsFile, { requireFinite: true });
  let placed: Map<string, Tensor>;
  try {
    const slots = expectedTensors(plan);
    checkNamesAndShapes(tensors, slots, weightsFile);
    placed = onDevices(tensors, slots);
  } catch (error) {
    for (const tensor of tensors.values()) tensor.dispose();
    throw error;
  }
  commit(model, plan, placed);
  return config;
}

interface Slot {
  shape: readonly number[];
  device: Device;
}

/** Every tensor the folder must hold for `plan`, by its name in the file. */
function expectedTensors(plan: AdapterPlan): Map<string, Slot> {
  const slots = new Map<string, Slot>();
  const names = ADAPTER_METHODS[plan.config.method].layer.peftTensors;
  for (const { name, layer, r } of plan.adapters) {
    const device = layer.weight.device;
    slots.set(`${PREFIX}${name}.${names.loraA}`, { shape: [r, layer.inFeatures], device });
    slots.set(`${PREFIX}${name}.${names.loraB}`, { shape: [layer.outFeatures, r], device });
    if (names.magnitude !== undefined) {
      slots.set(`${PREFIX}${name}.${names.magnitude}`, { shape: [layer.outFeatures], device });
    }
  }
  for (const [name, module] of plan.modulesToSave) {
    for (const [parameter, tensor] of module.namedParameters(name)) {
      slots.set(`${PREFIX}${parameter}`, { shape: tensor.shape, device: tensor.device });
    }
  }
  return slots;
}

function checkNamesAndShapes(tensors: Map<string, Tensor>, slots: Map<string, Slot>, file: string): void {
  const missing = [...slots.keys()].filter((key) => !tensors.has(key));
  if (missing.length > 0) throw new RangeError(`adapters.load: ${file} lacks ${missing.join(', ')}`);
  for (const [key, tensor] of tensors) {
    const slot = slots.get(key);
    if (slot === undefined) throw new RangeError(`adapters.load: ${file}: the model has no place for ${key}`);
    if (slot.shape.join() !== tensor.shape.join()) {
      throw new RangeError(
        `adapters.load: ${file}: ${key} has shape [${tensor.shape.join(', ')}] but the model expects ` +
          `[${slot.shape.join(', ')}]`,
      );
    }
  }
}

/** The file's tensors moved onto their layers' devices (the file is read onto the CPU); on failure none is kept. */
function onDevices(tensors: Map<string, Tensor>, slots: Map<string, Slot>): Map<string, Tensor> {
  const placed = new Map<string, Tensor>();
  try {
    for (const [key, tensor] of tensors) {
      const moved = tensor.to(slots.get(key)!.device);
      placed.set(key, moved);
    }
  } catch (error) {
    for (const [key, moved] of placed) if (moved !== tensors.get(key)) moved.dispose();
    throw error;
  }
  for (const [key, tensor] of tensors) if (placed.get(key) !== tensor) tensor.dispose();
  return placed;
}

/**
 * Swaps the prepared tensors in: old adapters off, saved modules' parameters replaced, new adapters on. Nothing in it
 * is expected to throw, but if anything does, everything is put back and the new tensors are freed.
 */
function commit(model: Module, plan: AdapterPlan, placed: Map<string, Tensor>): void {
  const previousConfig = appliedConfig(model);
  const previousAdapters = adaptedLayers(model);
  const trainable = new Map(model.parameters().map((tensor) => [tensor, tensor.requiresGrad]));
  const replaced: [string, Tensor][] = [];
  try {
    for (const { layer } of previousAdapters) layer.adapter = undefined;
    for (const [name, module] of plan.modulesToSave) {
      for (const [parameter] of module.namedParameters(name)) {
        replaced.push([parameter, replaceParameter(model, parameter, placed.get(`${PREFIX}${parameter}`)!)]);
      }
    }
    const names = ADAPTER_METHODS[plan.config.method].layer.peftTensors;
    attachAdapters(model, plan, ({ name }) => ({
      loraA: placed.get(`${PREFIX}${name}.${names.loraA}`)!,
      loraB: placed.get(`${PREFIX}${name}.${names.loraB}`)!,
      magnitude: names.magnitude === undefined ? undefined : placed.get(`${PREFIX}${name}.${names.magnitude}`),
    }));
  } catch (error) {
    for (const { layer } of plan.adapters) layer.adapter = undefined;
    for (const { layer, adapter } of previousAdapters) layer.adapter = adapter;
    for (const [parameter, tensor] of replaced.reverse()) replaceParameter(model, parameter, tensor);
    for (const [tensor, requiresGrad] of trainable) tensor.requiresGrad = requiresGrad;
    setAppliedConfig(model, previousConfig);
    for (const tensor of placed.values()) tensor.dispose();
    throw error;
  }
  for (const { adapter } of previousAdapters) disposeAll([adapter.loraA, adapter.loraB, adapter.magnitude]);
  disposeAll(replaced.map(([, tensor]) => tensor));
}

function disposeAll(tensors: (Tensor | undefined)[]): void {
  for (const tensor of tensors) {
    tensor?.grad?.dispose();
    tensor?.dispose();
  }
}

/** PEFT's print_trainable_parameters line: "trainable params: … || all params: … || trainable%: …". */
export function trainableParameters(model: Module): {
  /** Parameters that require grad. */
  trainable: number;
  /** Every parameter of the model, adapters included. */
  all: number;
  /** The line PEFT prints. */
  line: string;
} {
  const all = model.parameterCount();
  const trainable = model.parameterCount({ trainableOnly: true });
  const line =
    `trainable params: ${trainable.toLocaleString('en-US')} || all params: ${all.toLocaleString('en-US')} || ` +
    `trainable%: ${((100 * trainable) / all).toFixed(4)}`;
  return { trainable, all, line };
}
