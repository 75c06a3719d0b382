// Layer normalisation over the last axis, with its gradient.
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
