// The fused DoRA and LoRA layer as functions: the contract other frameworks call. Forward returns the output and
// a `saved` object owning what backward needs; backward consumes it.
import { isGradEnabled, modifiedInPlace, record } from '../autograd';
import { type GradientRequest, native, type NativeAdapterGrads, type NativeTensorHandle } from '../binding';
import { handleOf, keep, Tensor, tensorOf } from '../tensor';
import { freshSeed } from '../random';

export type { GradientRequest } from '../binding';

/** Default floor of the direction's row norm: a zero row gives finite outputs and gradients. */
export const DEFAULT_NORM_EPS = 1e-6;

/**
 * The named arguments of the LoRA layer (loraForward, loraLinear): the input, the frozen base layer and the
 * adapter. All tensors on one device; shapes are checked by the kernel (RangeError naming the argument).
 */
export interface LoraArgs {
  /** [N, in] or [batch, seq, in]. */
  input: Tensor;
  /** The frozen base weight W0, [out, in]. */
  weight: Tensor;
  /** [out]. */
  bias?: Tensor;
  /** A, [r, in]. */
  loraA: Tensor;
  /** B, [out, r]. */
  loraB: Tensor;
  /** s: alpha / r (or alpha / sqrt(r) for rsLoRA). */
  scale: number;
  /** Dropout on the low-rank branch's input (PEFT's lora_dropout); the base product sees the undropped input. */
  dropout?: number;
  /** Seed of the dropout mask, which backward regenerates instead of storing. */
  seed?: number;
}

/** The named arguments of the DoRA layer (doraForward, doraLinear): LoRA's plus the magnitude and the norm's handling. */
export interface DoraArgs extends LoraArgs {
  /** m, [out]. */
  magnitude: Tensor;
  /** Treat the row norm as a constant in backward (PEFT's default, DoRA §4.3); false differentiates through it. */
  detachNorm?: boolean;
  /** Floor of the row norm (default 1e-6). */
  eps?: number;
}

/**
 * Gradients from an adapter backward, fresh tensors the caller owns, each of its argument's shape; absent where not
 * asked for (`needs`) or where there is no such argument. The frozen weight never gets one.
 */
export interface AdapterGradients {
  /** dL/dx, the input's shape. */
  input?: Tensor;
  /** dL/dA, [r, in]. */
  loraA?: Tensor;
  /** dL/dB, [out, r]. */
  loraB?: Tensor;
  /** dL/dm, [out] (DoRA only). */
  magnitude?: Tensor;
  /** dL/dbias, [out]: the output gradient summed over rows. */
  bias?: Tensor;
}

type Kind = 'dora' | 'lora';

interface SavedOptions {
  scale: number;
  eps: number;
  detachNorm: boolean;
  dropout: number;
  seed: number;
}

/**
 * What backward needs from one forward: references to the inputs (checked unchanged at backward) and the saved
 * activations it owns. Released by backward or by `dispose()`; tidy scopes leave it alone.
 */
export class AdapterSaved {
  /** Which forward made it: backward refuses the other kind's state. */
  readonly kind: 'dora' | 'lora';
  #inputs: Record<string, Tensor | undefined>;
  #versions: Map<Tensor, number>;
  #owned: Record<string, Tensor>;
  #options: SavedOptions;
  #released = false;

  /** @internal Made by the forward functions only; a factory, because a stripped constructor would read as public. */
  static create(
    kind: Kind,
    inputs: Record<string, Tensor | undefined>,
    owned: Record<string, NativeTensorHandle>,
    options: SavedOptions,
  ): AdapterSaved {
    return new AdapterSaved(kind, inputs, owned, options);
  }

