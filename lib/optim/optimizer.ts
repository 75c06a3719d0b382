// Optimizers that update parameters in place with one fused native call per step: the Optimizer base (parameter
// bookkeeping, lazily created state, state dicts), AdamW and SGD with PyTorch's update rules.
import { native, type NativeTensorHandle } from '../binding';
import { handleOf, keep, Tensor, tensorOf } from '../tensor';

/** Options of one `Optimizer.step()`. */
export interface StepOptions {
  /** The learning rate of this step only (e.g. from `learningRateAt`); the optimizer's `lr` otherwise. */
  lr?: number;
}

/** What `stateDict()` returns and `loadStateDict()` takes: state tensors by name and plain JSON-able values. */
export interface OptimizerStateDict {
  /** Per-parameter state named `${paramIndex}.${slot}`, e.g. "3.expAvg". */
  tensors: Map<string, Tensor>;
  /** The optimizer's type, step counts and hyperparameters. */
  state: Record<string, unknown>;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** The same test for typed options, without narrowing them to a record. */
function isOptionsObject(value: unknown): boolean {
  return isPlainObject(value);
}

/** A finite number ≥ 0, or a RangeError naming `where`. */
function nonNegative(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new RangeError(`${where} must be a finite number of at least 0, got ${String(value)}`);
  }
  return value;
}

function fraction(value: unknown, where: string): number {
  if (typeof value !== 'number' || !(value >= 0 && value < 1)) {
    throw new RangeError(`${where} must be a number in [0, 1), got ${String(value)}`);
  }
  return value;
}

function checkKeys(options: object, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new RangeError(`${where}: unknown option '${key}' (expected ${allowed.map((k) => `'${k}'`).join(', ')})`);
    }
  }
}

/**
 * Steps a fixed list of parameters from their `.grad`. State tensors (moments, momentum buffers) are created on a
 * parameter's first update, live outside tidy scopes, and are freed by `dispose()`.
 */
export abstract class Optimizer {
  /** The parameters this optimizer steps, frozen in the order given: state dict keys index into it. */
  readonly params: readonly Tensor[];
  #lr = 0;
  #stepCount = 0;
  #disposed = false;
  /** Updates each parameter has received: PyTorch's per-parameter state["step"] (AdamW's bias correction). */
  #paramSteps: number[];
  /** Per-parameter state tensors by slot name; undefined until the parameter's first update. */
  #slots: (Map<string, Tensor> | undefined)[];

  constructor(params: readonly Tensor[], lr: number) {
    const name = new.target.name;
    if (!Array.isArray(params)) throw new TypeError(`${name}: params must be an array of Tensors`);
    const seen = new Set<Tensor>();
    params.forEach((param, index) => {
      handleOf(param, name, `params[${index}]`);
      if (seen.has(param)) throw new TypeError(`${name}: params[${index}] appears more than once`);
      seen.add(param);
    });
    this.params = Object.freeze([...params]);
    this.lr = lr;
    this.#paramSteps = params.map(() => 0);
    this.#slots = params.map(() => undefined);
  }

  /** The learning rate steps use unless `step({ lr })` overrides it. */
  get lr(): number {
    return this.#lr;
  }

  /** Sets the default learning rate; a RangeError unless it is a finite number ≥ 0. */
  set lr(value: number) {
    this.#lr = nonNegative(value, `${this.constructor.name}: lr`);
  }

  /** How many times `step()` ran. */
  get stepCount(): number {
    return this.#stepCount;
  }

  /** The state slots each parameter gets, e.g. ['expAvg', 'expAvgSq']. */
  protected abstract slotNames(): readonly string[];
  /** Runs the native update of `indices` (parameters with a gradient, their slots created) at `lr`. */
  protected abstract update(indices: readonly number[], lr: number, steps: readonly number[]): void;
  /** The hyperparameters a state dict carries (lr and step counts aside). */
  protected abstract hyperparameters(): Record<string, unknown>;
  /**
   * Restores hyperparameters from `hyperparameters()`'s form; throws a RangeError on an invalid value before changing
   * any (loadStateDict relies on that to roll back).
   */
  protected abstract loadHyperparameters(values: Record<string, unknown>): void;

