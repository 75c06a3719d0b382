// Layer normalisation and RMS normalisation over the last axis, with their gradients.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';

/** (x − mean) / sqrt(var + eps) · gamma + beta over the last axis (biased variance, as PyTorch). */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps = 1e-12): Tensor {
  const fn = 'layerNorm';
  const result = native.layerNorm({
    x: handleOf(x, fn, 'x'),
    gamma: handleOf(gamma, fn, 'gamma'),
    beta: handleOf(beta, fn, 'beta'),
    eps,
  });
  const output = tensorOf(result.output);
  const mean = tensorOf(result.mean);
  const rstd = tensorOf(result.rstd);
  const recorded = record(output, fn, [x, gamma, beta], (saved) => {
    const input = saved.save(x, 'x');
    const scale = saved.save(gamma, 'gamma');
    saved.own(mean);
    saved.own(rstd);
    return (gradOutput, [needX, needGamma, needBeta]) => {
      const grads = native.layerNormBackward({
        gradOutput: handleOf(gradOutput, fn, 'gradOutput'),
        x: handleOf(input, fn, 'x'),
        gamma: handleOf(scale, fn, 'gamma'),
        mean: handleOf(mean, fn, 'mean'),
        rstd: handleOf(rstd, fn, 'rstd'),
      });
      const wrapped = [tensorOf(grads.input), tensorOf(grads.gamma), tensorOf(grads.beta)];
      return wrapped.map((gradient, index) => ([needX, needGamma, needBeta][index] ? gradient : undefined));
    };
  });
  if (recorded.gradNode === undefined) {
    mean.dispose();
    rstd.dispose();
  }
  return recorded;
}

/**
 * Llama's RMSNorm over the last axis: weight ⊙ x / sqrt(mean(x²) + eps) (transformers' `LlamaRMSNorm`, whose float32
 * computation this is; the mean of squares is summed in double). Gradients for x and weight.
 */
export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-6): Tensor {
  const fn = 'rmsNorm';
  const result = native.rmsNorm({ x: handleOf(x, fn, 'x'), weight: handleOf(weight, fn, 'weight'), eps });
  const output = tensorOf(result.output);
  const rstd = tensorOf(result.rstd);
  const recorded = record(output, fn, [x, weight], (saved) => {
    const input = saved.save(x, 'x');
    const scale = saved.save(weight, 'weight');
    saved.own(rstd);
    return (gradOutput, [needX, needWeight]) => {
      const grads = native.rmsNormBackward({
        gradOutput: handleOf(gradOutput, fn, 'gradOutput'),
        x: handleOf(input, fn, 'x'),
        weight: handleOf(scale, fn, 'weight'),
        rstd: handleOf(rstd, fn, 'rstd'),
      });
      const inputGrad = tensorOf(grads.input);
      const weightGrad = tensorOf(grads.weight);
      return [needX ? inputGrad : undefined, needWeight ? weightGrad : undefined];
    };
  });
  if (recorded.gradNode === undefined) rstd.dispose();
  return recorded;
}
