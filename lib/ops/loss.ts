// Losses with their gradients: softmax cross-entropy from logits (with ignored labels), mean squared error, and binary
// cross-entropy with logits.
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

/**
 * Mean over every element of binary cross-entropy with logits, max(z, 0) − z·y + log(1 + exp(−|z|)), as PyTorch's
 * BCEWithLogitsLoss: transformers' multi-label classification loss. `targets` has the logits' shape (0 or 1 per class).
 */
export function bceWithLogits(logits: Tensor, targets: Tensor): Tensor {
  const fn = 'bceWithLogits';
  const output = tensorOf(
    native.bceWithLogits({ logits: handleOf(logits, fn, 'logits'), targets: handleOf(targets, fn, 'targets') }),
  );
  return record(output, fn, [logits], (saved) => {
    const input = saved.save(logits, 'logits');
    const wanted = saved.save(targets, 'targets');
    return (gradOutput) => [
      tensorOf(
        native.bceWithLogitsBackward({
          logits: handleOf(input, fn, 'logits'),
          targets: handleOf(wanted, fn, 'targets'),
          gradLoss: gradOutput.item(),
        }),
      ),
    ];
  });
}
