// The typed declaration of everything the native addon exports, and the loader that finds the built addon.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** The native storage behind a Tensor. Owned by exactly one Tensor; never handed to users. */
export interface NativeTensorHandle {
  readonly shape: number[];
  readonly disposed: boolean;
  /** Bumped by every in-place change (write, axpy). */
  readonly version: number;
  /** Where the contents live. */
  readonly device: Device;
  /** What the elements are. */
  readonly dtype: DType;
  /** [sync] A copy of the contents. */
  read(): Float32Array;
  /** [sync] Copies `data` in. RangeError unless `data.length` equals the size. */
  write(data: Float32Array): void;
  /** [sync] Frees the storage now. Idempotent. */
  dispose(): void;
}

/** A CPU kernel path: portable C++, AVX2 + FMA, or AVX-512 (F, BW, DQ, VL). */
export type Isa = 'generic' | 'avx2' | 'avx512';

/** What {@link buildInfo} reports: the addon's build, the kernel path and threads in use. */
export interface BuildInfo {
  /** The package version the addon was built from. */
  version: string;
  /** Instruction-set paths compiled into the addon. */
  isaCompiled: Isa[];
  /** Paths this CPU can run. */
  isaSupported: Isa[];
  /** The path kernels use now (`BIDORA_ISA` or the best supported). */
  isa: Isa;
  /** Threads a parallel kernel uses now. */
  threads: number;
  /** Threads in the native pool: poolThreadsRequested, or fewer when the system refused to create some. */
  poolThreads: number;
  /** The pool size asked for: `BIDORA_NUM_THREADS` or the cores this process may use. */
  poolThreadsRequested: number;
  /** Whether the CUDA backend was compiled in. */
  cuda: boolean;
  /** Whether the MPI collectives of data-parallel training were compiled in (CMake found mpi.h). */
  mpi: boolean;
  /**
   * Whether this CPU has AVX512-BF16: with the avx512 path, products with bfloat16 weights then round the activations
   * to bfloat16 and run vdpbf16ps (twice the multiply-adds of float32); elsewhere the weights are widened to float32.
   */
  avx512Bf16: boolean;
  /** The addon file loaded: a prebuild from the package's prebuilds/ folder, or one compiled on this machine. */
  addon: string;
}

/** Where a tensor's contents live and its ops run. */
export type Device = 'cpu' | 'cuda';

/**
 * What a tensor's elements are: float32, or bfloat16 (the upper half of a float32: 8 bits of mantissa), the storage
 * of frozen base weights loaded with `{ dtype: 'bfloat16' }`. Trainable tensors, activations and gradients are float32.
 */
export type DType = 'float32' | 'bfloat16';

/** How GPU products round float32 inputs (as PyTorch's set_float32_matmul_precision); the CPU is always float32. */
export type MatmulPrecision = 'highest' | 'high' | 'medium';

export interface NativeMemory {
  /** Live tensor handles of this thread's environment. */
  tensors: number;
  /** Live native buffers charged to this thread's environment (tensors, plus kernel scratch during a call). */
  buffers: number;
  bytes: number;
  /** Highest `bytes` since the last `resetPeakMemory()`. */
  peakBytes: number;
  /** Reusable per-thread kernel workspaces (GEMM packing panels), shared by the whole process. */
  workspaceBytes: number;
  /** Freed buffers the whole process keeps for reuse by later ones of about their size (bounded). */
  cachedBytes: number;
  /** GPU memory of this thread's live tensors. */
  deviceBytes: number;
  /** bfloat16 tensor storage, on either device (also counted in `bytes` or `deviceBytes`). */
  bfloat16Bytes: number;
}

type Handle = NativeTensorHandle;

/** One argument of a native op, as the addon declares it (native/binding/op.h). */
export interface NativeOpArgument {
  name: string;
  kind:
    | 'tensor'
    | 'tensorList'
    | 'number'
    | 'integer'
    | 'boolean'
    | 'shape'
    | 'int32Array'
    | 'float32Array'
    | 'string'
    | 'flags';
  optional: boolean;
  /** Updated in place. */
  written: boolean;
}

/** A native op as declared: its named arguments, where it runs, and which backends have its kernel. */
export interface NativeOp {
  name: string;
  /** 'any': on its tensors' device; 'cpu': the CPU only. */
  runs: 'any' | 'cpu';
  cpu: boolean;
  /** Whether a CUDA kernel was compiled in (false in CPU-only builds). */
  cuda: boolean;
  args: NativeOpArgument[];
}

