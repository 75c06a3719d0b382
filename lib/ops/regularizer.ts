// BiDoRA's orthogonality regulariser of one adapted layer, ‖D Dᵀ − I‖_F with D the row-normalised direction
// W0 + s·B·A, as a differentiable op over loraA and loraB. One native call gives the value and both gradients from
// factored terms; the frozen weight's Gram matrix W0 W0ᵀ is cached per weight tensor.
import { isGradEnabled, record } from '../autograd';
import { native, type NativeTensorHandle } from '../binding';
import { handleOf, keep, type Tensor, tensorOf } from '../tensor';
import { DEFAULT_NORM_EPS } from './adapter';
import { scale as scaleTensor } from './elementwise';

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

/** W0 W0ᵀ per weight tensor, valid while the weight's storage version is unchanged. */
const gramCache = new WeakMap<Tensor, { version: number; gram: Tensor }>();

function weightGram(weight: Tensor, handle: NativeTensorHandle): NativeTensorHandle {
  const cached = gramCache.get(weight);
  if (cached !== undefined && cached.version === handle.version && !cached.gram.isDisposed) {
    return handleOf(cached.gram, 'orthogonalityPenalty', 'cached weightGram');
  }
  cached?.gram.dispose();
  // The cache outlives any tidy scope the first call ran in.
  const gram = keep(tensorOf(native.matmul(handle, handle, false, true)));
  gramCache.set(weight, { version: handle.version, gram });
  return handleOf(gram, 'orthogonalityPenalty', 'cached weightGram');
}

/** Frees the cached W0 W0ᵀ of `weight` now (it is otherwise freed when the weight is collected or changes). */
export function releaseWeightGram(weight: Tensor): void {
  gramCache.get(weight)?.gram.dispose();
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
  const differentiable = isGradEnabled() && (loraA.requiresGrad || loraB.requiresGrad);
  const result = native.orthogonalityPenalty(
    weightHandle,
    weightGram(weight, weightHandle),
    loraAHandle,
    loraBHandle,
    args.scale,
    eps,
    differentiable,
  );
  const output = tensorOf(native.full([], result.value));
  if (!differentiable) return output;
  // The gradients are computed now, at forward values: backward checks that A and B have not changed since.
  const gradA = keep(tensorOf(result.gradA!));
  const gradB = keep(tensorOf(result.gradB!));
  record(output, 'orthogonalityPenalty', [loraA, loraB], (saved) => {
    saved.own(gradA);
    saved.own(gradB);
    const inputs = [saved.save(loraA), saved.save(loraB)];
    const versions = inputs.map((alias) => handleOf(alias, fn, 'saved input').version);
    return (gradOutput, [needA, needB]) => {
      inputs.forEach((alias, position) => {
        if (handleOf(alias, fn, 'saved input').version !== versions[position]) {
          const name = position === 0 ? 'loraA' : 'loraB';
          throw new TypeError(`${fn}: ${name} was modified in place after the forward pass that saved it`);
        }
      });
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
