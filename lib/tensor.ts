// The Tensor class: float32, contiguous, row-major data in native memory, with explicit and scoped disposal.
// autograd.ts and ops/shape.ts import this module too; each side uses the other only inside functions, so the cycle
// is harmless.
import { backward as runBackward, type BackwardOptions, releaseOrphanedGraphs } from './autograd';
import { type Device, type DType, native, type NativeTensorHandle } from './binding';
import { reshape as reshapeOp } from './ops/shape';
import { freshSeed } from './random';

/** Dimensions, outermost first: 0 to 4 non-negative integers ([] is a scalar). */
export type Shape = readonly number[];

/** Where a new tensor is made. */
export interface DeviceOptions {
  /** Where the tensor lives: 'cpu' (the default) or 'cuda' (see `devices()`). */
  device?: Device;
}

/** The seed and device of a random tensor; without a seed, one is drawn from `freshSeed()`. */
export interface RandomOptions extends DeviceOptions {
  /** Any integer from 0 to 2^53 - 1; the same seed gives the same numbers on every machine, thread count and device. */
  seed?: number;
}

/**
 * How an op's output was made, for reverse-mode differentiation (see autograd.ts). `backward` returns the gradient
 * of each input (undefined where `needs` is false or there is none) as fresh tensors the caller owns.
 */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly (Tensor | undefined)[];
  backward(gradOutput: Tensor, needs: readonly boolean[]): (Tensor | undefined)[];
  /** Throws a TypeError naming the op and the tensor when a tensor saved for backward was changed in place since. */
  verify(): void;
  /** Frees what the node saved for backward. */
  release(): void;
}

// Tensors that are made and freed within one synchronous task (a training step inside tidy) are never reported to
// V8's garbage collector, which could not have freed them and whose collections would only slow the step; those
// still alive when the event loop next turns are reported then (native/core/memory.h, ExternalMemory).
let reportScheduled = false;
const nextTurn = setImmediate; // the real one, even where a test framework fakes timers later
function scheduleMemoryReport(): void {
  if (reportScheduled) return;
  reportScheduled = true;
  nextTurn(() => {
    reportScheduled = false;
    native.reportExternalMemory();
  }).unref();
}

let unwrapHandle: (tensor: Tensor) => NativeTensorHandle;
let wrapHandle: (handle: NativeTensorHandle) => Tensor;

/**
 * A tensor of float32 values in native, 64-byte-aligned memory. Rank 0 to 4, contiguous, row-major. Frozen weights may
 * instead be bfloat16 (`dtype`), which products, embeddings and the adapter layers read directly.
 */
export class Tensor {
  #handle: NativeTensorHandle;
  // Read once: a disposed handle no longer knows them.
  readonly #device: Device;
  readonly #dtype: DType;
  /** Dimensions, outermost first. */
  readonly shape: Shape;
  /** Number of elements. */
  readonly size: number;
  /** The accumulated gradient of a leaf that requires one, after `backward()`. */
  grad: Tensor | undefined;
  #requiresGrad = false;
  /** @internal The op that made this tensor, while a graph is recorded. */
  gradNode: GradNode | undefined;

  static {
    unwrapHandle = (tensor) => tensor.#handle;
    wrapHandle = (handle) => new Tensor(handle);
  }

  private constructor(handle: NativeTensorHandle) {
    this.#handle = handle;
    this.shape = Object.freeze(handle.shape);
    this.#device = handle.device;
    this.#dtype = handle.dtype;
    this.size = this.shape.reduce((count, dim) => count * dim, 1);
    scopes.at(-1)?.created.add(this);
    scheduleMemoryReport();
  }

  /**
   * A tensor holding a copy of `data` (a Float32Array or an array of numbers); `shape` defaults to 1-D. Every
   * creation function takes `{ device }` to make the tensor elsewhere: `Tensor.from(data, shape, { device: 'cuda' })`.
   */
  static from(data: Float32Array | readonly number[], shape?: Shape, options: DeviceOptions = {}): Tensor {
    let values: Float32Array;
    if (data instanceof Float32Array) {
      values = data;
    } else if (Array.isArray(data)) {
      values = new Float32Array(data.length);
      data.forEach((value: unknown, index) => {
        if (typeof value !== 'number') {
          throw new TypeError(`Tensor.from: data[${index}] must be a number, got ${typeof value}`);
        }
        values[index] = value;
      });
    } else {
      throw new TypeError(`Tensor.from: data must be a Float32Array or an array of numbers, got ${describe(data)}`);
    }
    return onDevice(native.fromFloat32Array({ data: values, shape: shape ?? [values.length] }), options, 'Tensor.from');
  }