/**
 * Every native function; each validates its arguments and throws TypeError or RangeError naming them. Ops take one
 * object of named arguments, declared once in native/binding (test/op-contract.test.ts holds this interface to them).
 */
export interface NativeBinding {
  TensorHandle: abstract new () => NativeTensorHandle;
  /** [sync] All of BuildInfo but `addon`, which the loader knows. */
  buildInfo(): Omit<BuildInfo, 'addon'>;
  /** [sync] Every op the addon declares, with its arguments. */
  ops(): NativeOp[];
  setIsa(isa: string): Isa;
  setNumThreads(threads: number): number;
  memory(): NativeMemory;
  /** [sync] Tells V8 of the live tensors' host memory it has not been told of yet (native/core/memory.h, ExternalMemory). */
  reportExternalMemory(): void;
  resetPeakMemory(): void;
  emptyCache(): number;
  setCacheLimit(bytes: number): number;
  setMatmulPrecision(precision: MatmulPrecision): MatmulPrecision;
  /**
   * [sync] One MPI collective (native/mpi), every wait bounded by `timeout` seconds (then an Error naming the
   * collective and the time waited; the communicator is then unusable): 'init' (once per process, idempotent;
   * writes this process's rank and the world's size into `tensors[0]`, of two or more elements, when given),
   * 'allreduceMean' and 'allreduceSum' (each of `tensors` replaced in place by its mean or sum over the ranks),
   * 'broadcast' (by rank 0's), 'barrier', 'finalize'. RangeError in builds without MPI.
   */
  mpi(args: { collective: string; tensors: Handle[]; timeout: number }): void;
  /** [sync] A copy of x on `device` (also when x is there already). */
  toDevice(args: { x: Handle; device: Device }): Handle;
  /** [sync] A copy of x as `dtype` on x's device (to bfloat16: rounded to nearest even). */
  cast(args: { x: Handle; dtype: DType }): Handle;

  // ---- creation (native/binding/tensor_handle.cc): on the CPU; lib/tensor.ts moves results where asked ----

  /** [sync] A copy of `data` with `shape`. */
  fromFloat32Array(args: { data: Float32Array; shape: readonly number[] }): Handle;
  /** [sync] A bfloat16 tensor holding a copy of `bits` (bfloat16 values as their 16 bits) with `shape`. */
  fromBFloat16(args: { bits: Uint16Array; shape: readonly number[] }): Handle;
  full(args: { shape: readonly number[]; value: number }): Handle;
  /** [sync] Seeded samples: element i depends on (seed, i) alone. seed an integer from 0 to 2^53 − 1. */
  randn(args: { shape: readonly number[]; seed: number; mean: number; std: number }): Handle;
  uniform(args: { shape: readonly number[]; seed: number; low: number; high: number }): Handle;
  /** [sync] A view of x's storage with another shape of the same size, on x's device. */
  reshape(args: { x: Handle; shape: readonly number[] }): Handle;

  // ---- products (native/binding/ops_nn.cc), on the operands' device ----

  /** [sync] a [..., M, K] (or [..., K, M] transposed) times b [..., K, N] (or [..., N, K]); b of rank 2 is shared. */
  matmul(args: { a: Handle; b: Handle; transposeA?: boolean; transposeB?: boolean }): Handle;
  /** [sync] input [..., K] weightᵀ (weight [M, K]) + bias [M]. */
  linear(args: { input: Handle; weight: Handle; bias?: Handle }): Handle;

  // ---- elementwise and reductions (native/binding/ops_elementwise.cc), on the tensors' device ----

  /** [sync] a op b; b has a's shape or its trailing dims (a bias over rows). */
  add(args: { a: Handle; b: Handle }): Handle;
  sub(args: { a: Handle; b: Handle }): Handle;
  mul(args: { a: Handle; b: Handle }): Handle;
  /** [sync] alpha · a. */
  scale(args: { a: Handle; alpha: number }): Handle;
  /** [sync] y += alpha · x in place. */
  axpy(args: { y: Handle; alpha: number; x: Handle }): void;
  /** [sync] Over one axis (negative counts from the end), or over everything when axis is absent. */
  sum(args: { a: Handle; axis?: number; keepDims?: boolean }): Handle;
  /** [sync] sqrt(Σ x²) over every element of every tensor, in double. */
  globalNorm(args: { tensors: Handle[] }): number;
  /** [sync] `shape` filled with a repeated along `axis` (a lacks it), or with a's one value: sum's gradient. */
  broadcastAxis(args: { a: Handle; shape: readonly number[]; axis?: number }): Handle;
  /** [sync] A copy of a[..., start : start + length, ...] along `axis`. */
  narrow(args: { a: Handle; axis: number; start: number; length: number }): Handle;
  /** [sync] Zeros of `shape` with grad at [start, start + its length) along `axis`: narrow's gradient. */
  narrowBackward(args: { grad: Handle; shape: readonly number[]; axis: number; start: number }): Handle;

