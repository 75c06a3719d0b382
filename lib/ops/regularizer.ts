// BiDoRA's orthogonality regulariser of one adapted layer, ‖D Dᵀ − I‖_F with D the row-normalised direction
// W0 + s·B·A, as a differentiable op over loraA and loraB. One native call gives the value and both gradients from
// factored terms; the frozen weight's Gram matrix W0 W0ᵀ is cached per weight tensor. The kernel runs on the CPU:
// for a layer on the GPU, A and B (small) travel to it and the gradients back, and W0 is copied once, with its Gram.
import { isGradEnabled, record } from '../autograd';
import { native, type NativeTensorHandle } from '../binding';
import { handleOf, keep, Tensor, tensorOf } from '../tensor';
import { DEFAULT_NORM_EPS } from './adapter';
import { scale as scaleTensor } from './elementwise';

/** The named arguments of `orthogonalityPenalty`: one adapted layer's factored direction W0 + s B A. */
export interface OrthogonalityArgs {
  /** The frozen base weight W0, [out, in]; treated as a constant (no gradient flows to it). */
  weight: Tensor;
  /** A, [r, in]. */
  loraA: Tensor;
  /** B, [out, r]. */
  loraB: Tensor;
  /** s: alpha / r (or alpha / sqrt(r) for rsLoRA). */
  scale: number;
  /** Floor of the direction's row norms (default 1e-6, as the DoRA layer). */
  eps?: number;
}

/** Per weight tensor, while its storage version is unchanged: W0 W0ᵀ, and W0's CPU copy when W0 is on the GPU. */
interface CachedWeight {
  version: number;
  gram: Tensor;
  hostWeight: Tensor | undefined;
}
const gramCache = new WeakMap<Tensor, CachedWeight>();

/** W0 and W0 W0ᵀ as CPU handles, for the kernel. */
function cachedWeight(
  weight: Tensor,
  handle: NativeTensorHandle,
): { weight: NativeTensorHandle; gram: NativeTensorHandle } {
  const fn = 'orthogonalityPenalty';
  let cached = gramCache.get(weight);
  if (cached === undefined || cached.version !== handle.version || cached.gram.isDisposed) {
    releaseWeightGram(weight);
    // The cache outlives any tidy scope the first call ran in.
    const hostWeight = weight.device === 'cpu' ? undefined : keep(weight.to('cpu'));
    const host = hostWeight === undefined ? handle : handleOf(hostWeight, fn, 'weight');
    // A bfloat16 W0 can only be a product's b: its float32 widening serves as a, for this one product.
    const wide = weight.dtype === 'bfloat16' ? tensorOf(native.cast({ x: host, dtype: 'float32' })) : undefined;
    let gram: Tensor;
    try {
      const a = wide === undefined ? host : handleOf(wide, fn, 'weight');
      gram = keep(tensorOf(native.matmul({ a, b: host, transposeB: true })));
    } finally {
      wide?.dispose();
    }
    cached = { version: handle.version, gram, hostWeight };
    gramCache.set(weight, cached);
  }
  return {
    weight: cached.hostWeight === undefined ? handle : handleOf(cached.hostWeight, fn, 'cached weight'),
    gram: handleOf(cached.gram, fn, 'cached weightGram'),
  };
}

/** Frees the cached W0 W0ᵀ of `weight` now (it is otherwise freed when the weight is collected or changes). */
export function releaseWeightGram(weight: Tensor): void {
  const cached = gramCache.get(weight);
  cached?.gram.dispose();
  cached?.hostWeight?.dispose();
  gramCache.delete(weight);
}

/**
 * ‖D Dᵀ − I‖_F for D = the rows of W0 + s·B·A divided by their norms (floored at eps), as a rank-0 tensor that
 * backpropagates to loraA and loraB. Costs O(out²·r + r·out·in) and out² floats of scratch, never an [out, in]
 * matrix. At D Dᵀ = I exactly (one row) the gradient is 0. BiDoRA's R is the mean of this over adapted layers.
 */
export function orthogonalityPenalty(args: OrthogonalityArgs): Tensor {
  const fn = 'orthogonalityPenalty';
  if (args === null || typeof args !== 'object') throw new TypeError(`${fn}: expected an object of named arguments`);
  const { weight, loraA, loraB } = args;
  const eps = args.eps ?? DEFAULT_NORM_EPS;
  const weightHandle = handleOf(weight, fn, 'weight');
  const loraAHandle = handleOf(loraA, fn, 'loraA');
  const loraBHandle = handleOf(loraB, fn, 'loraB');
  if (weight.rank !== 2) {
    throw new RangeError(`${fn}: expected weight of rank 2 (out, in), but weight has shape [${weight.shape}]`);
  }
  const { device } = weight;
  if (loraA.device !== device || loraB.device !== device) {
    const other = loraA.device !== device ? ['loraA', loraA.device] : ['loraB', loraB.device];
    throw new TypeError(
      `${fn}: weight is on '${device}' but ${other[0]} is on '${other[1]}'; move one with .to() so both are on the same device`,
    );
  }
  const differentiable = isGradEnabled() && (loraA.requiresGrad || loraB.requiresGrad);
  const host = cachedWeight(weight, weightHandle);
  const hostA = device === 'cpu' ? undefined : loraA.to('cpu');
  const hostB = device === 'cpu' ? undefined : loraB.to('cpu');
  let result: ReturnType<typeof native.orthogonalityPenalty>;
  try {
    result = native.orthogonalityPenalty({
      weight: host.weight,
      weightGram: host.gram,
      loraA: hostA === undefined ? loraAHandle : handleOf(hostA, fn, 'loraA'),
      loraB: hostB === undefined ? loraBHandle : handleOf(hostB, fn, 'loraB'),
      scale: args.scale,
      eps,
      computeGradients: differentiable,
    });
  } finally {
    hostA?.dispose();
    hostB?.dispose();
  }
  // From data, not Tensor.full: a diverged A or B makes the value NaN, which must flow on like any op's output.
  const output = Tensor.from(new Float32Array([result.value]), [], { device });
  if (!differentiable) return output;
  // The gradients are computed now, at forward values: backward checks that A and B have not changed since.
  const gradA = keep(onDevice(tensorOf(result.gradA!), device));
  const gradB = keep(onDevice(tensorOf(result.gradB!), device));
  record(output, fn, [loraA, loraB], (saved) => {
    saved.own(gradA);
    saved.own(gradB);
    // Saved only for the version check: the gradients above hold for these values of A and B alone.
    saved.save(loraA, 'loraA');
    saved.save(loraB, 'loraB');
    return (gradOutput, [needA, needB]) => {
      const factor = gradOutput.item();
      return [needA ? scaleTensor(gradA, factor) : undefined, needB ? scaleTensor(gradB, factor) : undefined];
    };
  });
  if (output.gradNode === undefined) {
    gradA.dispose();
    gradB.dispose();
  }
  return output;
}

/** `tensor` moved to `device` (the CPU original disposed when a copy was made). */
function onDevice(tensor: Tensor, device: Tensor['device']): Tensor {
  if (device === tensor.device) return tensor;
  const moved = tensor.to(device);
  tensor.dispose();
  return moved;
}
