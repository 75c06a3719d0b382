// Central finite-difference gradient checks of any differentiable function of tensors, for the autograd tests.
import { expect } from 'vitest';

import { noGrad, type Tensor, Tensor as TensorClass, tidy } from '../lib/index';
import { baseSeed } from './helpers';

/** Σ output ⊙ weights in float64: summing in JavaScript keeps float32 rounding out of the differences. */
function weightedSum(output: Tensor, weights: Float64Array): number {
  const values = output.toFloat32Array();
  let total = 0;
  for (let index = 0; index < values.length; index++) total += values[index] * weights[index];
  return total;
}

/**
 * Checks the gradients backward() gives `inputs` (which must require grad) for L = Σ f(inputs) ⊙ W, with W fixed
 * random weights, against central differences of L in each element: |numeric − analytic| ≤ tolerance · max(1,
 * max|analytic|). Each input's elements are perturbed one by one (at most `maxElements` of them, spread evenly), so
 * keep inputs small.
 */
export function checkGradients(
  label: string,
  f: (inputs: Tensor[]) => Tensor,
  inputs: Tensor[],
  { step = 1e-2, tolerance = 2e-3, maxElements = Infinity } = {},
): void {
  const weights = tidy(() => {
    const output = f(inputs);
    return Float64Array.from({ length: output.size }, (_, index) => Math.sin(1.3 * index + 0.7));
  });
  for (const input of inputs) input.grad = undefined;
  tidy(() => {
    const output = f(inputs);
    const weightTensor = TensorClass.from(Float32Array.from(weights), output.shape);
    output.backward({ gradient: weightTensor });
  });
  for (const [position, input] of inputs.entries()) {
    const analytic = input.grad?.toFloat32Array() ?? new Float32Array(input.size);
    const values = input.toFloat32Array();
    const scaleOfGradient = Math.max(1, ...Array.from(analytic, Math.abs));
    const stride = Math.max(1, Math.floor(input.size / Math.min(input.size, maxElements)));
    for (let index = stride >> 1; index < input.size; index += stride) {
      const at = (delta: number) =>
        noGrad(() =>
          tidy(() => {
            const moved = values.slice();
            moved[index] += delta;
            const perturbed = inputs.map((other, which) =>
              which === position ? TensorClass.from(moved, input.shape) : other,
            );
            return weightedSum(f(perturbed), weights);
          }),
        );
      const numeric = (at(step) - at(-step)) / (2 * step);
      expect(
        Math.abs(numeric - analytic[index]),
        `${label}: input ${position} element ${index} (numeric ${numeric}, analytic ${analytic[index]}), seed ${baseSeed}`,
      ).toBeLessThanOrEqual(tolerance * scaleOfGradient);
    }
    input.grad?.dispose();
    input.grad = undefined;
  }
}