  /**
   * A bfloat16 tensor holding a copy of `bits`, bfloat16 values given as their 16 bits (as safetensors stores them),
   * without a round trip through float32. Such a tensor holds a frozen weight: it cannot require grad.
   */
  static fromBFloat16(bits: Uint16Array, shape?: Shape, options: DeviceOptions = {}): Tensor {
    if (!(bits instanceof Uint16Array)) {
      throw new TypeError(`Tensor.fromBFloat16: bits must be a Uint16Array, got ${describe(bits)}`);
    }
    return onDevice(native.fromBFloat16({ bits, shape: shape ?? [bits.length] }), options, 'Tensor.fromBFloat16');
  }

  /** A tensor of zeros. A RangeError when `shape` is not 0 to 4 non-negative integers. */
  static zeros(shape: Shape, options: DeviceOptions = {}): Tensor {
    return onDevice(native.full({ shape, value: 0 }), options, 'Tensor.zeros');
  }

  /** A tensor of ones. A RangeError when `shape` is not 0 to 4 non-negative integers. */
  static ones(shape: Shape, options: DeviceOptions = {}): Tensor {
    return onDevice(native.full({ shape, value: 1 }), options, 'Tensor.ones');
  }

  /** A tensor of `value` everywhere. A RangeError for a bad shape, a TypeError when `value` is not a number. */
  static full(shape: Shape, value: number, options: DeviceOptions = {}): Tensor {
    return onDevice(native.full({ shape, value }), options, 'Tensor.full');
  }

  /** Normal samples, N(mean, std²) (defaults 0 and 1). */
  static randn(shape: Shape, options: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
    return onDevice(
      native.randn({ shape, seed: seedOf(options), mean: options.mean ?? 0, std: options.std ?? 1 }),
      options,
      'Tensor.randn',
    );
  }

  /** Uniform samples on [low, high) (defaults 0 and 1). */
  static uniform(shape: Shape, options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
    return onDevice(
      native.uniform({ shape, seed: seedOf(options), low: options.low ?? 0, high: options.high ?? 1 }),
      options,
      'Tensor.uniform',
    );
  }

  /** Where the values live and this tensor's ops run: 'cpu' or 'cuda'. */
  get device(): Device {
    return this.#device;
  }

  /** What the elements are: 'float32', or 'bfloat16' for a frozen weight kept in half the memory. */
  get dtype(): DType {
    return this.#dtype;
  }

