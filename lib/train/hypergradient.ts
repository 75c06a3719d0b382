// BiDoRA's finite-difference hypergradient: g − xi·(g+ − g−)/(2ε), where g± are the lower loss's magnitude gradients
// at θ' ± ε·v, ε = 0.01/||v||, θ' perturbed in place (native multi-tensor kernels, no copy of the parameters).
import { scale, sub } from '../ops/elementwise';
import { axpyList, combineHypergradient } from '../ops/multi';
import { globalNorm } from '../ops/reduce';
import { type Tensor, tidy } from '../tensor';

/**
 * What the finite-difference estimate of BiDoRA's second-order term needs: the magnitudes' training gradient as a
 * function, the lower-level parameters to perturb along `direction`, and the direction itself.
 */
export interface SecondOrderInputs {
  /** dL_tr/dm at the current lower parameters, as fresh tensors (computing no other gradient). */
  magnitudeGradients: () => Tensor[];
  /** θ': the lower level's parameters, perturbed in place and put back. */
  lowerParameters: readonly Tensor[];
  /** v = dL_val/dθ', one tensor per lower parameter. */
  direction: readonly Tensor[];
  /** Called before each of the two passes, e.g. to replay the same dropout masks in both. */
  beforePass?: () => void;
}

/** (g+ − g−)/(2ε) as fresh tensors, or undefined when v = 0 (no second-order information). */
export function finiteDifferenceTerm(inputs: SecondOrderInputs):
  | {
      /** (g+ − g−)/(2ε), one tensor per magnitude, owned by the caller. */
      term: Tensor[];
      /** The step ε = 0.01 / ||v|| along v, so the perturbation's norm is 0.01 whatever v's scale. */
      epsilon: number;
    }
  | undefined {
  const perturbed = perturbedGradients(inputs);
  if (perturbed === undefined) return undefined;
  const { plus, minus, epsilon } = perturbed;
  try {
    const term = tidy(() => plus.map((gradient, index) => scale(sub(gradient, minus[index]), 1 / (2 * epsilon))));
    return { term, epsilon };
  } finally {
    for (const tensor of [...plus, ...minus]) tensor.dispose();
  }
}

function perturbedGradients(
  inputs: SecondOrderInputs,
): { plus: Tensor[]; minus: Tensor[]; epsilon: number } | undefined {
  const norm = globalNorm(inputs.direction);
  if (!(norm > 0)) return undefined;
  const epsilon = 0.01 / norm;
  const { lowerParameters, direction } = inputs;
  axpyList(lowerParameters, epsilon, direction);
  let plus: Tensor[] | undefined;
  try {
    inputs.beforePass?.();
    plus = inputs.magnitudeGradients();
    axpyList(lowerParameters, -2 * epsilon, direction);
    inputs.beforePass?.();
    const minus = inputs.magnitudeGradients();
    return { plus, minus, epsilon };
  } catch (error) {
    for (const tensor of plus ?? []) tensor.dispose();
    throw error;
  } finally {
    // Back to θ' (θ' + ε v − 2ε v + ε v: exact but for rounding); on an error midway, from wherever it stopped.
    axpyList(lowerParameters, plus === undefined ? -epsilon : epsilon, direction);
  }
}

/**
 * Turns the direct gradient `direct` (g = dL_val/dm) into the hypergradient in place: g − xi·(g+ − g−)/(2ε).
 * Returns ||xi·(g+ − g−)/(2ε)||, the second-order term's norm (0 when v = 0).
 */
export function applySecondOrder(direct: Tensor[], inputs: SecondOrderInputs, xi: number): number {
  const perturbed = perturbedGradients(inputs);
  if (perturbed === undefined) return 0;
  const { plus, minus, epsilon } = perturbed;
  try {
    const factor = xi / (2 * epsilon);
    const termNorm = tidy(
      () => Math.abs(factor) * globalNorm(plus.map((gradient, index) => sub(gradient, minus[index]))),
    );
    combineHypergradient(direct, plus, minus, factor);
    return termNorm;
  } finally {
    for (const tensor of [...plus, ...minus]) tensor.dispose();
  }
}
