// Layers are plain classes: parameters are Tensor fields, sub-layers are Module fields (or arrays of them), and the
// dotted names of the fields are the parameter names, so they match Hugging Face checkpoints.
import type { Device, DType } from '../binding';
import { type SeedStream } from '../random';
import { Tensor } from '../tensor';

/**
 * Base of every layer and model. A module's parameters are its Tensor fields and its sub-modules' (arrays of modules
 * included), named by the dotted field path, so `namedParameters()` lines up with Hugging Face checkpoint names and
 * adapters can replace a parameter by name.
 */
export abstract class Module {
  /** Train mode (dropout active) or eval mode. */
  training = true;

  /** [dotted name, parameter] for every parameter of this module and its sub-modules, in declaration order. */
  namedParameters(prefix = ''): [string, Tensor][] {
    const found: [string, Tensor][] = [];
    for (const [key, value] of Object.entries(this)) {
      const name = prefix === '' ? key : `${prefix}.${key}`;
      if (value instanceof Tensor) found.push([name, value]);
      else if (value instanceof Module) found.push(...value.namedParameters(name));
      else if (Array.isArray(value)) {
        value.forEach((item, index) => {
          if (item instanceof Module) found.push(...item.namedParameters(`${name}.${index}`));
        });
      }
    }
    return found;
  }

  /** Every parameter of this module and its sub-modules, in declaration order (the values of `namedParameters()`). */
  parameters(): Tensor[] {
    return this.namedParameters().map(([, tensor]) => tensor);
  }

  /** Where this module's parameters live: the first parameter's device ('cpu' for a module without any). */
  get device(): Device {
    return firstParameter(this)?.device ?? 'cpu';
  }