  // ---- the fused DoRA and LoRA layer (native/binding/ops_adapter.cc); merge, unmerge and references on the CPU ----

  /** [sync] DoRA forward: the output and what backward needs (u = x W0ᵀ + s h Bᵀ, h, n, W0 Aᵀ, A Aᵀ). */
  doraForward(args: NativeDoraArgs): { output: Handle } & NativeDoraSaved;
  /** [sync] Consumes (overwrites) `combined`; bias only tells whether a bias gradient exists. */
  doraBackward(
    args: NativeDoraArgs & NativeDoraSaved & NativeBackwardArgs & { detachNorm?: boolean },
  ): NativeAdapterGrads;
  loraForward(args: NativeLoraArgs): { output: Handle; hidden: Handle };
  loraBackward(args: NativeLoraArgs & NativeBackwardArgs & { hidden: Handle }): NativeAdapterGrads;
  /** [sync] max(‖W0 + s·B·A‖ per row, eps), without forming B·A. */
  doraWeightNorm(args: NativeLayerArgs & { eps: number }): Handle;
  /** [sync] (m / n) ⊙ (W0 + s·B·A) with a magnitude (DoRA), W0 + s·B·A without (LoRA). */
  adapterMerge(args: NativeLayerArgs & { magnitude?: Handle; eps: number }): Handle;
  /** [sync] The inverse of adapterMerge; DoRA needs the norm from before merging and non-zero magnitudes. */
  adapterUnmerge(args: {
    merged: Handle;
    loraA: Handle;
    loraB: Handle;
    magnitude?: Handle;
    norm?: Handle;
    scale: number;
  }): Handle;
  /** [sync] The plain double-precision reference (forms V); magnitude absent = LoRA. */
  adapterForwardReference(args: NativeLoraArgs & { magnitude?: Handle; eps: number }): Handle;
  adapterBackwardReference(
    args: NativeLoraArgs & { magnitude?: Handle; eps: number; detachNorm?: boolean; gradOutput: Handle },
  ): NativeAdapterGrads;

  // ---- neural-network kernels (native/binding/ops_nn.cc) ----
  // Float tensors are read with their last axis as D and every other axis as rows. Integer ids and labels are
  // Int32Arrays, checked against their range. Every gradient is a fresh tensor (callers accumulate).

