// bidora: LoRA, DoRA and BiDoRA adapter fine-tuning for Node.js on native kernels.
import { type BuildInfo, type Isa, native } from './binding';

export * as adapters from './adapters/index';
export { backward, grad, isGradEnabled, noGrad } from './autograd';
export * as io from './io/index';
export * as models from './models/index';
export * as nn from './nn/index';
export * as ops from './ops/index';
export * as optim from './optim/index';
export * as tokenizers from './tokenizers/index';
export * as train from './train/index';
export { keep, memory, resetPeakMemory, type MemoryInfo, type RandomOptions, type Shape, Tensor, tidy } from './tensor';
export type { BuildInfo, Isa } from './binding';

/** What was compiled, what runs, and how many threads: include it in bug reports. */
export function buildInfo(): BuildInfo {
  return native.buildInfo();
}

/**
 * Forces the kernels' instruction-set path for the whole process ('generic', 'avx2', 'avx512'); returns the previous
 * one. For tests and benchmarks: the default (or `BIDORA_ISA`) is the best this CPU runs.
 */
export function setIsa(isa: Isa): Isa {
  return native.setIsa(isa);
}

/** Caps the threads kernels use (1 to the pool size, `BIDORA_NUM_THREADS`); returns the previous cap. */
export function setNumThreads(threads: number): number {
  return native.setNumThreads(threads);
}
