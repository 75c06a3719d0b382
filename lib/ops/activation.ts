// Activations with their gradients: GELU (erf form, as BERT), ReLU, tanh.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';

/** 0.5 · x · (1 + erf(x / √2)): BERT's `gelu`. */
export function gelu(x: Tensor): Tensor {
  const output = tensorOf(native.gelu({ x: handleOf(x, 'gelu', 'x') }));
  return record(output, 'gelu', [x], (saved) => {
    const input = saved.save(x, 'x');
    return (gradOutput) => [
      tensorOf(
        native.geluBackward({
          x: handleOf(input, 'gelu', 'x'),
          gradOutput: handleOf(gradOutput, 'gelu', 'gradOutput'),
        }),
      ),
    ];
  });
}

/** max(x, 0). */
export function relu(x: Tensor): Tensor {
  const output = tensorOf(native.relu({ x: handleOf(x, 'relu', 'x') }));
  return record(output, 'relu', [x], (saved) => {
    const input = saved.save(x, 'x');
    return (gradOutput) => [
      tensorOf(
        native.reluBackward({
          x: handleOf(input, 'relu', 'x'),
          gradOutput: handleOf(gradOutput, 'relu', 'gradOutput'),
        }),
      ),
    ];
  });
}

/** tanh(x); its gradient reads the output, 1 − y². */
export function tanh(x: Tensor): Tensor {
  const output = tensorOf(native.tanh({ x: handleOf(x, 'tanh', 'x') }));
  return record(output, 'tanh', [x], (saved) => {
    const result = saved.save(output, 'output');
    return (gradOutput) => [
      tensorOf(
        native.tanhBackward({
          output: handleOf(result, 'tanh', 'output'),
          gradOutput: handleOf(gradOutput, 'tanh', 'gradOutput'),
        }),
      ),
    ];
  });
}
