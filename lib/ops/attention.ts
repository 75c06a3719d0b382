// Softmax over the last axis with an optional padding mask (attention probabilities), with its gradient.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';

/**
 * Softmax over the last axis. `mask` ([x.shape[0], x.shape[last]], 1 = attend, 0 = padding) gives masked entries
 * probability 0; a row with everything masked is all zeros.
 */
export function softmax(x: Tensor, mask?: Tensor): Tensor {
  const fn = 'softmax';
  const output = tensorOf(
    native.softmax({ x: handleOf(x, fn, 'x'), mask: mask === undefined ? undefined : handleOf(mask, fn, 'mask') }),
  );
  return record(output, fn, [x], (saved) => {
    const probabilities = saved.save(output, 'output');
    return (gradOutput) => [
      tensorOf(
        native.softmaxBackward({
          output: handleOf(probabilities, fn, 'output'),
          gradOutput: handleOf(gradOutput, fn, 'gradOutput'),
        }),
      ),
    ];
  });
}
