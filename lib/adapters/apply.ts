// Attaching LoRA, DoRA or BiDoRA adapters to the Linear layers of a model by module name, as PEFT's
// LoraConfig(target_modules=...) does, and freezing everything else.
import { noGrad } from '../autograd';
import { Linear, LinearAdapter } from '../nn/layers';
import { type Module } from '../nn/module';
import { deriveSeed } from '../random';
import { ADAPTER_METHODS, type AdapterMethod, checkAdapterMethod } from './methods';
import { Tensor } from '../tensor';

export type { AdapterMethod } from './methods';

/** What {@link apply} attaches and where, in PEFT's LoraConfig terms (camelCase). */
export interface AdapterConfig {
  /** 'lora', 'dora' or 'bidora'; anything else is a RangeError. */
  method: AdapterMethod;
  /** Rank r of A [r, in] and B [out, r]. */
  r: number;
  /** lora_alpha: the scale is alpha / r (alpha / sqrt(r) with rsLoRA). Defaults to r (scale 1). */
  alpha?: number;
  /** lora_dropout on the low-rank branch's input, in [0, 1) (default 0). */
  dropout?: number;
  /**
   * Which Linear layers get adapters: names matched like PEFT (equal to, or ending in "." + an entry), or a regular
   * expression matched against the whole dotted name (a single string is read as one, as in PEFT).
   */
  targetModules: readonly string[] | string | RegExp;
  /** Modules trained in full alongside the adapters (e.g. the classification head: ["classifier"]). */
  modulesToSave?: readonly string[];
  /** Treat the row norm as a constant in backward: true for DoRA (PEFT), false for BiDoRA (official code). */
  detachNorm?: boolean;
  /** rsLoRA's scale alpha / sqrt(r) in place of alpha / r (default false). */
  useRslora?: boolean;
  /** A's initialisation: Kaiming-uniform as PEFT ('kaiming', default) or N(0, 1) as the official BiDoRA code. */
  init?: 'kaiming' | 'gaussian';
  /** Seed of A's initial values and of the dropout masks. */
  seed?: number;
  /**
   * PEFT's rank_pattern: r per layer, by pattern. The first key (in insertion order) that matches the end of a layer's
   * dotted name at a dot boundary, as a regular expression (`(.*\.)?key$`), gives that layer's rank.
   */
  rankPattern?: Readonly<Record<string, number>>;
  /** PEFT's alpha_pattern: alpha per layer, matched as rankPattern. */
  alphaPattern?: Readonly<Record<string, number>>;
  /**
   * PEFT's layers_to_transform: only layers with these indices (the number in "….layer.3.…") get adapters. Needs
   * targetModules as a list of names, as in PEFT; a name listed in full is adapted whatever its index.
   */
  layersToTransform?: number | readonly number[];
  /** PEFT's layers_pattern: the name(s) of the module list the layer index follows (e.g. "layer"). */
  layersPattern?: string | readonly string[];
}

/** A parameter and its dotted name in the model. */
export interface NamedTensor {
  /** As `model.namedParameters()` names it ("encoder.layer.0.attention.self.query.adapter.loraA"). */
  name: string;
  /** The parameter itself (not a copy). */
  tensor: Tensor;
}

/** The trainable tensors by role: each level of BiDoRA's optimisation steps exactly its own set. */
export interface ParameterGroups {
  /** A and B of every adapted layer: the direction. */
  direction: NamedTensor[];
  /** m of every DoRA/BiDoRA layer. */
  magnitude: NamedTensor[];
  /** Parameters of the modules to save (the head). */
  modulesToSave: NamedTensor[];
}

/** The config each adapted model was set up with (what adapters.save writes). */
const applied = new WeakMap<Module, AdapterConfig>();

/** PEFT's list matching: a name equal to an entry, or ending in "." + the entry. */
function matchesListEntry(name: string, target: string): boolean {
  return name === target || name.endsWith(`.${target}`);
}

/** A regular expression from a config value, or a RangeError naming the key (a string from a file may be anything). */
export function compilePattern(source: string, flags: string, key: string, where: string): RegExp {
  try {
    return new RegExp(source, flags);
  } catch (error) {
    throw new RangeError(`${where}: ${key} is not a valid regular expression (${(error as Error).message})`, {
      cause: error,
    });
  }
}

