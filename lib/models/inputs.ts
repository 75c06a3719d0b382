// Batches of token ids as models take them: number[][] or an Int32Array with its [batch, seq] shape.
import type { Device } from '../binding';
import { Tensor } from '../tensor';

/**
 * A [batch, seq] matrix of token ids as models take them: rows of numbers, or a tokenizer's row-major Int32Array with
 * its shape (`EncodedBatch.inputIds` fits as it is). Ids are integers in [0, 2^31).
 */
export type IdMatrix =
  | readonly (readonly number[])[]
  | {
      /** The ids, row after row. */
      data: Int32Array;
      /** [batch, seq]. */
      shape: readonly [number, number];
    };

/** An id matrix after validation: flat row-major ids and their dimensions, what embeddings read. */
export interface IdBatch {
  /** batch × seq ids, row after row. */
  data: Int32Array;
  /** Rows (sequences). */
  batch: number;
  /** Columns (tokens per sequence, padding included). */
  seq: number;
}

/** Validates and flattens a [batch, seq] id matrix; `name` appears in errors. */
export function toIdBatch(ids: IdMatrix, name: string): IdBatch {
  if (Array.isArray(ids)) {
    const batch = ids.length;
    const seq = batch === 0 ? 0 : (ids[0]?.length ?? 0);
    const data = new Int32Array(batch * seq);
    ids.forEach((row, index) => {
      if (!Array.isArray(row) || row.length !== seq) {
        throw new RangeError(`${name}: every row must have ${seq} ids (row ${index} has ${row?.length})`);
      }
      row.forEach((value, position) => {
        if (!Number.isInteger(value)) {
          throw new TypeError(`${name}[${index}][${position}] must be an integer, got ${String(value)}`);
        }
        // Int32Array storage would wrap a larger id silently (2^32 + 7 becomes 7).
        if (value < 0 || value >= 2 ** 31) {
          throw new RangeError(`${name}[${index}][${position}] is ${value}; expected an integer in [0, 2^31)`);
        }
        data[index * seq + position] = value;
      });
    });
    return { data, batch, seq };
  }
  const matrix = ids as { data: unknown; shape: unknown };
  if (!(matrix?.data instanceof Int32Array) || !Array.isArray(matrix.shape) || matrix.shape.length !== 2) {
    throw new TypeError(`${name}: expected number[][] or { data: Int32Array, shape: [batch, seq] }`);
  }
  const [batch, seq] = matrix.shape as number[];
  if (batch * seq !== matrix.data.length) {
    throw new RangeError(`${name}: data has ${matrix.data.length} ids but shape is [${batch}, ${seq}]`);
  }
  return { data: matrix.data, batch, seq };
}

/** Checks that `other` has the shape of the input ids. */
export function expectSameShape(other: IdBatch, reference: IdBatch, name: string): void {
  if (other.batch !== reference.batch || other.seq !== reference.seq) {
    throw new RangeError(
      `${name} has shape [${other.batch}, ${other.seq}] but inputIds has shape [${reference.batch}, ${reference.seq}]`,
    );
  }
}

/** The attention mask as the float [batch, seq] tensor the masked softmax reads, on the model's device. */
export function maskTensor(mask: IdBatch, device: Device = 'cpu'): Tensor {
  return Tensor.from(
    Float32Array.from(mask.data, (value) => (value === 0 ? 0 : 1)),
    [mask.batch, mask.seq],
    { device },
  );
}