  /** [sync] GELU, erf form: 0.5·x·(1 + erf(x/√2)) (BERT's `hidden_act: "gelu"`). */
  gelu(args: { x: Handle }): Handle;
  geluBackward(args: { x: Handle; gradOutput: Handle }): Handle;
  /**
   * [sync] GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (GPT-2's `activation_function:
   * "gelu_new"`, transformers' `gelu_pytorch_tanh`).
   */
  geluTanh(args: { x: Handle }): Handle;
  geluTanhBackward(args: { x: Handle; gradOutput: Handle }): Handle;
  /** [sync] SiLU (swish): x·σ(x) (Llama's `hidden_act: "silu"`). */
  silu(args: { x: Handle }): Handle;
  siluBackward(args: { x: Handle; gradOutput: Handle }): Handle;
  relu(args: { x: Handle }): Handle;
  reluBackward(args: { x: Handle; gradOutput: Handle }): Handle;
  tanh(args: { x: Handle }): Handle;
  /** [sync] From the forward's output: gradOutput·(1 − output²). */
  tanhBackward(args: { output: Handle; gradOutput: Handle }): Handle;
  /** [sync] Over the last axis D; gamma and beta [D]; eps > 0 added to the biased variance. mean, rstd: [rows]. */
  layerNorm(args: { x: Handle; gamma: Handle; beta: Handle; eps: number }): {
    output: Handle;
    mean: Handle;
    rstd: Handle;
  };
  layerNormBackward(args: { gradOutput: Handle; x: Handle; gamma: Handle; mean: Handle; rstd: Handle }): {
    input: Handle;
    gamma: Handle;
    beta: Handle;
  };
  /**
   * [sync] Llama's RMSNorm over the last axis D (native/binding/ops_decoder.cc): weight ⊙ x / sqrt(mean(x²) + eps),
   * weight [D], eps > 0. rstd: [rows], saved for rmsNormBackward.
   */
  rmsNorm(args: { x: Handle; weight: Handle; eps: number }): { output: Handle; rstd: Handle };
  rmsNormBackward(args: { gradOutput: Handle; x: Handle; weight: Handle; rstd: Handle }): {
    input: Handle;
    weight: Handle;
  };
  /** [sync] silu(gate) ⊙ up (Llama's MLP before down_proj); gate and up of one shape. */
  swiglu(args: { gate: Handle; up: Handle }): Handle;
  swigluBackward(args: { gate: Handle; up: Handle; gradOutput: Handle }): { gate: Handle; up: Handle };
  /**
   * [sync] Over the last axis. `mask` [x.shape[0], x.shape[last]] broadcasts over the middle axes; 0 masks, any other
   * value attends. Masked entries are exactly 0; a fully masked row is all zeros.
   */
  softmax(args: { x: Handle; mask?: Handle }): Handle;
  /** [sync] output ⊙ (gradOutput − Σ gradOutput·output) per row. */
  softmaxBackward(args: { output: Handle; gradOutput: Handle }): Handle;
  /** [sync] Rows of weight [V, D] at ids → [ids.length, D]. RangeError names an id outside [0, V) and its position. */
  embedding(args: { weight: Handle; ids: Int32Array }): Handle;
  /** [sync] [vocabSize, D]: gradOutput's ids.length rows added at their ids, deterministically. */
  embeddingBackward(args: { gradOutput: Handle; ids: Int32Array; vocabSize: number }): Handle;
  /** [sync] [a, b, c, d] → [a, c, b, d] (attention head split and merge; its own inverse). */
  permute0213(args: { x: Handle }): Handle;
  /**
   * [sync] Rank-0 loss: mean over rows whose label ≠ ignoreIndex of −log softmax(logits)[label]; 0 when every row
   * is ignored. logits [N, C], labels of length N.
   */
  crossEntropy(args: { logits: Handle; labels: Int32Array; ignoreIndex: number }): Handle;
  /** [sync] gradLoss·(softmax − onehot)/counted rows, zero rows where ignored. */
  crossEntropyBackward(args: { logits: Handle; labels: Int32Array; ignoreIndex: number; gradLoss: number }): Handle;
  /** [sync] Rank-0 mean of squared differences (0 when empty). */
  mseLoss(args: { prediction: Handle; target: Handle }): Handle;
  /** [sync] 2·gradLoss·(prediction − target)/n. */
  mseLossBackward(args: { prediction: Handle; target: Handle; gradLoss: number }): Handle;
  /** [sync] Rank-0 mean of BCE with logits, max(z, 0) − z·y + log(1 + exp(−|z|)) (0 when empty). */
  bceWithLogits(args: { logits: Handle; targets: Handle }): Handle;
  /** [sync] gradLoss·(σ(logits) − targets)/n. */
  bceWithLogitsBackward(args: { logits: Handle; targets: Handle; gradLoss: number }): Handle;
  /**
   * [sync] x [batch, heads, seq, d] with each row's pairs (x_i, x_{i+d/2}) turned by positions[b, s]·base^(−2i/d)
   * radians (rotary position embeddings, transformers' rotate_half layout); inverse turns them back (the gradient).
   */
  rotary(args: { x: Handle; positions: Int32Array; base: number; inverse?: boolean }): Handle;
  /**
   * [sync] x ⊙ keep/(1 − p), the mask drawn from (seed, index) alone: backward is dropout(gradOutput, p, seed).
   * p in [0, 1]; seed an integer from 0 to 2^53 − 1.
   */
  dropout(args: { x: Handle; p: number; seed: number }): Handle;
  /**
   * [sync] Fused attention (online softmax over key blocks, no query × key buffer). query [batch, heads, Lq, D], key
   * and value [batch, kvHeads, Lk, D] (query head h reads kv head ⌊h / (heads / kvHeads)⌋), keyMask [batch, Lk] (0
   * masks); causal: query i sees keys j ≤ i + Lk − Lq. Dropout p on the probabilities keeps what `dropout` keeps at
   * the flat [batch, heads, Lq, Lk] index. A query that sees no key gives zeros (logsumexp −∞). reference: the CPU's
   * scalar loops in double.
   */
  attention(args: AttentionArgs): { output: Handle; logsumexp: Handle };
  /** [sync] Gradients of query, key and value (key's and value's summed over the heads that share them). */
  attentionBackward(args: AttentionArgs & { gradOutput: Handle; output: Handle; logsumexp: Handle }): {
    query: Handle;
    key: Handle;
    value: Handle;
  };

