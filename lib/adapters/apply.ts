// Attaching LoRA, DoRA or BiDoRA adapters to the Linear layers of a model by module name, as PEFT's
// LoraConfig(target_modules=...) does, and freezing everything else.
import { noGrad } from '../autograd';
import { doraWeightNorm } from '../ops/adapter';
import { Linear, LinearAdapter } from '../nn/layers';
import { type Module } from '../nn/module';
import { Tensor } from '../tensor';

export type AdapterMethod = 'lora' | 'dora' | 'bidora';

export interface AdapterConfig {
  method: AdapterMethod;
  /** Rank r of A [r, in] and B [out, r]. */
  r: number;
  /** lora_alpha: the scale is alpha / r (alpha / sqrt(r) with rsLoRA). Defaults to r (scale 1). */
  alpha?: number;
  /** lora_dropout on the low-rank branch's input. */
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
  useRslora?: boolean;
  /** A's initialisation: Kaiming-uniform as PEFT ('kaiming', default) or N(0, 1) as the official BiDoRA code. */
  init?: 'kaiming' | 'gaussian';
  /** Seed of A's initial values and of the dropout masks. */
  seed?: number;
}

export interface NamedTensor {
  name: string;
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

function matcher(targets: AdapterConfig['targetModules']): (name: string) => boolean {
  if (targets instanceof RegExp) return (name) => new RegExp(`^(?:${targets.source})$`, targets.flags).test(name);
  if (typeof targets === 'string') return matcher(new RegExp(targets));
  return (name) => targets.some((target) => name === target || name.endsWith(`.${target}`));
}

function checkConfig(config: AdapterConfig): void {
  if (config === null || typeof config !== 'object') throw new TypeError('adapters.apply: config must be an object');
  if (!['lora', 'dora', 'bidora'].includes(config.method)) {
    throw new RangeError(`adapters.apply: method must be 'lora', 'dora' or 'bidora', got '${String(config.method)}'`);
  }
  if (!Number.isInteger(config.r) || config.r < 1) {
    throw new RangeError(`adapters.apply: r must be an integer of at least 1, got ${config.r}`);
  }
  const dropout = config.dropout ?? 0;
  if (!(dropout >= 0 && dropout < 1)) throw new RangeError(`adapters.apply: dropout must be in [0, 1), got ${dropout}`);
  const alpha = config.alpha ?? config.r;
  if (!Number.isFinite(alpha)) throw new RangeError(`adapters.apply: alpha must be finite, got ${alpha}`);
  const targets = config.targetModules;
  const validTargets =
    targets instanceof RegExp ||
    typeof targets === 'string' ||
    (Array.isArray(targets) && targets.length > 0 && targets.every((target) => typeof target === 'string'));
  if (!validTargets) {
    throw new TypeError('adapters.apply: targetModules must be a non-empty array of names, a string or a RegExp');
  }
}

/** Linear layers of `model` whose names match, checked before anything changes. */
function matchedLinears(model: Module, config: AdapterConfig): [string, Linear][] {
  const linears = model.namedModules().filter((entry): entry is [string, Linear] => entry[1] instanceof Linear);
  const matches = matcher(config.targetModules);
  const matched = linears.filter(([name]) => matches(name));
  if (Array.isArray(config.targetModules)) {
    const unmatched = config.targetModules.filter(
      (target) => !linears.some(([name]) => name === target || name.endsWith(`.${target}`)),
    );
    if (unmatched.length > 0) {
      const available = [...new Set(linears.map(([name]) => name.split('.').at(-1)))].join(', ');
      throw new RangeError(
        `adapters.apply: target modules [${unmatched.join(', ')}] match no Linear layer of the model ` +
          `(Linear layer names end in: ${available})`,
      );
    }
  }
  if (matched.length === 0)
    throw new RangeError(`adapters.apply: no Linear layer matches ${String(config.targetModules)}`);
  for (const [name, layer] of matched) {
    if (layer.adapter !== undefined) throw new RangeError(`adapters.apply: ${name} already carries an adapter`);
    const largest = Math.min(layer.inFeatures, layer.outFeatures);
    if (config.r > largest) {
      throw new RangeError(
        `adapters.apply: r = ${config.r} exceeds min(in, out) = ${largest} of ${name} ` +
          `[${layer.outFeatures}, ${layer.inFeatures}]`,
      );
    }
  }
  return matched;
}

function matchedModulesToSave(model: Module, names: readonly string[]): [string, Module][] {
  const modules = model.namedModules();
  return names.map((wanted) => {
    const found = modules.find(([name]) => name === wanted || name.endsWith(`.${wanted}`));
    if (found === undefined) throw new RangeError(`adapters.apply: module to save '${wanted}' is not in the model`);
    return found;
  });
}

const applied = new WeakMap<Module, AdapterConfig>();

/** The config `apply` attached to `model` with, if any. */
export function appliedConfig(model: Module): AdapterConfig | undefined {
  return applied.get(model);
}

/**
 * Attaches an adapter to every matching Linear layer and freezes every base parameter; returns the trainable
 * tensors by role. Throws, before changing anything, for unknown target modules, r < 1 or r > min(in, out).
 */
export function apply(model: Module, config: AdapterConfig): ParameterGroups {
  checkConfig(config);
  const targets = matchedLinears(model, config);
  const saved = matchedModulesToSave(model, config.modulesToSave ?? []);
  const alpha = config.alpha ?? config.r;
  const scale = config.useRslora ? alpha / Math.sqrt(config.r) : alpha / config.r;
  const withMagnitude = config.method !== 'lora';
  const detachNorm = config.detachNorm ?? config.method !== 'bidora';
  const seed = config.seed ?? 0;

  for (const parameter of model.parameters()) parameter.requiresGrad = false;
  const groups: ParameterGroups = { direction: [], magnitude: [], modulesToSave: [] };
  targets.forEach(([name, layer], index) => {
    const { inFeatures, outFeatures } = layer;
    const { device } = layer.weight;
    const layerSeed = seed * 7919 + index * 2;
    const loraA =
      config.init === 'gaussian'
        ? Tensor.randn([config.r, inFeatures], { seed: layerSeed, device })
        : Tensor.uniform([config.r, inFeatures], {
            seed: layerSeed,
            low: -1 / Math.sqrt(inFeatures),
            high: 1 / Math.sqrt(inFeatures),
            device,
          });
    const loraB = Tensor.zeros([outFeatures, config.r], { device });
    // With B = 0 the direction is W0, so m starts at W0's row norms and the adapted layer equals the base one.
    const magnitude = withMagnitude
      ? noGrad(() => doraWeightNorm({ weight: layer.weight, loraA, loraB, scale }))
      : undefined;
    layer.adapter = new LinearAdapter(loraA.requireGrad(), loraB.requireGrad(), magnitude?.requireGrad(), {
      scale,
      dropout: config.dropout ?? 0,
      detachNorm,
      seed: layerSeed + 1,
    });
    groups.direction.push(
      { name: `${name}.adapter.loraA`, tensor: loraA },
      { name: `${name}.adapter.loraB`, tensor: loraB },
    );
    if (magnitude) groups.magnitude.push({ name: `${name}.adapter.magnitude`, tensor: magnitude });
  });
  for (const [name, module] of saved) {
    for (const [parameterName, tensor] of module.namedParameters(name)) {
      tensor.requiresGrad = true;
      groups.modulesToSave.push({ name: parameterName, tensor });
    }
  }
  applied.set(model, { ...config, modulesToSave: saved.map(([name]) => name) });
  return groups;
}