  /**
   * This tensor on `device` ('cpu' or 'cuda'), or as `dtype` ('float32' or 'bfloat16'): itself when it is so already
   * (as in PyTorch), else a copy outside any graph. An op takes tensors on one device and returns its result there;
   * mixing devices is a TypeError naming both. To bfloat16, values round to nearest even; a tensor that requires grad
   * cannot become bfloat16 (trainable tensors stay float32).
   */
  to(target: Device | DType): Tensor {
    const handle = handleOf(this, 'to', 'tensor');
    if (target === 'float32' || target === 'bfloat16') {
      if (target === this.#dtype) return this;
      if (target === 'bfloat16' && this.requiresGrad) {
        throw new TypeError('to: a tensor that requires grad cannot become bfloat16 (trainable tensors stay float32)');
      }
      return new Tensor(native.cast({ x: handle, dtype: target }));
    }
    if (typeof target !== 'string') {
      throw new TypeError(`to: device must be 'cpu' or 'cuda' (or a dtype), got ${describe(target)}`);
    }
    if (target === handle.device) return this;
    return new Tensor(native.toDevice({ x: handle, device: target }));
  }

  /** Number of dimensions, 0 (scalar) to 4. */
  get rank(): number {
    return this.shape.length;
  }

  /** Whether `dispose()` (or an enclosing `tidy`) freed the values; any use of a disposed tensor is a TypeError. */
  get isDisposed(): boolean {
    return this.#handle.disposed;
  }

  /** Whether gradients flow to this tensor: set it on parameters (leaves); op outputs inherit it. */
  get requiresGrad(): boolean {
    return this.#requiresGrad;
  }

  /**
   * Makes this tensor a leaf that collects `.grad`, or stops it. A TypeError for a non-boolean, or for false on an op
   * output (which requires grad through its inputs: use `detach()`).
   */
  set requiresGrad(value: boolean) {
    if (typeof value !== 'boolean') throw new TypeError('requiresGrad must be a boolean');
    if (value && this.#dtype === 'bfloat16') {
      throw new TypeError("requiresGrad: a bfloat16 tensor holds a frozen weight; train a .to('float32') copy");
    }
    if (!value && this.gradNode !== undefined) {
      throw new TypeError('requiresGrad: an op output cannot stop requiring grad; use detach()');
    }
    this.#requiresGrad = value;
  }

  /** Marks this tensor as a parameter that gradients flow to; returns it. */
  requireGrad(): this {
    this.requiresGrad = true;
    return this;
  }

  /** A view of the same values with another shape (one dim may be -1); no copy. */
  reshape(shape: Shape): Tensor {
    return reshapeOp(this, shape);
  }

  /** A copy of the values in storage of its own, on the same device and outside any graph. */
  clone(): Tensor {
    const handle = handleOf(this, 'clone', 'tensor');
    return new Tensor(native.toDevice({ x: handle, device: handle.device }));
  }

  /** A new tensor sharing these values (no copy: in-place changes show through) but outside any graph. */
  detach(): Tensor {
    return new Tensor(native.reshape({ x: handleOf(this, 'detach', 'tensor'), shape: this.shape }));
  }

  /**
   * Backpropagates from this tensor (a scalar unless `gradient` is given) and accumulates into the `.grad` of every
   * leaf that requires grad, or only of `inputs` when given.
   */
  backward(options: BackwardOptions = {}): void {
    runBackward(this, options);
  }

  /** A copy of the values, row-major. */
  toFloat32Array(): Float32Array {
    return handleOf(this, 'toFloat32Array', 'tensor').read();
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new RangeError(`item: expected a tensor of one element, got shape [${this.shape}]`);
    return this.toFloat32Array()[0];
  }

  /**
   * Overwrites the values in place (same number of elements), as optimizers and checkpoint restores do. Not
   * differentiable. A graph that saved this tensor for backward notices: its backward throws a TypeError naming the
   * op, rather than computing a gradient from the new values.
   */
  copyFrom(source: Tensor | Float32Array): this {
    if (this.gradNode !== undefined) throw new TypeError('copyFrom: cannot overwrite an op output in a recorded graph');
    const values = source instanceof Tensor ? source.toFloat32Array() : source;
    if (!(values instanceof Float32Array)) throw new TypeError('copyFrom: source must be a Tensor or a Float32Array');
    handleOf(this, 'copyFrom', 'tensor').write(values);
    return this;
  }

  /** Frees the native memory now. Idempotent; any later use throws a TypeError. */
  dispose(): void {
    this.#handle.dispose();
  }

  /** Shape and disposal only: the values stay in native memory (read them with `toFloat32Array()`). */
  toString(): string {
    const dtype = this.#dtype === 'float32' ? '' : `, dtype=${this.#dtype}`;
    return `Tensor(shape=[${this.shape.join(', ')}]${dtype}${this.isDisposed ? ', disposed' : ''})`;
  }
}

/** @internal A second tensor over the same storage, so a graph node can keep values alive after users dispose. */
export function share(tensor: Tensor): Tensor {
  return keep(tensorOf(native.reshape({ x: handleOf(tensor, 'share', 'tensor'), shape: tensor.shape })));
}

/** `handle` (made on the CPU) as a tensor on the device `options` name, moving it there when that is not the CPU. */
function onDevice(handle: NativeTensorHandle, options: DeviceOptions, functionName: string): Tensor {
  if (options === null || typeof options !== 'object') {
    handle.dispose();
    throw new TypeError(`${functionName}: options must be an object, got ${describe(options)}`);
  }
  const device = options.device ?? 'cpu';
  if (device === 'cpu') return tensorOf(handle);
  try {
    return tensorOf(native.toDevice({ x: handle, device }));
  } catch (error) {
    if (error instanceof Error) error.message = error.message.replace('Tensor.to:', `${functionName}:`);
    throw error;
  } finally {
    handle.dispose();
  }
}

function seedOf(options: RandomOptions): number {
  return options.seed ?? freshSeed();
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (ArrayBuffer.isView(value)) return value.constructor.name;
  return typeof value;
}

/** The live native handle of `tensor`, or a TypeError naming `function`'s argument `name`. */
export function handleOf(tensor: unknown, functionName: string, name: string): NativeTensorHandle {
  if (!(tensor instanceof Tensor)) {
    throw new TypeError(`${functionName}: ${name} must be a Tensor, got ${describe(tensor)}`);
  }
  const handle = unwrapHandle(tensor);
  if (handle.disposed) throw new TypeError(`${functionName}: ${name} is a disposed Tensor`);
  return handle;
}

/**
 * @internal The version of `tensor`'s storage, which every in-place change bumps (write, axpy, optimizer steps): a
 * value saved for backward is unchanged while its version is.
 */
export function storageVersion(tensor: Tensor): number {
  return unwrapHandle(tensor).version;
}

/** Wraps a handle fresh from the addon (used by ops). */
export function tensorOf(handle: NativeTensorHandle): Tensor {
  return wrapHandle(handle);
}

// ---- scoped disposal -------------------------------------------------------------------------------------------

interface Scope {
  /** Tensors made in the scope, disposed at its end unless returned. */
  created: Set<Tensor>;
  /** Tensors taken out of the scope by keep(): they may still be differentiated later. */
  kept: Tensor[];
}

const scopes: Scope[] = [];

/** What a tidy function may return: tensors, possibly inside arrays, maps, sets or plain objects, kept past the scope. */
export type TensorContainer =
  Tensor | TensorContainer[] | { [key: string]: TensorContainer } | number | string | boolean | null | undefined | void;

function collect(value: unknown, into: Set<Tensor>, seen: Set<unknown>): void {
  if (value instanceof Tensor) {
    into.add(value);
  } else if (value !== null && typeof value === 'object' && !seen.has(value)) {
    seen.add(value);
    const items = Array.isArray(value)
      ? value
      : value instanceof Map || value instanceof Set
        ? [...value.values()]
        : Object.values(value);
    for (const item of items) collect(item, into, seen);
  }
}

/**
 * Runs `fn` and disposes every tensor created during it, except those it returns (found inside arrays, maps, sets
 * and plain objects too). Scopes nest: what an inner scope returns belongs to the outer one.
 */
export function tidy<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError('tidy: fn must be a function');
  const scope: Scope = { created: new Set(), kept: [] };
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    scopes.pop();
    discard(scope, []);
    throw error;
  }
  scopes.pop();
  if (result instanceof Promise) {
    discard(scope, []);
    throw new TypeError('tidy: fn must be synchronous (it returned a Promise)');
  }
  const returned = new Set<Tensor>();
  collect(result, returned, new Set());
  const parent = scopes.at(-1);
  const survivors = [...scope.kept, ...returned];
  for (const tensor of scope.created) {
    if (returned.has(tensor)) parent?.created.add(tensor);
  }
  if (parent) parent.kept.push(...scope.kept);
  discard(scope, survivors);
  return result;
}