  /**
   * Handles of one state slot for the given parameters.
   * @internal
   */
  protected slotHandles(indices: readonly number[], slot: string): NativeTensorHandle[] {
    return indices.map((index) => handleOf(this.#slots[index]!.get(slot)!, this.constructor.name, `${index}.${slot}`));
  }

  /**
   * Native handles of the given parameters, for `update()`.
   * @internal
   */
  protected paramHandles(indices: readonly number[]): NativeTensorHandle[] {
    return indices.map((index) => handleOf(this.params[index], this.constructor.name, `params[${index}]`));
  }

  /**
   * Native handles of the given parameters' gradients, for `update()`.
   * @internal
   */
  protected gradHandles(indices: readonly number[]): NativeTensorHandle[] {
    return indices.map((index) => handleOf(this.params[index].grad, this.constructor.name, `params[${index}].grad`));
  }

  #checkLive(functionName: string): void {
    if (this.#disposed) throw new TypeError(`${this.constructor.name}.${functionName}: the optimizer was disposed`);
  }

  /** Updates every parameter whose `.grad` is set, in place; parameters without one are skipped. */
  step(options: StepOptions = {}): void {
    const name = `${this.constructor.name}.step`;
    this.#checkLive('step');
    if (!isOptionsObject(options)) throw new TypeError(`${name}: options must be an object`);
    checkKeys(options, ['lr'], name);
    const lr = options.lr === undefined ? this.#lr : nonNegative(options.lr, `${name}: lr`);
    const indices: number[] = [];
    this.params.forEach((param, index) => {
      if (param.grad === undefined) return;
      handleOf(param, name, `params[${index}]`);
      handleOf(param.grad, name, `params[${index}].grad`);
      if (param.grad.shape.join() !== param.shape.join()) {
        throw new RangeError(
          `${name}: params[${index}].grad has shape [${param.grad.shape.join(', ')}] but the parameter has shape ` +
            `[${param.shape.join(', ')}]`,
        );
      }
      indices.push(index);
    });
    for (const index of indices) {
      const slots = this.#slots[index] ?? new Map<string, Tensor>();
      this.#slots[index] = slots;
      const param = this.params[index];
      for (const slot of this.slotNames()) {
        if (!slots.has(slot)) slots.set(slot, keep(Tensor.zeros(param.shape, { device: param.device })));
      }
    }
    if (indices.length > 0) {
      this.update(
        indices,
        lr,
        indices.map((index) => this.#paramSteps[index] + 1),
      );
    }
    for (const index of indices) this.#paramSteps[index] += 1;
    this.#stepCount += 1;
  }

  /** Disposes and clears every parameter's `.grad` (PyTorch's zero_grad(set_to_none=True)). */
  zeroGrad(): void {
    for (const param of this.params) {
      param.grad?.dispose();
      param.grad = undefined;
    }
  }

  /**
   * The optimizer's state: its own live tensors (not copies: save or copy them before the next step, and do not
   * dispose them) and JSON-able values.
   */
  stateDict(): OptimizerStateDict {
    this.#checkLive('stateDict');
    const tensors = new Map<string, Tensor>();
    this.#slots.forEach((slots, index) => {
      for (const [slot, tensor] of slots ?? []) tensors.set(`${index}.${slot}`, tensor);
    });
    return {
      tensors,
      state: {
        type: this.constructor.name,
        stepCount: this.#stepCount,
        paramSteps: [...this.#paramSteps],
        lr: this.#lr,
        ...this.hyperparameters(),
      },
    };
  }

  /**
   * Restores a state dict of the same optimizer type over the same parameter list, copying its tensors (the caller
   * may dispose them afterwards). Validates everything before changing anything.
   */
  loadStateDict(dict: OptimizerStateDict): void {
    const name = `${this.constructor.name}.loadStateDict`;
    this.#checkLive('loadStateDict');
    if (!isPlainObject(dict) || !(dict.tensors instanceof Map) || !isPlainObject(dict.state)) {
      throw new TypeError(`${name}: expected { tensors: Map<string, Tensor>, state: object }`);
    }
    const { state } = dict;
    if (state.type !== this.constructor.name) {
      throw new TypeError(`${name}: the state is of ${String(state.type)}, not ${this.constructor.name}`);
    }
    const paramSteps = state.paramSteps;
    if (
      !Array.isArray(paramSteps) ||
      paramSteps.length !== this.params.length ||
      !paramSteps.every((steps) => Number.isSafeInteger(steps) && steps >= 0)
    ) {
      throw new RangeError(`${name}: paramSteps must hold a step count for each of the ${this.params.length} params`);
    }
    const stepCount = state.stepCount;
    if (!Number.isSafeInteger(stepCount) || (stepCount as number) < 0) {
      throw new RangeError(`${name}: stepCount must be a non-negative integer, got ${String(stepCount)}`);
    }
    const previousLr = this.#lr;
    const previousHyperparameters = this.hyperparameters();
    let incoming: Map<string, Tensor>[];
    try {
      // Hyperparameters first: they decide which state slots there are (SGD's momentum buffer).
      this.lr = state.lr as number;
      this.loadHyperparameters(state);
      incoming = this.#parseStateTensors(dict.tensors, name);
    } catch (error) {
      this.#lr = previousLr;
      this.loadHyperparameters(previousHyperparameters);
      throw error;
    }
    this.#releaseSlots();
    this.#slots = incoming.map((slots, index) => {
      if (slots.size === 0) return undefined;
      // Copies on the parameter's device: a checkpoint is read onto the CPU whatever trained.
      const { device } = this.params[index];
      const copies = [...slots].map(([slot, tensor]): [string, Tensor] => [
        slot,
        keep(tensorOf(native.toDevice({ x: handleOf(tensor, name, slot), device }))),
      ]);
      return new Map(copies);
    });
    this.#paramSteps = [...(paramSteps as number[])];
    this.#stepCount = stepCount as number;
  }