/** Whether each Linear layer name is targeted, as PEFT's check_target_module_exists decides. */
function targetMatcher(config: AdapterConfig, where: string): (name: string) => boolean {
  const targets = config.targetModules;
  // A string or RegExp must match the whole dotted name (PEFT: re.fullmatch); layers_to_transform does not apply.
  if (targets instanceof RegExp) {
    const whole = compilePattern(`^(?:${targets.source})$`, targets.flags.replace(/[gy]/g, ''), 'targetModules', where);
    return (name) => whole.test(name);
  }
  if (typeof targets === 'string') {
    const whole = compilePattern(`^(?:${targets})$`, '', 'targetModules', where);
    return (name) => whole.test(name);
  }
  const layerIndex = layerIndexReader(config, where);
  const wanted = config.layersToTransform;
  const allowed = wanted === undefined ? undefined : new Set(typeof wanted === 'number' ? [wanted] : wanted);
  return (name) => {
    // A name listed in full is taken whatever its layer index, as in PEFT.
    if (targets.includes(name)) return true;
    if (!targets.some((target) => matchesListEntry(name, target))) return false;
    if (allowed === undefined || allowed.size === 0) return true;
    const index = layerIndex(name);
    return index !== undefined && allowed.has(index);
  };
}

/**
 * The layer index inside a module name: the number after the last "<word>." (PEFT's `.*\.[^.]*\.(\d+)\.`) or after
 * one of `layersPattern` (PEFT's `.*\.{pattern}\.(\d+)\.`).
 */
function layerIndexReader(config: AdapterConfig, where: string): (name: string) => number | undefined {
  const patterns = config.layersPattern;
  const list = patterns === undefined ? [] : typeof patterns === 'string' ? [patterns] : patterns;
  const readers =
    list.length === 0
      ? [/^.*\.[^.]*\.(\d+)\./]
      : list.map((pattern) => compilePattern(`^.*\\.(?:${pattern})\\.(\\d+)\\.`, '', 'layersPattern', where));
  return (name) => {
    for (const reader of readers) {
      const match = reader.exec(name);
      if (match) return Number(match[1]);
    }
    return undefined;
  };
}

/**
 * The per-layer value of a PEFT rank_pattern / alpha_pattern: the first key (in order) matching the module name as
 * `(.*\.)?{key}$` from its start, as PEFT's get_pattern_key, else `fallback`.
 */
function patternLookup(
  pattern: Readonly<Record<string, number>> | undefined,
  key: string,
  where: string,
): (name: string, fallback: number) => number {
  const entries = Object.entries(pattern ?? {}).map(
    ([source, value]) =>
      [compilePattern(`^(?:.*\\.)?(?:${source})$`, '', `${key} key ${JSON.stringify(source)}`, where), value] as const,
  );
  return (name, fallback) => entries.find(([regex]) => regex.test(name))?.[1] ?? fallback;
}

function isRecordOf(value: unknown, valid: (item: unknown) => boolean): boolean {
  return (
    value !== null &&
    typeof value === 'object' &&
    !Array.isArray(value) &&
    Object.values(value as Record<string, unknown>).every(valid)
  );
}

const isRank = (value: unknown): boolean => Number.isInteger(value) && (value as number) >= 1;
const isFiniteNumber = (value: unknown): boolean => typeof value === 'number' && Number.isFinite(value);

function checkConfig(config: AdapterConfig, where: string): void {
  if (config === null || typeof config !== 'object') throw new TypeError(`${where}: config must be an object`);
  checkAdapterMethod(config.method, `${where}: method`);
  if (!isRank(config.r)) {
    throw new RangeError(`${where}: r must be an integer of at least 1, got ${config.r}`);
  }
  const dropout = config.dropout ?? 0;
  if (!(dropout >= 0 && dropout < 1)) throw new RangeError(`${where}: dropout must be in [0, 1), got ${dropout}`);
  const alpha = config.alpha ?? config.r;
  if (!isFiniteNumber(alpha)) throw new RangeError(`${where}: alpha must be finite, got ${alpha}`);
  const targets = config.targetModules;
  const validTargets =
    targets instanceof RegExp ||
    typeof targets === 'string' ||
    (Array.isArray(targets) && targets.length > 0 && targets.every((target) => typeof target === 'string'));
  if (!validTargets) {
    throw new TypeError(`${where}: targetModules must be a non-empty array of names, a string or a RegExp`);
  }
  if (config.rankPattern !== undefined && !isRecordOf(config.rankPattern, isRank)) {
    throw new RangeError(`${where}: rankPattern must map patterns to integers of at least 1`);
  }
  if (config.alphaPattern !== undefined && !isRecordOf(config.alphaPattern, isFiniteNumber)) {
    throw new RangeError(`${where}: alphaPattern must map patterns to finite numbers`);
  }
  const layers = config.layersToTransform;
  const isLayerIndex = (value: unknown) => Number.isInteger(value) && (value as number) >= 0;
  if (layers !== undefined && !(isLayerIndex(layers) || (Array.isArray(layers) && layers.every(isLayerIndex)))) {
    throw new RangeError(`${where}: layersToTransform must be a layer index or an array of them`);
  }
  const patterns = config.layersPattern;
  if (
    patterns !== undefined &&
    typeof patterns !== 'string' &&
    !(Array.isArray(patterns) && patterns.every((pattern) => typeof pattern === 'string'))
  ) {
    throw new TypeError(`${where}: layersPattern must be a string or an array of strings`);
  }
  // PEFT refuses these combinations too (LoraConfig.__post_init__): the setting would be silently ignored.
  if (layers !== undefined && !Array.isArray(targets)) {
    throw new RangeError(`${where}: layersToTransform needs targetModules as a list of names, not a pattern`);
  }
  if (patterns !== undefined && layers === undefined) {
    throw new RangeError(`${where}: layersPattern needs layersToTransform`);
  }
}

