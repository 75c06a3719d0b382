// Attention: softmax over the last axis with an optional padding mask (attention probabilities), with its gradient,
// and the fused scaled-dot-product attention.
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

/** Options of {@link scaledDotProductAttention}. */
export interface AttentionOptions {
  /** 1 = attend, 0 = padding, [batch, keyLength]; default every key. */
  keyMask?: Tensor;
  /** Query i attends to keys j ≤ i + (keyLength − queryLength): aligned at the end, as for KV-cache decoding. */
  causal?: boolean;
  /** Multiplies the scores; 1/√headSize by default. */
  scale?: number;
  /** Dropout on the attention probabilities (training): the mask the `dropout` op draws from `seed` on them. */
  dropout?: {
    /** The probability of dropping an attention weight, in [0, 1); kept ones are scaled by 1 / (1 − p). */
    p: number;
    /** The mask's seed: the same seed drops the same weights. */
    seed: number;
  };
}

/**
 * softmax(scale · q kᵀ, masked) v, fused: online softmax over blocks of keys, so nothing of size queryLength ×
 * keyLength is stored, forward or backward. query [batch, heads, queryLength, headSize]; key and value [batch, kvHeads,
 * keyLength, headSize] with heads a multiple of kvHeads, query head h reading kv head ⌊h / (heads / kvHeads)⌋ (grouped
 * queries); returns [batch, heads, queryLength, headSize]. A query row that sees no key gives zeros. With `dropout`
 * the result equals softmax → dropout(p, seed) → matmul on the [batch, heads, queryLength, keyLength] probabilities.
 * Differentiable in query, key and value (key's and value's gradients summed over the query heads that share them).
 */
export function scaledDotProductAttention(
  query: Tensor,
  key: Tensor,
  value: Tensor,
  options: AttentionOptions = {},
): Tensor {
  const fn = 'scaledDotProductAttention';
  const handles = {
    query: handleOf(query, fn, 'query'),
    key: handleOf(key, fn, 'key'),
    value: handleOf(value, fn, 'value'),
  };
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`${fn}: options must be an object, got ${String(options)}`);
  }
  const { keyMask, causal = false, dropout } = options;
  if (typeof causal !== 'boolean')
    throw new TypeError(`${fn}: options.causal must be a boolean, got ${String(causal)}`);
  if (query.rank !== 4) {
    throw new RangeError(`${fn}: query must be [batch, heads, queryLength, headSize], got shape [${query.shape}]`);
  }
  const headSize = query.shape[3];
  const scale = options.scale ?? (headSize > 0 ? 1 / Math.sqrt(headSize) : 1);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new RangeError(`${fn}: options.scale must be a finite number, got ${String(scale)}`);
  }
  let p = 0;
  let seed = 0;
  if (dropout !== undefined) {
    if (typeof dropout !== 'object' || dropout === null) {
      throw new TypeError(`${fn}: options.dropout must be { p, seed }, got ${String(dropout)}`);
    }
    ({ p, seed } = dropout);
    if (typeof p !== 'number' || !(p >= 0 && p < 1)) {
      throw new RangeError(`${fn}: options.dropout.p must be in [0, 1), got ${String(p)}`);
    }
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new RangeError(`${fn}: options.dropout.seed must be a non-negative safe integer, got ${String(seed)}`);
    }
  }
  const { output: outputHandle, logsumexp: logsumexpHandle } = native.attention({
    ...handles,
    keyMask: keyMask === undefined ? undefined : handleOf(keyMask, fn, 'options.keyMask'),
    causal,
    scale,
    p,
    seed,
  });
  const output = tensorOf(outputHandle);
  const logsumexp = tensorOf(logsumexpHandle);
  const recorded = record(output, fn, [query, key, value], (saved) => {
    const kept = {
      query: saved.save(query, 'query'),
      key: saved.save(key, 'key'),
      value: saved.save(value, 'value'),
      keyMask: keyMask === undefined ? undefined : saved.save(keyMask, 'keyMask'),
      output: saved.save(output, 'output'),
    };
    saved.own(logsumexp);
    return (gradOutput, needs) => {
      const grads = native.attentionBackward({
        query: handleOf(kept.query, fn, 'query'),
        key: handleOf(kept.key, fn, 'key'),
        value: handleOf(kept.value, fn, 'value'),
        keyMask: kept.keyMask === undefined ? undefined : handleOf(kept.keyMask, fn, 'keyMask'),
        causal,
        scale,
        p,
        seed,
        gradOutput: handleOf(gradOutput, fn, 'gradOutput'),
        output: handleOf(kept.output, fn, 'output'),
        logsumexp: handleOf(logsumexp, fn, 'logsumexp'),
      });
      const wrapped = [tensorOf(grads.query), tensorOf(grads.key), tensorOf(grads.value)];
      return wrapped.map((gradient, index) => (needs[index] ? gradient : undefined));
    };
  });
  if (recorded.gradNode === undefined) logsumexp.dispose();
  return recorded;
}