  /** The state tensors of a state dict by parameter, checked against the parameters and the slots. */
  #parseStateTensors(tensors: Map<string, Tensor>, name: string): Map<string, Tensor>[] {
    const slotNames = this.slotNames();
    const incoming: Map<string, Tensor>[] = this.params.map(() => new Map());
    for (const [key, tensor] of tensors) {
      const match = /^(\d+)\.(\w+)$/.exec(key);
      const index = match === null ? -1 : Number(match[1]);
      if (match === null || index >= this.params.length || !slotNames.includes(match[2])) {
        throw new RangeError(`${name}: unexpected state tensor '${key}'`);
      }
      handleOf(tensor, name, `tensors['${key}']`);
      if (tensor.shape.join() !== this.params[index].shape.join()) {
        throw new RangeError(
          `${name}: tensors['${key}'] has shape [${tensor.shape.join(', ')}] but params[${index}] has shape ` +
            `[${this.params[index].shape.join(', ')}]`,
        );
      }
      incoming[index].set(match[2], tensor);
    }
    incoming.forEach((slots, index) => {
      const missing = slotNames.filter((slot) => !slots.has(slot));
      if (slots.size > 0 && missing.length > 0) {
        throw new RangeError(`${name}: params[${index}] lacks state tensor '${index}.${missing[0]}'`);
      }
    });
    return incoming;
  }

  #releaseSlots(): void {
    for (const slots of this.#slots) for (const tensor of slots?.values() ?? []) tensor.dispose();
    this.#slots = this.params.map(() => undefined);
  }

  /** Frees the state tensors; the optimizer cannot step afterwards. Parameters and gradients are left alone. */
  dispose(): void {
    if (this.#disposed) return;
    this.#releaseSlots();
    this.#disposed = true;
  }
}

/** AdamW's hyperparameters; the defaults are PyTorch's. Each is validated (RangeError) by the constructor. */
export interface AdamWOptions {
  /** Learning rate, ≥ 0; default 1e-3. */
  lr?: number;
  /** Decay rates of the first and second moment averages, each in [0, 1); default [0.9, 0.999]. */
  betas?: readonly [number, number];
  /** Added to the square root of the second moment to keep the step finite, ≥ 0; default 1e-8. */
  eps?: number;
  /** Decoupled weight decay per unit of learning rate, ≥ 0; default 0.01. */
  weightDecay?: number;
}

/** torch.optim.AdamW: Adam with decoupled weight decay (p ← p·(1 − lr·wd) before the Adam update). */
export class AdamW extends Optimizer {
  #beta1 = 0.9;
  #beta2 = 0.999;
  #eps = 1e-8;
  #weightDecay = 0.01;

  constructor(params: readonly Tensor[], options: AdamWOptions = {}) {
    if (!isOptionsObject(options)) throw new TypeError('AdamW: options must be an object');
    checkKeys(options, ['lr', 'betas', 'eps', 'weightDecay'], 'AdamW');
    super(params, options.lr ?? 1e-3);
    this.loadHyperparameters({
      betas: options.betas ?? [0.9, 0.999],
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 0.01,
    });
  }

