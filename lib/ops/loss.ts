// Losses with their gradients: softmax cross-entropy from logits (with ignored labels) and mean squared error.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';
import { scale } from './elementwise';

/** Labels equal to this are left out of the loss, as in PyTorch and transformers. */
export const IGNORE_INDEX = -100;

/** Mean over rows of −log softmax(logits)[label], rows with `ignoreIndex` left out (0 if all are). logits [N, C]. */
export function crossEntropy(logits: Tensor, labels: Int32Array, ignoreIndex = IGNORE_INDEX): Tensor {
  const fn = 'crossEntropy';
  if (!(labels instanceof Int32Array)) throw new TypeError(`${fn}: labels must be an Int32Array`);
  const output = tensorOf(native.crossEntropy({ logits: handleOf(logits, fn, 'logits'), labels, ignoreIndex }));
  return record(output, fn, [logits], (saved) => {
    const input = saved.save(logits, 'logits');
    // A copy, as embedding's ids: the caller's array may change before backward.
    const savedLabels = labels.slice();
    return (gradOutput) => [
      tensorOf(
        native.crossEntropyBackward({
          logits: handleOf(input, fn, 'logits'),
          labels: savedLabels,
          ignoreIndex,
          gradLoss: gradOutput.item(),
        }),
      ),
    ];
  });
}

/** Mean of (prediction − target)² over every element. */
export function mseLoss(prediction: Tensor, target: Tensor): Tensor {
  const fn = 'mseLoss';
  const output = tensorOf(
    native.mseLoss({ prediction: handleOf(prediction, fn, 'prediction'), target: handleOf(target, fn, 'target') }),
  );
  return record(output, fn, [prediction, target], (saved) => {
    const predicted = saved.save(prediction, 'prediction');
    const wanted = saved.save(target, 'target');
    return (gradOutput, [, needTarget]) => {
      const gradient = tensorOf(
        native.mseLossBackward({
          prediction: handleOf(predicted, fn, 'prediction'),
          target: handleOf(wanted, fn, 'target'),
          gradLoss: gradOutput.item(),
        }),
      );
      return [gradient, needTarget ? scale(gradient, -1) : undefined];
    };
  });
}