/** One Linear layer to adapt, with its own rank and scale (rankPattern / alphaPattern may differ per layer). */
export interface PlannedAdapter {
  name: string;
  layer: Linear;
  r: number;
  scale: number;
}

/** What `apply` will do to a model, worked out and checked without changing anything. */
export interface AdapterPlan {
  config: AdapterConfig;
  adapters: PlannedAdapter[];
  /** The modules trained in full, by their full dotted names. */
  modulesToSave: [string, Module][];
}

/**
 * Works out which layers get adapters (and with which r and scale) and which modules are saved in full; throws, with
 * nothing changed, for unknown targets or ranks too large. `replacing` plans over adapters the model already carries
 * (adapters.load replaces them); `skipMissingModules` skips modules to save the model lacks, as PEFT does.
 */
export function planAdapters(
  model: Module,
  config: AdapterConfig,
  options: { where?: string; replacing?: boolean; skipMissingModules?: boolean } = {},
): AdapterPlan {
  const where = options.where ?? 'adapters.apply';
  checkConfig(config, where);
  const linears = model.namedModules().filter((entry): entry is [string, Linear] => entry[1] instanceof Linear);
  const matches = targetMatcher(config, where);
  const matched = linears.filter(([name]) => matches(name));
  if (Array.isArray(config.targetModules)) {
    const unmatched = config.targetModules.filter(
      (target) => !linears.some(([name]) => matchesListEntry(name, target)),
    );
    if (unmatched.length > 0) {
      const available = [...new Set(linears.map(([name]) => name.split('.').at(-1)))].join(', ');
      throw new RangeError(
        `${where}: target modules [${unmatched.join(', ')}] match no Linear layer of the model ` +
          `(Linear layer names end in: ${available})`,
      );
    }
  }
  if (matched.length === 0) {
    const restriction = config.layersToTransform === undefined ? '' : ` in layers ${String(config.layersToTransform)}`;
    throw new RangeError(`${where}: no Linear layer matches ${String(config.targetModules)}${restriction}`);
  }
  const rankOf = patternLookup(config.rankPattern, 'rankPattern', where);
  const alphaOf = patternLookup(config.alphaPattern, 'alphaPattern', where);
  const adapters = matched.map(([name, layer]): PlannedAdapter => {
    if (layer.adapter !== undefined && !options.replacing) {
      throw new RangeError(`${where}: ${name} already carries an adapter`);
    }
    const r = rankOf(name, config.r);
    const alpha = alphaOf(name, config.alpha ?? config.r);
    const largest = Math.min(layer.inFeatures, layer.outFeatures);
    if (r > largest) {
      throw new RangeError(
        `${where}: r = ${r} exceeds min(in, out) = ${largest} of ${name} [${layer.outFeatures}, ${layer.inFeatures}]`,
      );
    }
    return { name, layer, r, scale: config.useRslora ? alpha / Math.sqrt(r) : alpha / r };
  });
  return { config, adapters, modulesToSave: modulesToSave(model, config.modulesToSave ?? [], where, options) };
}

/**
 * The modules `wanted` names, as PEFT finds them: every module whose dotted name ends with an entry, as a plain
 * suffix (so DistilBERT's `pre_classifier` is saved with `classifier`, as PEFT saves it), none inside another found.
 */