/** Disposes what the scope made except `survivors`, and frees the graph nodes no survivor can reach any more. */
function discard(scope: Scope, survivors: readonly Tensor[]): void {
  const keptSet = new Set(survivors);
  const discarded = [...scope.created].filter((tensor) => !keptSet.has(tensor));
  for (const tensor of discarded) tensor.dispose();
  releaseOrphanedGraphs(discarded, survivors);
}

/** Stops `tensor` from being disposed by the enclosing tidy scopes. */
export function keep<T extends Tensor>(tensor: T): T {
  for (const scope of scopes) scope.created.delete(tensor);
  if (tensor.gradNode !== undefined) scopes.at(-1)?.kept.push(tensor);
  return tensor;
}

/** What `memory()` reports: counts and bytes of native memory, for leak checks and sizing. */
export interface MemoryInfo {
  /** Live tensors of this thread: neither disposed nor collected. */
  tensors: number;
  /** Live native buffers: tensor storage plus caches (and kernel scratch while a call runs). */
  buffers: number;
  /** Bytes those buffers hold. */
  bytes: number;
  /** Highest `bytes` since the last `resetPeakMemory()`, kernel scratch included. */
  peakBytes: number;
  /** Reusable kernel workspaces of the whole process (GEMM packing panels), not counted in `bytes`. */
  workspaceBytes: number;
  /**
   * Freed buffers the whole process keeps for reuse by later ones of about their size (at most 1 GiB, see
   * `setCacheLimit`), so a training step does not fault in fresh pages for its activations; not counted in
   * `bytes`. `emptyCache()` hands them back to the system.
   */
  cachedBytes: number;
  /** GPU memory of this thread's live tensors (0 without a GPU). */
  deviceBytes: number;
  /** Storage of this thread's live bfloat16 tensors on either device, also counted in `bytes` or `deviceBytes`. */
  bfloat16Bytes: number;
}

/** Native memory of this thread's environment (each worker thread has its own). */
export function memory(): MemoryInfo {
  const counts = native.memory();
  return {
    tensors: counts.tensors,
    buffers: counts.buffers,
    bytes: counts.bytes,
    peakBytes: counts.peakBytes,
    workspaceBytes: counts.workspaceBytes,
    cachedBytes: counts.cachedBytes,
    deviceBytes: counts.deviceBytes,
    bfloat16Bytes: counts.bfloat16Bytes,
  };
}

/**
 * Hands the freed buffers kept for reuse (`memory().cachedBytes`) back to the system, and on a GPU the free blocks of
 * the device's memory pool back to the driver (after waiting for queued kernels); returns how many bytes.
 */
export function emptyCache(): number {
  return native.emptyCache();
}

/**
 * The most bytes of freed buffers the process keeps for reuse (default 1 GiB; 0 turns the cache off). Keeping a
 * buffer past it frees the ones kept longest ago. Returns the previous limit.
 */
export function setCacheLimit(bytes: number): number {
  return native.setCacheLimit(bytes);
}

/** Restarts `memory().peakBytes` from what is live now. */
export function resetPeakMemory(): void {
  native.resetPeakMemory();
}