  private constructor(
    kind: Kind,
    inputs: Record<string, Tensor | undefined>,
    owned: Record<string, NativeTensorHandle>,
    options: SavedOptions,
  ) {
    this.kind = kind;
    this.#inputs = inputs;
    this.#versions = new Map();
    for (const [name, tensor] of Object.entries(inputs)) {
      if (tensor !== undefined) this.#versions.set(tensor, handleOf(tensor, kind, name).version);
    }
    this.#owned = Object.fromEntries(Object.entries(owned).map(([name, handle]) => [name, keep(tensorOf(handle))]));
    this.#options = options;
  }

  /** Whether a backward used it or `dispose()` freed it; either way it cannot be used again. */
  get isDisposed(): boolean {
    return this.#released;
  }

  /** Frees the saved activations. Idempotent. */
  dispose(): void {
    if (this.#released) return;
    this.#released = true;
    for (const tensor of Object.values(this.#owned)) tensor.dispose();
  }

  /**
   * @internal Throws a TypeError when this was released, or an input is disposed or was changed in place since the
   * forward (the same check as every autograd node's, see SavedTensors).
   */
  verify(functionName: string): void {
    if (this.#released) {
      throw new TypeError(`${functionName}: saved was already used by a backward pass or disposed`);
    }
    for (const [name, tensor] of Object.entries(this.#inputs)) {
      if (tensor === undefined) continue;
      if (handleOf(tensor, functionName, `saved ${name}`).version !== this.#versions.get(tensor)) {
        throw modifiedInPlace(functionName, name);
      }
    }
  }

  /** @internal The handles backward passes to the addon, after checking nothing changed since forward. */
  use(functionName: string): {
    inputs: Record<string, NativeTensorHandle | undefined>;
    owned: Record<string, NativeTensorHandle>;
    options: SavedOptions;
  } {
    this.verify(functionName);
    const inputs: Record<string, NativeTensorHandle | undefined> = {};
    for (const [name, tensor] of Object.entries(this.#inputs)) {
      if (tensor !== undefined) inputs[name] = handleOf(tensor, functionName, `saved ${name}`);
    }
    const owned = Object.fromEntries(
      Object.entries(this.#owned).map(([name, tensor]) => [name, handleOf(tensor, functionName, `saved ${name}`)]),
    );
    return { inputs, owned, options: this.#options };
  }
}

function optional(tensor: Tensor | undefined, functionName: string, name: string): NativeTensorHandle | undefined {
  return tensor === undefined ? undefined : handleOf(tensor, functionName, name);
}

function requireArgs(args: unknown, functionName: string): void {
  if (args === null || typeof args !== 'object') {
    throw new TypeError(`${functionName}: expected an object of named arguments`);
  }
}

function wrapGrads(grads: NativeAdapterGrads): AdapterGradients {
  const result: AdapterGradients = {};
  for (const [name, handle] of Object.entries(grads) as [keyof AdapterGradients, NativeTensorHandle][]) {
    result[name] = tensorOf(handle);
  }
  return result;
}

function seedOf(seed: number | undefined, dropout: number): number {
  return seed ?? (dropout > 0 ? freshSeed() : 0);
}

/**
 * DoRA forward: y = (m / n) ⊙ (x W0ᵀ + s (x_d Aᵀ) Bᵀ) + bias, with n the row norms of W0 + s B A computed from
 * factored terms (no [out, in] buffer). Returns the output and the state backward needs.
 */
export function doraForward(args: DoraArgs): {
  /** y, the input's shape with `in` replaced by `out`. */
  output: Tensor;
  /** What doraBackward needs; dispose it when no backward follows. */
  saved: AdapterSaved;
} {
  const fn = 'doraForward';
  requireArgs(args, fn);
  const dropout = args.dropout ?? 0;
  const options = {
    scale: args.scale,
    eps: args.eps ?? DEFAULT_NORM_EPS,
    detachNorm: args.detachNorm ?? true,
    dropout,
    seed: seedOf(args.seed, dropout),
  };
  if (typeof options.detachNorm !== 'boolean') throw new TypeError(`${fn}: detachNorm must be a boolean`);
  const result = native.doraForward({
    input: handleOf(args.input, fn, 'input'),
    weight: handleOf(args.weight, fn, 'weight'),
    bias: optional(args.bias, fn, 'bias'),
    loraA: handleOf(args.loraA, fn, 'loraA'),
    loraB: handleOf(args.loraB, fn, 'loraB'),
    magnitude: handleOf(args.magnitude, fn, 'magnitude'),
    scale: options.scale,
    eps: options.eps,
    dropout: options.dropout,
    seed: options.seed,
  });
  const { output, ...owned } = result;
  const inputs = {
    input: args.input,
    weight: args.weight,
    bias: args.bias,
    loraA: args.loraA,
    loraB: args.loraB,
    magnitude: args.magnitude,
  };
  return { output: tensorOf(output), saved: AdapterSaved.create('dora', inputs, owned, options) };
}

/**
 * DoRA backward from the saved state and dL/dy. Returns fresh gradients for input, loraA, loraB, magnitude and
 * bias (when there is one); `needs` skips any of them, and with it every product only it needs (e.g. only
 * `{ magnitude: true, input: true }` skips the A and B products). Releases `saved`.
 */
export function doraBackward(saved: AdapterSaved, gradOutput: Tensor, needs?: GradientRequest): AdapterGradients {
  const fn = 'doraBackward';
  return consume(saved, 'dora', fn, ({ inputs, owned, options }) =>
    native.doraBackward({
      gradOutput: handleOf(gradOutput, fn, 'gradOutput'),
      input: inputs.input!,
      weight: inputs.weight!,
      bias: inputs.bias,
      loraA: inputs.loraA!,
      loraB: inputs.loraB!,
      magnitude: inputs.magnitude!,
      combined: owned.combined,
      hidden: owned.hidden,
      norm: owned.norm,
      weightLoraA: owned.weightLoraA,
      loraGram: owned.loraGram,
      scale: options.scale,
      eps: options.eps,
      detachNorm: options.detachNorm,
      dropout: options.dropout,
      seed: options.seed,
      needs: withDefaults(needs),
    }),
  );
}

/** Checks `saved` came from the matching forward, runs the native backward on its state, and releases it. */
function consume(
  saved: AdapterSaved,
  kind: Kind,
  functionName: string,
  run: (state: ReturnType<AdapterSaved['use']>) => NativeAdapterGrads,
): AdapterGradients {
  if (!(saved instanceof AdapterSaved) || saved.kind !== kind) {
    throw new TypeError(`${functionName}: saved must be the saved state of ${kind}Forward`);
  }
  const state = saved.use(functionName);
  try {
    return wrapGrads(run(state));
  } finally {
    saved.dispose();
  }
}

function withDefaults(needs: GradientRequest | undefined): GradientRequest | undefined {
  if (needs === undefined) return undefined;
  if (needs === null || typeof needs !== 'object') throw new TypeError('needs must be an object of booleans');
  // Asking for some gradients (true) means only those; turning some off (false) keeps all the others.
  const fallback = !Object.values(needs).some((wanted) => wanted === true);
  return {
    input: needs.input ?? fallback,
    loraA: needs.loraA ?? fallback,
    loraB: needs.loraB ?? fallback,
    magnitude: needs.magnitude ?? fallback,
    bias: needs.bias ?? fallback,
  };
}

/** LoRA forward: y = x W0ᵀ + s (x_d Aᵀ) Bᵀ + bias. */
export function loraForward(args: LoraArgs): {
  /** y, the input's shape with `in` replaced by `out`. */
  output: Tensor;
  /** What loraBackward needs; dispose it when no backward follows. */
  saved: AdapterSaved;
} {
  const fn = 'loraForward';
  requireArgs(args, fn);
  const dropout = args.dropout ?? 0;
  const options = {
    scale: args.scale,
    eps: DEFAULT_NORM_EPS,
    detachNorm: true,
    dropout,
    seed: seedOf(args.seed, dropout),
  };
  const { output, hidden } = native.loraForward({
    input: handleOf(args.input, fn, 'input'),
    weight: handleOf(args.weight, fn, 'weight'),
    bias: optional(args.bias, fn, 'bias'),
    loraA: handleOf(args.loraA, fn, 'loraA'),
    loraB: handleOf(args.loraB, fn, 'loraB'),
    scale: options.scale,
    dropout: options.dropout,
    seed: options.seed,
  });
  const inputs = { input: args.input, weight: args.weight, bias: args.bias, loraA: args.loraA, loraB: args.loraB };
  return { output: tensorOf(output), saved: AdapterSaved.create('lora', inputs, { hidden }, options) };
}

/** LoRA backward; as doraBackward without a magnitude. Releases `saved`. */
export function loraBackward(saved: AdapterSaved, gradOutput: Tensor, needs?: GradientRequest): AdapterGradients {
  const fn = 'loraBackward';
  return consume(saved, 'lora', fn, ({ inputs, owned, options }) =>
    native.loraBackward({
      gradOutput: handleOf(gradOutput, fn, 'gradOutput'),
      input: inputs.input!,
      weight: inputs.weight!,
      bias: inputs.bias,
      loraA: inputs.loraA!,
      loraB: inputs.loraB!,
      hidden: owned.hidden,
      scale: options.scale,
      dropout: options.dropout,
      seed: options.seed,
      needs: withDefaults(needs),
    }),
  );
}

/** The factored weight whose row norms `doraWeightNorm` takes (and `doraMerge` merges). */
export interface WeightNormArgs {
  /** The frozen base weight W0, [out, in]. */
  weight: Tensor;
  /** A, [r, in]. */
  loraA: Tensor;
  /** B, [out, r]. */
  loraB: Tensor;
  /** s: alpha / r (or alpha / sqrt(r) for rsLoRA). */
  scale: number;
  /** Floor of the row norm (default 1e-6), as in the forward. */
  eps?: number;
}

/** n = max(||W0 + s B A||_row, eps), shape [out], from factored terms. */
export function doraWeightNorm(args: WeightNormArgs): Tensor {
  const fn = 'doraWeightNorm';
  requireArgs(args, fn);
  return tensorOf(
    native.doraWeightNorm({
      weight: handleOf(args.weight, fn, 'weight'),
      loraA: handleOf(args.loraA, fn, 'loraA'),
      loraB: handleOf(args.loraB, fn, 'loraB'),
      scale: args.scale,
      eps: args.eps ?? DEFAULT_NORM_EPS,
    }),
  );
}

/**
 * Runs a CPU kernel on operands that may live on the GPU: those are copied to the CPU and the result copied back
 * (merging is a one-off, so the copies cost little). Tensors on two devices are a TypeError naming both; anything
 * that is not a tensor is passed through for `compute`'s own checks.
 */
function viaCpu<T extends object>(fn: string, operands: T, compute: (operands: T) => Tensor): Tensor {
  const tensors = Object.entries(operands).filter((entry): entry is [string, Tensor] => entry[1] instanceof Tensor);
  const [firstName, first] = tensors[0] ?? ['', undefined];
  for (const [name, tensor] of tensors) {
    if (tensor.device !== first?.device) {
      throw new TypeError(
        `${fn}: ${firstName} is on '${first?.device}' but ${name} is on '${tensor.device}'; ` +
          'move one with .to() so both are on the same device',
      );
    }
  }
  if (first === undefined || first.device === 'cpu') return compute(operands);
  const copies: Tensor[] = [];
  try {
    const host = Object.fromEntries(
      Object.entries(operands).map(([name, value]) => {
        if (!(value instanceof Tensor)) return [name, value];
        const copy = value.to('cpu');
        copies.push(copy);
        return [name, copy];
      }),
    ) as T;
    const result = compute(host);
    copies.push(result);
    return result.to(first.device);
  } finally {
    for (const copy of copies) copy.dispose();
  }
}

interface MergeArgs {
  weight: Tensor;
  loraA: Tensor;
  loraB: Tensor;
  magnitude?: Tensor;
  scale: number;
  eps?: number;
}

interface UnmergeArgs {
  merged: Tensor;
  loraA: Tensor;
  loraB: Tensor;
  magnitude?: Tensor;
  norm?: Tensor;
  scale: number;
}

/** (m / n) ⊙ (W0 + s B A) with a magnitude, W0 + s B A without, on the operands' device. */
function merge(fn: string, args: MergeArgs, withMagnitude: boolean): Tensor {
  requireArgs(args, fn);
  return viaCpu(fn, args, (host) =>
    tensorOf(
      native.adapterMerge({
        weight: handleOf(host.weight, fn, 'weight'),
        loraA: handleOf(host.loraA, fn, 'loraA'),
        loraB: handleOf(host.loraB, fn, 'loraB'),
        magnitude: withMagnitude ? handleOf(host.magnitude, fn, 'magnitude') : undefined,
        scale: host.scale,
        eps: host.eps ?? DEFAULT_NORM_EPS,
      }),
    ),
  );
}

/** merged ⊙ (n / m) − s B A with a magnitude and its norm, merged − s B A without, on the operands' device. */
function unmerge(fn: string, args: UnmergeArgs, withMagnitude: boolean): Tensor {
  requireArgs(args, fn);
  return viaCpu(fn, args, (host) =>
    tensorOf(
      native.adapterUnmerge({
        merged: handleOf(host.merged, fn, 'merged'),
        loraA: handleOf(host.loraA, fn, 'loraA'),
        loraB: handleOf(host.loraB, fn, 'loraB'),
        magnitude: withMagnitude ? handleOf(host.magnitude, fn, 'magnitude') : undefined,
        norm: withMagnitude ? handleOf(host.norm, fn, 'norm') : undefined,
        scale: host.scale,
      }),
    ),
  );
}

/** The merged weight (m / n) ⊙ (W0 + s B A), [out, in], on the operands' device. */
export function doraMerge(args: WeightNormArgs & { magnitude: Tensor }): Tensor {
  return merge('doraMerge', args, true);
}

/** W0 back from a DoRA-merged weight: merged ⊙ (n / m) − s B A, with `norm` = doraWeightNorm before merging. */
export function doraUnmerge(args: {
  merged: Tensor;
  loraA: Tensor;
  loraB: Tensor;
  magnitude: Tensor;
  norm: Tensor;
  scale: number;
}): Tensor {
  return unmerge('doraUnmerge', args, true);
}

/** The merged weight W0 + s B A. */
export function loraMerge(args: { weight: Tensor; loraA: Tensor; loraB: Tensor; scale: number }): Tensor {
  return merge('loraMerge', args, false);
}

/** W0 back from a LoRA-merged weight: merged − s B A. */
export function loraUnmerge(args: { merged: Tensor; loraA: Tensor; loraB: Tensor; scale: number }): Tensor {
  return unmerge('loraUnmerge', args, false);
}

/**
 * The plain double-precision references of the adapter layer, which form V = W0 + s B A explicitly: for tests and
 * for anyone checking another implementation. Without `magnitude` they compute LoRA.
 */
export const reference = {
  /** The layer's output y, computed in float64 from the explicit V (and its row norms, with `magnitude`). */
  forward(args: LoraArgs & { magnitude?: Tensor; eps?: number }): Tensor {
    const fn = 'reference.forward';
    requireArgs(args, fn);
    return tensorOf(
      native.adapterForwardReference({
        input: handleOf(args.input, fn, 'input'),
        weight: handleOf(args.weight, fn, 'weight'),
        bias: optional(args.bias, fn, 'bias'),
        loraA: handleOf(args.loraA, fn, 'loraA'),
        loraB: handleOf(args.loraB, fn, 'loraB'),
        magnitude: optional(args.magnitude, fn, 'magnitude'),
        scale: args.scale,
        eps: args.eps ?? DEFAULT_NORM_EPS,
        dropout: args.dropout ?? 0,
        seed: args.seed ?? 0,
      }),
    );
  },
  /**
   * Every gradient of the layer for dL/dy = `gradOutput`, computed in float64 from the explicit V; the norm is
   * detached unless `detachNorm` is false.
   */
  backward(
    args: LoraArgs & { magnitude?: Tensor; eps?: number; detachNorm?: boolean },
    gradOutput: Tensor,
  ): AdapterGradients {
    const fn = 'reference.backward';
    requireArgs(args, fn);
    return wrapGrads(
      native.adapterBackwardReference({
        gradOutput: handleOf(gradOutput, fn, 'gradOutput'),
        input: handleOf(args.input, fn, 'input'),
        weight: handleOf(args.weight, fn, 'weight'),
        bias: optional(args.bias, fn, 'bias'),
        loraA: handleOf(args.loraA, fn, 'loraA'),
        loraB: handleOf(args.loraB, fn, 'loraB'),
        magnitude: optional(args.magnitude, fn, 'magnitude'),
        scale: args.scale,
        eps: args.eps ?? DEFAULT_NORM_EPS,
        detachNorm: args.detachNorm ?? true,
        dropout: args.dropout ?? 0,
        seed: args.seed ?? 0,
      }),
    );
  },
};

// ---- differentiable layers over the fused kernels --------------------------------------------------------------

function refuseWeightGrad(weight: Tensor, functionName: string): void {
  if (weight.requiresGrad) {
    throw new TypeError(`${functionName}: weight must be frozen (requiresGrad false); adapters train A, B and m`);
  }
}

/**
 * The DoRA layer as a differentiable op: the output records a node whose backward calls the fused backward, asking
 * only for the gradients that lead to tensors requiring them (so a magnitude-only backward skips the A and B
 * products). The frozen weight never gets a gradient.
 */
export function doraLinear(args: DoraArgs): Tensor {
  refuseWeightGrad(args.weight, 'doraLinear');
  const differentiable = [args.input, args.loraA, args.loraB, args.magnitude, args.bias];
  const { output, saved } = doraForward(args);
  if (!isGradEnabled() || !differentiable.some((tensor) => tensor?.requiresGrad)) {
    saved.dispose();
    return output;
  }
  return record(
    output,
    'doraLinear',
    differentiable,
    (store) => {
      store.onRelease(() => saved.dispose());
      return (gradOutput, [input, loraA, loraB, magnitude, bias]) => {
        const grads = doraBackward(saved, gradOutput, { input, loraA, loraB, magnitude, bias: bias ?? false });
        return [grads.input, grads.loraA, grads.loraB, grads.magnitude, grads.bias];
      };
    },
    () => saved.verify('doraLinear'),
  );
}

/** The LoRA layer as a differentiable op (see doraLinear). */
export function loraLinear(args: LoraArgs): Tensor {
  refuseWeightGrad(args.weight, 'loraLinear');
  const differentiable = [args.input, args.loraA, args.loraB, args.bias];
  const { output, saved } = loraForward(args);
  if (!isGradEnabled() || !differentiable.some((tensor) => tensor?.requiresGrad)) {
    saved.dispose();
    return output;
  }
  return record(
    output,
    'loraLinear',
    differentiable,
    (store) => {
      store.onRelease(() => saved.dispose());
      return (gradOutput, [input, loraA, loraB, bias]) => {
        const grads = loraBackward(saved, gradOutput, { input, loraA, loraB, bias: bias ?? false });
        return [grads.input, grads.loraA, grads.loraB, grads.bias];
      };
    },
    () => saved.verify('loraLinear'),
  );
}
