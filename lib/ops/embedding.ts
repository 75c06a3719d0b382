// Embedding lookup by integer ids, with the scatter-add gradient into the table.
import { record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';
import { reshape } from './shape';

/** Rows of `weight` [vocab, dim] picked by `ids` (of shape `idsShape`) → [...idsShape, dim]. */
export function embedding(weight: Tensor, ids: Int32Array, idsShape: readonly number[] = [ids.length]): Tensor {
  const fn = 'embedding';
  if (!(ids instanceof Int32Array)) throw new TypeError(`${fn}: ids must be an Int32Array`);
  if (idsShape.reduce((total, dim) => total * dim, 1) !== ids.length) {
    throw new RangeError(`${fn}: ids has ${ids.length} entries but idsShape is [${idsShape.join(', ')}]`);
  }
  const [vocab, dim] = weight.shape;
  const rows = tensorOf(native.embedding({ weight: handleOf(weight, fn, 'weight'), ids }));
  const output = reshape(rows, [...idsShape, dim]);
  rows.dispose();
  return record(output, fn, [weight], () => {
    // A copy: the caller may reuse its array before backward, and the gradient must follow the ids of this forward.
    const savedIds = ids.slice();
    return (gradOutput) => {
      const flat = reshape(gradOutput, [savedIds.length, dim]);
      return [
        tensorOf(
          native.embeddingBackward({ gradOutput: handleOf(flat, fn, 'gradOutput'), ids: savedIds, vocabSize: vocab }),
        ),
      ];
    };
  });
}