  // ---- optimizer kernels over tensor lists and the orthogonality regulariser (native/binding/ops_optim.cc) ----
  // Every list op updates its first list in place, one call for the whole list; lists must have equal lengths and
  // pairwise equal shapes, and a tensor written must not share storage with any other argument (RangeError naming
  // both). Results do not depend on the thread count.

  /**
   * [sync] One AdamW update (torch.optim.AdamW) of each params[i] with its moments (zeros before the first step).
   * step: this update's number, 1 first. lr, eps, weightDecay ≥ 0; beta1, beta2 in [0, 1).
   */
  adamwStep(args: {
    params: Handle[];
    grads: Handle[];
    expAvg: Handle[];
    expAvgSq: Handle[];
    lr: number;
    beta1: number;
    beta2: number;
    eps: number;
    weightDecay: number;
    step: number;
  }): void;
  /**
   * [sync] One SGD update (torch.optim.SGD, dampening 0). momentumBuffers start at zero (the first step then sets
   * them to the gradient, as PyTorch does) and are required when momentum ≠ 0; nesterov requires momentum > 0.
   */
  sgdStep(args: {
    params: Handle[];
    grads: Handle[];
    momentumBuffers?: Handle[];
    lr: number;
    momentum: number;
    weightDecay: number;
    nesterov?: boolean;
  }): void;
  /** [sync] ys[i] += alpha · xs[i]. */
  axpyList(args: { ys: Handle[]; alpha: number; xs: Handle[] }): void;
  /** [sync] tensors[i] *= factor. */
  scaleList(args: { tensors: Handle[]; factor: number }): void;
  /** [sync] direct[i] −= factor · (plus[i] − minus[i]) (BiDoRA's hypergradient: factor = ξ / (2ε)). */
  combineHypergradient(args: { direct: Handle[]; plus: Handle[]; minus: Handle[]; factor: number }): void;
  /**
   * [sync] BiDoRA's F = ‖D Dᵀ − I‖_F for D the row-normalised W0 + s·B·A (row norms floored at eps > 0), with
   * dF/dA [R,K] and dF/dB [M,R] unless computeGradients is false, without forming an [M,K] matrix. weight W0 [M,K],
   * weightGram = W0 W0ᵀ [M,M] (the caller caches it), loraA [R,K], loraB [M,R]. CPU only.
   */
  orthogonalityPenalty(args: {
    weight: Handle;
    weightGram: Handle;
    loraA: Handle;
    loraB: Handle;
    scale: number;
    eps: number;
    computeGradients?: boolean;
  }): { value: number; gradA?: Handle; gradB?: Handle };
  /**
   * [sync] Where kernels can run: 'cpu', then 'cuda' when the addon was built with CUDA and a usable GPU (compute
   * capability 8.0+) is present now. Never throws: no GPU or no driver gives ['cpu'].
   */
  devices(): string[];
}

/** The frozen weight W0 [M,K], A [R,K], B [M,R] and the scale s of one adapted layer. */
export interface NativeLayerArgs {
  weight: Handle;
  loraA: Handle;
  loraB: Handle;
  scale: number;
}

/** The arguments attention and attentionBackward share. */
export interface AttentionArgs {
  query: Handle;
  key: Handle;
  value: Handle;
  keyMask?: Handle;
  causal?: boolean;
  scale: number;
  p: number;
  seed: number;
  reference?: boolean;
}

/** A LoRA layer's call: the layer, its input [..., K], bias [M], and the low-rank branch's dropout and seed. */
export interface NativeLoraArgs extends NativeLayerArgs {
  input: Handle;
  bias?: Handle;
  dropout: number;
  seed: number;
}

export interface NativeDoraArgs extends NativeLoraArgs {
  magnitude: Handle;
  eps: number;
}

/** What doraForward returns for doraBackward besides the output. */
export interface NativeDoraSaved {
  combined: Handle;
  hidden: Handle;
  norm: Handle;
  weightLoraA: Handle;
  loraGram: Handle;
}

export interface NativeBackwardArgs {
  gradOutput: Handle;
  needs?: GradientRequest;
}