  /**
   * Moves every parameter to `device` in place, as PyTorch's `module.to(device)`: each is replaced by its copy there
   * (requiresGrad and `.grad` carried over; a tensor shared by several fields stays shared) and the old one
   * disposed. Move a model before making its optimizer, which holds the parameters it was given. The copies are all
   * made before anything is replaced, so a failure (out of GPU memory) leaves the model as it was. Returns this.
   *
   * With a dtype, `to('bfloat16')` keeps the weight matrices (every rank-2 parameter: linear weights, embedding
   * tables) in bfloat16, half the memory, and freezes them, as a base model loaded in bfloat16 for adapter training is;
   * vectors (biases, norm scales), the matrices `keepsFloat32` names (a task head that will be trained), and once
   * adapters are applied their tensors and every other trainable one stay float32. `to('float32')` widens every
   * bfloat16 parameter back, exactly.
   */
  to(target: Device | DType): this {
    if (target === 'bfloat16') {
      // After adapters.apply, what trains stays float32: the adapters' own tensors and the modules it saves.
      const adapted = this.namedParameters().some(([name]) => ADAPTER_TENSOR.test(name));
      const trained = (name: string, tensor: Tensor) => ADAPTER_TENSOR.test(name) || (adapted && tensor.requiresGrad);
      return this.#replaceTensors(
        (name, tensor) =>
          tensor.dtype === 'float32' && tensor.rank === 2 && !this.keepsFloat32(name) && !trained(name, tensor),
        (tensor) => {
          const frozen = tensor.detach(); // a trainable tensor cannot become bfloat16; its frozen view can
          try {
            return frozen.to('bfloat16');
          } finally {
            frozen.dispose();
          }
        },
      );
    }
    if (target === 'float32') {
      return this.#replaceTensors(
        (_, tensor) => tensor.dtype === 'bfloat16',
        (tensor) => tensor.to('float32'),
      );
    }
    return this.#replaceTensors(
      (_, tensor) => tensor.device !== target,
      (tensor) => {
        const copy = tensor.to(target);
        copy.requiresGrad = tensor.requiresGrad;
        copy.grad = tensor.grad?.to(target);
        return copy;
      },
    );
  }

  /**
   * Whether `to('bfloat16')` leaves the parameter at dotted `name` in float32: none by default; a task model keeps
   * its head, which adapter training trains (modulesToSave).
   */
  protected keepsFloat32(name: string): boolean {
    void name;
    return false;
  }

  /** Replaces each parameter `chosen` picks by `copy` of it, all copies made first (see `to`). */
  #replaceTensors(chosen: (name: string, tensor: Tensor) => boolean, copy: (tensor: Tensor) => Tensor): this {
    const replaced = new Map<Tensor, Tensor>();
    const fields: [Record<string, unknown>, string, Tensor][] = [];
    try {
      for (const [moduleName, module] of this.namedModules()) {
        for (const [key, value] of Object.entries(module)) {
          const name = moduleName === '' ? key : `${moduleName}.${key}`;
          if (!(value instanceof Tensor) || !(replaced.has(value) || chosen(name, value))) continue;
          fields.push([module as unknown as Record<string, unknown>, key, value]);
          if (!replaced.has(value)) replaced.set(value, copy(value));
        }
      }
    } catch (error) {
      for (const made of replaced.values()) {
        made.grad?.dispose();
        made.dispose();
      }
      throw error;
    }
    for (const [owner, key, value] of fields) owner[key] = replaced.get(value);
    for (const original of replaced.keys()) {
      original.grad?.dispose();
      original.dispose();
    }
    return this;
  }

  /** [dotted name, module] for this module (named `prefix`) and every sub-module. */
  namedModules(prefix = ''): [string, Module][] {
    const found: [string, Module][] = [[prefix, this]];
    for (const [key, value] of Object.entries(this)) {
      const name = prefix === '' ? key : `${prefix}.${key}`;
      if (value instanceof Module) found.push(...value.namedModules(name));
      else if (Array.isArray(value)) {
        value.forEach((item, index) => {
          if (item instanceof Module) found.push(...item.namedModules(`${name}.${index}`));
        });
      }
    }
    return found;
  }

  /** The seed streams this module itself draws dropout masks from (layers with dropout override this). */
  protected ownSeedStreams(): SeedStream[] {
    return [];
  }

  /** Every seed stream of the model, in module order: save and restore their states to replay dropout exactly. */
  seedStreams(): SeedStream[] {
    return this.namedModules().flatMap(([, module]) => module.ownSeedStreams());
  }

  /**
   * Sets train mode (dropout active) on this module and every sub-module, or eval mode when `mode` is false.
   * Returns this.
   */
  train(mode = true): this {
    for (const [, module] of this.namedModules()) module.training = mode;
    return this;
  }

  /** Sets eval mode (dropout off, outputs deterministic) on this module and every sub-module. Returns this. */
  eval(): this {
    return this.train(false);
  }

  /** Number of elements over parameters that require grad (or all parameters). */
  parameterCount(options: { trainableOnly?: boolean } = {}): number {
    return this.parameters()
      .filter((tensor) => !options.trainableOnly || tensor.requiresGrad)
      .reduce((total, tensor) => total + tensor.size, 0);
  }

  /** Frees every parameter (and gradient). */
  dispose(): void {
    for (const tensor of this.parameters()) {
      tensor.grad?.dispose();
      tensor.dispose();
    }
  }
}

/** The dotted names of adapters' tensors (adapters/layers.ts attaches them as `<layer>.adapter`). */
const ADAPTER_TENSOR = /(^|\.)adapter\./;

/** Replaces the tensor at dotted `name` inside `root` (used by state loading and adapters); returns the old one. */
export function replaceParameter(root: Module, name: string, tensor: Tensor): Tensor {
  const path = name.split('.');
  const field = path.pop()!;
  let owner: unknown = root;
  for (const part of path) owner = (owner as Record<string, unknown>)[part];
  const record = owner as Record<string, unknown>;
  const previous = record[field];
  if (!(previous instanceof Tensor)) throw new RangeError(`no parameter named ${name}`);
  record[field] = tensor;
  return previous;
}

/** The first parameter in declaration order, found without listing them all (models ask for their device per step). */
function firstParameter(module: Module): Tensor | undefined {
  // The fields namedParameters() walks: tensors, modules, and modules inside arrays.
  for (const value of Object.values(module)) {
    if (value instanceof Tensor) return value;
    const modules: unknown[] = value instanceof Module ? [value] : Array.isArray(value) ? value : [];
    for (const item of modules) {
      const found = item instanceof Module ? firstParameter(item) : undefined;
      if (found !== undefined) return found;
    }
  }
  return undefined;
}
