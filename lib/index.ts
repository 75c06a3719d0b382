// bidora: LoRA, DoRA and BiDoRA adapter fine-tuning for Node.js on native kernels.
import { addonFile, type BuildInfo, type Device, type Isa, type MatmulPrecision, native } from './binding';

export * as adapters from './adapters/index';
export { backward, type BackwardOptions, grad, isGradEnabled, noGrad } from './autograd';
export * as io from './io/index';
export * as models from './models/index';
export * as nn from './nn/index';
export * as ops from './ops/index';
export * as optim from './optim/index';
export { deriveSeed, freshSeed, Random, SeedScope, SeedStream } from './random';
export * as tokenizers from './tokenizers/index';
export * as train from './train/index';
export {
  type DeviceOptions,
  emptyCache,
  keep,
  memory,
  resetPeakMemory,
  setCacheLimit,
  type MemoryInfo,
  type RandomOptions,
  type Shape,
  Tensor,
  tidy,
} from './tensor';
export type { BuildInfo, Device, DType, Isa, MatmulPrecision } from './binding';

/** What was compiled, what runs, and how many threads: include it in bug reports. */
export function buildInfo(): BuildInfo {
  return { ...native.buildInfo(), addon: addonFile };
}

/**
 * Forces the kernels' instruction-set path for the whole process ('generic', 'avx2', 'avx512'); returns the previous
 * one. For tests and benchmarks: the default (or `BIDORA_ISA`) is the best this CPU runs.
 */
export function setIsa(isa: Isa): Isa {
  return native.setIsa(isa);
}

/**
 * Where tensors can live and ops run: 'cpu', then 'cuda' when this build has the CUDA kernels and a GPU of compute
 * capability 8.0 or newer is usable. Never throws.
 */
export function devices(): Device[] {
  return native.devices() as Device[];
}

/**
 * How GPU matrix products round float32 inputs, for the whole process; returns the previous setting. As PyTorch's
 * `set_float32_matmul_precision`: 'highest' (the default) keeps float32, 'high' uses TF32 tensor cores and
 * 'medium' BF16, both accumulating in float32. CPU products are always float32.
 */
export function setMatmulPrecision(precision: MatmulPrecision): MatmulPrecision {
  return native.setMatmulPrecision(precision);
}

/**
 * Caps the threads kernels use; returns the previous cap. `threads` is an integer from 1 to 2^20 (else a RangeError);
 * a cap above the pool size (`buildInfo().poolThreads`) means the whole pool.
 */
export function setNumThreads(threads: number): number {
  return native.setNumThreads(threads);
}