function modulesToSave(
  model: Module,
  wanted: readonly string[],
  where: string,
  options: { skipMissingModules?: boolean },
): [string, Module][] {
  const found: [string, Module][] = [];
  const modules = model.namedModules().filter(([name]) => name !== '');
  for (const entry of wanted) {
    const matches = modules.filter(([name]) => name.endsWith(entry));
    if (matches.length === 0 && !options.skipMissingModules) {
      throw new RangeError(`${where}: module to save '${entry}' is not in the model`);
    }
    for (const match of matches) if (!found.some(([name]) => name === match[0])) found.push(match);
  }
  // A module inside another one found is saved with it already.
  return found.filter(([name]) => !found.some(([outer]) => outer !== name && name.startsWith(`${outer}.`)));
}

/** The initial A, B and m of a planned adapter: A random, B = 0, m = ||W0|| so the layer starts at the base one. */
function initialWeights(planned: PlannedAdapter, config: AdapterConfig): AdapterWeights {
  const { layer, r, scale } = planned;
  const { inFeatures, outFeatures } = layer;
  const { device } = layer.weight;
  // Seeded by the layer's name in PEFT's layout: layers with the same shape still start from different A's.
  const seed = deriveSeed(config.seed ?? 0, `${planned.name}.lora_A.weight`);
  const loraA =
    config.init === 'gaussian'
      ? Tensor.randn([r, inFeatures], { seed, device })
      : Tensor.uniform([r, inFeatures], {
          seed,
          low: -1 / Math.sqrt(inFeatures),
          high: 1 / Math.sqrt(inFeatures),
          device,
        });
  const loraB = Tensor.zeros([outFeatures, r], { device });
  const magnitude = noGrad(() =>
    ADAPTER_METHODS[config.method].layer.initialMagnitude({ weight: layer.weight, loraA, loraB, scale }),
  );
  return { loraA, loraB, magnitude };
}

export interface AdapterWeights {
  loraA: Tensor;
  loraB: Tensor;
  magnitude: Tensor | undefined;
}

/**
 * Carries out a plan: freezes every parameter, attaches an adapter built from `weightsOf` (which takes the tensors
 * over) to each planned layer, makes the modules to save trainable, and records the config. Never throws once
 * `weightsOf` has run for every layer, so adapters.load can prepare everything that may fail first.
 */
export function attachAdapters(
  model: Module,
  plan: AdapterPlan,
  weightsOf: (planned: PlannedAdapter) => AdapterWeights,
): ParameterGroups {
  const { config } = plan;
  const method = ADAPTER_METHODS[config.method];
  const detachNorm = config.detachNorm ?? method.detachNorm;
  const weights = plan.adapters.map((planned) => weightsOf(planned));
  for (const parameter of model.parameters()) parameter.requiresGrad = false;
  const groups: ParameterGroups = { direction: [], magnitude: [], modulesToSave: [] };
  plan.adapters.forEach((planned, position) => {
    const { loraA, loraB, magnitude } = weights[position];
    planned.layer.adapter = new LinearAdapter(
      method.layer,
      loraA.requireGrad(),
      loraB.requireGrad(),
      magnitude?.requireGrad(),
      {
        scale: planned.scale,
        dropout: config.dropout ?? 0,
        detachNorm,
        seed: deriveSeed(config.seed ?? 0, `${planned.name}.lora_dropout`),
      },
    );
    groups.direction.push(
      { name: `${planned.name}.adapter.loraA`, tensor: loraA },
      { name: `${planned.name}.adapter.loraB`, tensor: loraB },
    );
    if (magnitude) groups.magnitude.push({ name: `${planned.name}.adapter.magnitude`, tensor: magnitude });
  });
  for (const [name, module] of plan.modulesToSave) {
    module.to('float32'); // trained, so float32 even in a model loaded in bfloat16
    for (const [parameterName, tensor] of module.namedParameters(name)) {
      tensor.requiresGrad = true;
      groups.modulesToSave.push({ name: parameterName, tensor });
    }
  }
  applied.set(model, { ...config, modulesToSave: plan.modulesToSave.map(([name]) => name) });
  return groups;
}

/** The config `apply` attached to `model` with, if any. */
export function appliedConfig(model: Module): AdapterConfig | undefined {
  return applied.get(model);
}

/** Sets (or, with undefined, forgets) the recorded config: adapters.load restores it when a load is undone. */
export function setAppliedConfig(model: Module, config: AdapterConfig | undefined): void {
  if (config === undefined) applied.delete(model);
  else applied.set(model, config);
}

/**
 * Attaches an adapter to every matching Linear layer and freezes every base parameter; returns the trainable
 * tensors by role. Throws, before changing anything, for unknown target modules, r < 1 or r > min(in, out).
 */
export function apply(model: Module, config: AdapterConfig): ParameterGroups {
  const plan = planAdapters(model, config);
  return attachAdapters(model, plan, (planned) => initialWeights(planned, config));
}