/**
 * @internal Test-only entry points, not part of the surface: `_throwForTest(kind)` throws the C++ exception `kind`
 * names inside the addon ('length_error', 'runtime_error', 'range_error', 'type_error', 'bad_alloc', 'int',
 * 'foreign'), to prove each becomes a JavaScript error.
 */
export interface NativeTestHooks {
  _throwForTest(kind: string): never;
}

/**
 * Which gradients an adapter backward computes. Naming some as true asks for those alone; naming some as false (and
 * none true) skips those and keeps the rest; without a request, all.
 */
export interface GradientRequest {
  /** dL/dx, the input's shape. */
  input?: boolean;
  /** dL/dA, [r, in]. */
  loraA?: boolean;
  /** dL/dB, [out, r]. */
  loraB?: boolean;
  /** dL/dm, [out] (DoRA only). */
  magnitude?: boolean;
  /** dL/db, [out] (when the layer has a bias). */
  bias?: boolean;
}

export interface NativeAdapterGrads {
  input?: Handle;
  loraA?: Handle;
  loraB?: Handle;
  magnitude?: Handle;
  bias?: Handle;
}

/** Where an addon file can come from, in the order the loader tries them. */
export interface AddonCandidate {
  path: string;
  origin: 'BIDORA_ADDON' | 'built here' | 'prebuilt (CUDA)' | 'prebuilt';
}

/**
 * The addon files to try, in order: `BIDORA_ADDON` alone when set; else `build/Release/bidora.node`, which exists
 * only where something compiled the addon on this machine (a clone's `npm run build:native`, or an install that built
 * from source because no prebuild loaded or `BIDORA_BUILD_FROM_SOURCE` asked for it), so it wins over the packaged
 * prebuilds as with node-gyp-build; then `prebuilds/<platform>-<arch>/bidora-cuda.node` where an NVIDIA driver is
 * visible, then the CPU prebuild `bidora.node`, which needs no CUDA at all.
 */
export function addonCandidates(root = join(__dirname, '..')): AddonCandidate[] {
  const override = process.env.BIDORA_ADDON;
  if (override !== undefined && override !== '') return [{ path: override, origin: 'BIDORA_ADDON' }];
  const prebuilds = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const candidates: AddonCandidate[] = [{ path: join(root, 'build', 'Release', 'bidora.node'), origin: 'built here' }];
  // The CUDA build loads without a driver too (its CUDA runtime is linked in statically), but then it only adds
  // start-up work; the driver's files are a cheap sign that a GPU may be there.
  if (existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidiactl')) {
    candidates.push({ path: join(prebuilds, 'bidora-cuda.node'), origin: 'prebuilt (CUDA)' });
  }
  candidates.push({ path: join(prebuilds, 'bidora.node'), origin: 'prebuilt' });
  return candidates;
}

/** Loads the first candidate that the dynamic linker accepts; throws naming each one that exists and why it failed. */
export function loadAddon(candidates: readonly AddonCandidate[]): { binding: NativeBinding; path: string } {
  const failures: string[] = [];
  const requireAddon = createRequire(__filename);
  for (const { path, origin } of candidates) {
    if (!existsSync(path)) {
      if (origin === 'BIDORA_ADDON') failures.push(`${path} (BIDORA_ADDON): no such file`);
      continue;
    }
    try {
      return { binding: requireAddon(path) as NativeBinding, path };
    } catch (error) {
      // Only the dynamic linker's refusals (a prebuild for a newer glibc, musl, another CPU) move on to the next
      // file; an error the addon raised while starting, such as a bad BIDORA_ISA, would repeat there.
      if ((error as { code?: unknown }).code !== 'ERR_DLOPEN_FAILED') throw error;
      failures.push(`${path} (${origin}): ${(error as Error).message.split('\n')[0]}`);
    }
  }
  const tried = failures.length === 0 ? 'no build and no prebuild for this platform was found' : failures.join('; ');
  throw new Error(
    `bidora: cannot load the native addon on ${process.platform}-${process.arch} (${tried}). ` +
      'Compile it for this machine with `npm rebuild bidora` (install scripts allowed; needs a C++17 compiler, and ' +
      'CMake or else Python for node-gyp), or with `npm run build:native` in a clone.',
  );
}

const loaded = loadAddon(addonCandidates());
export const native: NativeBinding = loaded.binding;
/** The addon file this process loaded (`buildInfo().addon`). */
export const addonFile: string = loaded.path;
