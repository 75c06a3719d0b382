// In-place arithmetic over lists of tensors, one native call per list: moving parameters by ±ε·v, clipping
// gradients, combining hypergradients. Not differentiable, like axpy.
import { isGradEnabled } from '../autograd';
import { native, type NativeTensorHandle } from '../binding';
import { handleOf, type Tensor } from '../tensor';

function handles(tensors: readonly Tensor[], functionName: string, name: string): NativeTensorHandle[] {
  if (!Array.isArray(tensors)) throw new TypeError(`${functionName}: ${name} must be an array of Tensors`);
  return tensors.map((tensor, index) => handleOf(tensor, functionName, `${name}[${index}]`));
}

/** An in-place write to a tensor a recorded graph depends on would silently corrupt its gradients. */
function refuseRecorded(functionName: string, targets: readonly Tensor[], sources: readonly Tensor[] = []): void {
  if (!isGradEnabled()) return;
  targets.forEach((target, index) => {
    if (target.gradNode !== undefined || (target.requiresGrad && sources[index]?.requiresGrad)) {
      throw new TypeError(
        `${functionName}: an in-place update of a tensor in a recorded graph (index ${index}); run it inside noGrad()`,
      );
    }
  });
}

/** ys[i] += alpha · xs[i] in place, for every pair (θ ± ε·v); returns ys. */
export function axpyList(ys: readonly Tensor[], alpha: number, xs: readonly Tensor[]): readonly Tensor[] {
  const yHandles = handles(ys, 'axpyList', 'ys');
  const xHandles = handles(xs, 'axpyList', 'xs');
  refuseRecorded('axpyList', ys, xs);
  native.axpyList({ ys: yHandles, alpha, xs: xHandles });
  return ys;
}

/** tensors[i] *= factor in place (gradient clipping); returns tensors. */
export function scaleList(tensors: readonly Tensor[], factor: number): readonly Tensor[] {
  const tensorHandles = handles(tensors, 'scaleList', 'tensors');
  refuseRecorded('scaleList', tensors);
  native.scaleList({ tensors: tensorHandles, factor });
  return tensors;
}

/**
 * direct[i] −= factor · (plus[i] − minus[i]) in place; returns direct. BiDoRA's hypergradient g − ξ (g⁺ − g⁻) / (2ε)
 * is `combineHypergradient(g, gPlus, gMinus, xi / (2 * eps))`.
 */
export function combineHypergradient(
  direct: readonly Tensor[],
  plus: readonly Tensor[],
  minus: readonly Tensor[],
  factor: number,
): readonly Tensor[] {
  const directHandles = handles(direct, 'combineHypergradient', 'direct');
  const plusHandles = handles(plus, 'combineHypergradient', 'plus');
  const minusHandles = handles(minus, 'combineHypergradient', 'minus');
  refuseRecorded('combineHypergradient', direct);
  native.combineHypergradient({ direct: directHandles, plus: plusHandles, minus: minusHandles, factor });
  return direct;
}