  /** The moment decay rates [beta1, beta2]. */
  get betas(): readonly [number, number] {
    return [this.#beta1, this.#beta2];
  }

  /** The denominator's stabilizing term. */
  get eps(): number {
    return this.#eps;
  }

  /** The decoupled weight decay: each step scales the parameter by (1 − lr·weightDecay). */
  get weightDecay(): number {
    return this.#weightDecay;
  }

  protected slotNames(): readonly string[] {
    return ['expAvg', 'expAvgSq'];
  }

  protected hyperparameters(): Record<string, unknown> {
    return { betas: [this.#beta1, this.#beta2], eps: this.#eps, weightDecay: this.#weightDecay };
  }

  protected loadHyperparameters(values: Record<string, unknown>): void {
    const betas = values.betas;
    if (!Array.isArray(betas) || betas.length !== 2) {
      throw new RangeError(`AdamW: betas must be an array of two numbers in [0, 1), got ${String(betas)}`);
    }
    const beta1 = fraction(betas[0], 'AdamW: betas[0]');
    const beta2 = fraction(betas[1], 'AdamW: betas[1]');
    const eps = nonNegative(values.eps, 'AdamW: eps');
    const weightDecay = nonNegative(values.weightDecay, 'AdamW: weightDecay');
    [this.#beta1, this.#beta2, this.#eps, this.#weightDecay] = [beta1, beta2, eps, weightDecay];
  }

  protected update(indices: readonly number[], lr: number, steps: readonly number[]): void {
    // Parameters first updated at different times have different bias corrections: one native call per step count
    // (usually just one).
    const groups = new Map<number, number[]>();
    indices.forEach((index, position) => {
      const group = groups.get(steps[position]);
      if (group === undefined) groups.set(steps[position], [index]);
      else group.push(index);
    });
    for (const [step, group] of groups) {
      native.adamwStep({
        params: this.paramHandles(group),
        grads: this.gradHandles(group),
        expAvg: this.slotHandles(group, 'expAvg'),
        expAvgSq: this.slotHandles(group, 'expAvgSq'),
        lr,
        beta1: this.#beta1,
        beta2: this.#beta2,
        eps: this.#eps,
        weightDecay: this.#weightDecay,
        step,
      });
    }
  }
}

/** SGD's hyperparameters, as PyTorch's (dampening 0). Each is validated (RangeError) by the constructor. */
export interface SGDOptions {
  /** Learning rate, ≥ 0; required, as in PyTorch. */
  lr: number;
  /** Momentum factor, ≥ 0; default 0 (plain SGD, no momentum buffers). */
  momentum?: number;
  /** L2 penalty added to the gradient (wd·p), ≥ 0; default 0. Unlike AdamW's, it passes through momentum. */
  weightDecay?: number;
  /** Nesterov momentum; default false. Requires momentum above 0. */
  nesterov?: boolean;
}

/** torch.optim.SGD (dampening 0): optional L2 weight decay added to the gradient, momentum, Nesterov momentum. */
export class SGD extends Optimizer {
  #momentum = 0;
  #weightDecay = 0;
  #nesterov = false;

  constructor(params: readonly Tensor[], options: SGDOptions) {
    if (!isOptionsObject(options)) throw new TypeError('SGD: options must be an object with at least lr');
    checkKeys(options, ['lr', 'momentum', 'weightDecay', 'nesterov'], 'SGD');
    if (options.lr === undefined) throw new RangeError('SGD: lr is required');
    super(params, options.lr);
    this.loadHyperparameters({
      momentum: options.momentum ?? 0,
      weightDecay: options.weightDecay ?? 0,
      nesterov: options.nesterov ?? false,
    });
  }

  /** The momentum factor (0: none). */
  get momentum(): number {
    return this.#momentum;
  }

  /** The L2 penalty added to the gradient. */
  get weightDecay(): number {
    return this.#weightDecay;
  }

  /** Whether momentum is Nesterov's. */
  get nesterov(): boolean {
    return this.#nesterov;
  }

  protected slotNames(): readonly string[] {
    // Momentum buffers exist only with momentum, as in PyTorch.
    return this.#momentum === 0 ? [] : ['momentumBuffer'];
  }

  protected hyperparameters(): Record<string, unknown> {
    return { momentum: this.#momentum, weightDecay: this.#weightDecay, nesterov: this.#nesterov };
  }

  protected loadHyperparameters(values: Record<string, unknown>): void {
    const momentum = nonNegative(values.momentum, 'SGD: momentum');
    const weightDecay = nonNegative(values.weightDecay, 'SGD: weightDecay');
    const nesterov = values.nesterov;
    if (typeof nesterov !== 'boolean') throw new RangeError(`SGD: nesterov must be a boolean, got ${String(nesterov)}`);
    if (nesterov && momentum === 0) throw new RangeError('SGD: nesterov requires a momentum above 0');
    [this.#momentum, this.#weightDecay, this.#nesterov] = [momentum, weightDecay, nesterov];
  }

  protected update(indices: readonly number[], lr: number): void {
    native.sgdStep({
      params: this.paramHandles(indices),
      grads: this.gradHandles(indices),
      momentumBuffers: this.#momentum === 0 ? undefined : this.slotHandles(indices, 'momentumBuffer'),
      lr,
      momentum: this.#momentum,
      weightDecay: this.#weightDecay,
      nesterov: this.#nesterov,
    });
  }
}
