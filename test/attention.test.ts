// Fused scaled-dot-product attention: the blocked CPU kernel and its scalar reference against an explicit float64
// softmax on fresh random inputs (padding and causal masks, grouped-query heads, odd head sizes and lengths, rows that
// see no key, dropout), the same result as softmax → dropout → matmul, central differences of all three gradients,
// thread-count independence, and bad input naming its argument.
import { afterAll, describe, expect, it } from 'vitest';

import { native } from '../lib/binding';
import { buildInfo, ops, setIsa, setNumThreads, Tensor, tidy } from '../lib/index';
import { handleOf, tensorOf } from '../lib/tensor';
import { checkGradients } from './gradcheck';
import { baseSeed, isaPaths, randomTensor, relativeError } from './helpers';

const initialThreads = buildInfo().threads;
const initialIsa = buildInfo().isa;
afterAll(() => {
  setNumThreads(initialThreads);
  setIsa(initialIsa);
});
const seedNote = `seed ${baseSeed}`;

interface Case {
  label: string;
  batch: number;
  heads: number;
  kvHeads: number;
  queryLength: number;
  keyLength: number;
  headSize: number;
  /** Keys masked per batch entry: 'none', some random padding, or 'all' for the last entry. */
  mask?: 'padding' | 'all';
  causal?: boolean;
  dropout?: number;
}

const cases: Case[] = [
  {
    label: 'padding mask',
    batch: 2,
    heads: 3,
    kvHeads: 3,
    queryLength: 37,
    keyLength: 37,
    headSize: 24,
    mask: 'padding',
  },
  {
    label: 'causal, fewer queries than keys',
    batch: 1,
    heads: 2,
    kvHeads: 2,
    queryLength: 5,
    keyLength: 300,
    headSize: 20,
    causal: true,
  },
  {
    label: 'causal, past one query block and one key block',
    batch: 1,
    heads: 2,
    kvHeads: 1,
    queryLength: 270,
    keyLength: 270,
    headSize: 13,
    causal: true,
    mask: 'padding',
  },
  {
    label: 'grouped queries, heads 4 kvHeads 2',
    batch: 2,
    heads: 4,
    kvHeads: 2,
    queryLength: 131,
    keyLength: 263,
    headSize: 17,
    mask: 'padding',
  },
  {
    label: 'grouped queries, heads 4 kvHeads 1',
    batch: 1,
    heads: 4,
    kvHeads: 1,
    queryLength: 29,
    keyLength: 29,
    headSize: 64,
    causal: true,
  },
  {
    label: 'rows that see no key',
    batch: 2,
    heads: 2,
    kvHeads: 2,
    queryLength: 9,
    keyLength: 6,
    headSize: 7,
    causal: true,
    mask: 'all',
  },
  {
    label: 'dropout',
    batch: 2,
    heads: 4,
    kvHeads: 2,
    queryLength: 33,
    keyLength: 290,
    headSize: 10,
    mask: 'padding',
    dropout: 0.3,
  },
];

/** A [batch, keyLength] mask of ones with random zeros (never a whole row), the last entry all zeros for 'all'. */
function maskFor(c: Case): Tensor | undefined {
  if (c.mask === undefined) return undefined;
  const uniforms = Tensor.uniform([c.batch, c.keyLength], { seed: baseSeed + 17 }).toFloat32Array();
  const values = Float32Array.from(uniforms, (u, index) => (index % c.keyLength === 0 || u > 0.3 ? 1 : 0));
  if (c.mask === 'all') values.fill(0, (c.batch - 1) * c.keyLength);
  return Tensor.from(values, [c.batch, c.keyLength]);
}

/** The [batch, heads, Lq, Lk] dropout factors (keep/(1 − p) or 0) the dropout op draws for `seed`. */
function dropoutFactors(c: Case, seed: number): Float32Array | undefined {
  if (c.dropout === undefined) return undefined;
  return tidy(() =>
    ops.dropout(Tensor.full([c.batch, c.heads, c.queryLength, c.keyLength], 1), c.dropout!, seed).toFloat32Array(),
  );
}

/** Output and gradients of explicit softmax attention in float64 for the upstream gradient `grad`. */
function reference(
  c: Case,
  [q, k, v, grad]: Float32Array[],
  mask: Float32Array | undefined,
  factors: Float32Array | undefined,
  scale: number,
) {
  const { batch, heads, kvHeads, queryLength: lq, keyLength: lk, headSize: d } = c;
  const out = new Float64Array(q.length),
    dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length),
    dv = new Float64Array(v.length);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const kvBase = (b * kvHeads + Math.floor(h / (heads / kvHeads))) * lk;
      for (let i = 0; i < lq; i++) {
        const row = (b * heads + h) * lq + i;
        const scores = new Float64Array(lk).fill(-Infinity);
        for (let j = 0; j < lk; j++) {
          if (c.causal && j > i + lk - lq) continue;
          if (mask !== undefined && mask[b * lk + j] === 0) continue;
          let dot = 0;
          for (let e = 0; e < d; e++) dot += q[row * d + e] * k[(kvBase + j) * d + e];
          scores[j] = dot * scale;
        }
        const max = Math.max(...scores);
        if (max === -Infinity) continue; // no key: zeros out, zero gradients
        const p = scores.map((s) => Math.exp(s - max));
        const sum = p.reduce((a, x) => a + x, 0);
        for (let j = 0; j < lk; j++) p[j] /= sum;
        const z = (j: number) => (factors === undefined ? 1 : factors[row * lk + j]);
        const dp = new Float64Array(lk);
        let rowTerm = 0;
        for (let j = 0; j < lk; j++) {
          let dot = 0;
          for (let e = 0; e < d; e++) {
            out[row * d + e] += p[j] * z(j) * v[(kvBase + j) * d + e];
            dv[(kvBase + j) * d + e] += p[j] * z(j) * grad[row * d + e];
            dot += grad[row * d + e] * v[(kvBase + j) * d + e];
          }
          dp[j] = z(j) * dot;
          rowTerm += p[j] * dp[j];
        }
        for (let j = 0; j < lk; j++) {
          const ds = p[j] * (dp[j] - rowTerm) * scale;
          for (let e = 0; e < d; e++) {
            dq[row * d + e] += ds * k[(kvBase + j) * d + e];
            dk[(kvBase + j) * d + e] += ds * q[row * d + e];
          }
        }
      }
    }
  }
  return { out, dq, dk, dv };
}

function inputsFor(c: Case) {
  return {
    query: randomTensor([c.batch, c.heads, c.queryLength, c.headSize]),
    key: randomTensor([c.batch, c.kvHeads, c.keyLength, c.headSize]),
    value: randomTensor([c.batch, c.kvHeads, c.keyLength, c.headSize]),
    grad: randomTensor([c.batch, c.heads, c.queryLength, c.headSize]),
    mask: maskFor(c),
  };
}

/** The native op's output and gradients, blocked or reference kernel. */
function runNative(c: Case, inputs: ReturnType<typeof inputsFor>, reference: boolean, seed: number) {
  const h = (t: Tensor) => handleOf(t, 'test', 'tensor');
  const args = {
    query: h(inputs.query),
    key: h(inputs.key),
    value: h(inputs.value),
    keyMask: inputs.mask === undefined ? undefined : h(inputs.mask),
    causal: c.causal ?? false,
    scale: 1 / Math.sqrt(c.headSize),
    p: c.dropout ?? 0,
    seed,
    reference,
  };
  const forward = native.attention(args);
  const output = tensorOf(forward.output);
  const logsumexp = tensorOf(forward.logsumexp);
  const grads = native.attentionBackward({
    ...args,
    gradOutput: h(inputs.grad),
    output: forward.output,
    logsumexp: forward.logsumexp,
  });
  return {
    out: output.toFloat32Array(),
    logsumexp: logsumexp.toFloat32Array(),
    dq: tensorOf(grads.query).toFloat32Array(),
    dk: tensorOf(grads.key).toFloat32Array(),
    dv: tensorOf(grads.value).toFloat32Array(),
  };
}

describe('fused attention against float64 softmax attention', () => {
  it.each(cases)('$label: blocked kernel, scalar reference and the autograd op', (c) => {
    tidy(() => {
      const inputs = inputsFor(c);
      const seed = 1000 + (baseSeed % 1000);
      const factors = dropoutFactors(c, seed);
      const scale = 1 / Math.sqrt(c.headSize);
      const expected = reference(
        c,
        [inputs.query, inputs.key, inputs.value, inputs.grad].map((t) => t.toFloat32Array()),
        inputs.mask?.toFloat32Array(),
        factors,
        scale,
      );
      // The blocked kernel on every ISA path this CPU has (its row steps are per-ISA bodies), then the reference.
      const kernels = [
        ...isaPaths.map((isa) => ({ name: `blocked (${isa})`, isa, reference: false })),
        { name: 'reference', isa: initialIsa, reference: true },
      ];
      for (const { name: kernel, isa, reference: useReference } of kernels) {
        setIsa(isa);
        const got = runNative(c, inputs, useReference, seed);
        setIsa(initialIsa);
        const tolerance = useReference ? 2e-6 : 2e-5;
        for (const [name, actual, wanted] of [
          ['output', got.out, expected.out],
          ['query gradient', got.dq, expected.dq],
          ['key gradient', got.dk, expected.dk],
          ['value gradient', got.dv, expected.dv],
        ] as const) {
          expect(relativeError(actual, wanted), `${c.label}, ${kernel} ${name}, ${seedNote}`).toBeLessThan(tolerance);
          expect(actual.every(Number.isFinite), `${c.label}, ${kernel} ${name} finite`).toBe(true);
        }
      }
      // Through the public op and autograd.
      for (const t of [inputs.query, inputs.key, inputs.value]) t.requireGrad();
      const output = ops.scaledDotProductAttention(inputs.query, inputs.key, inputs.value, {
        keyMask: inputs.mask,
        causal: c.causal,
        dropout: c.dropout === undefined ? undefined : { p: c.dropout, seed },
      });
      output.backward({ gradient: inputs.grad });
      expect(relativeError(output.toFloat32Array(), expected.out), `${c.label} op output, ${seedNote}`).toBeLessThan(
        2e-5,
      );
      expect(relativeError(inputs.query.grad!.toFloat32Array(), expected.dq), `${c.label} op dq`).toBeLessThan(2e-5);
      expect(relativeError(inputs.key.grad!.toFloat32Array(), expected.dk), `${c.label} op dk`).toBeLessThan(2e-5);
      expect(relativeError(inputs.value.grad!.toFloat32Array(), expected.dv), `${c.label} op dv`).toBeLessThan(2e-5);
    });
  });

  it('gives zeros for a query that sees no key, and a logsumexp of −∞ there', () => {
    tidy(() => {
      const c = cases.find((entry) => entry.label === 'rows that see no key')!;
      const got = runNative(c, inputsFor(c), false, 0);
      // Batch entry 1 is fully masked; in entry 0, causal rows i < Lq − Lk = 3 see no key.
      const rowsPerHead = c.queryLength;
      for (let row = 0; row < got.logsumexp.length; row++) {
        const b = Math.floor(row / (c.heads * rowsPerHead));
        const i = row % rowsPerHead;
        const empty = b === 1 || i < c.queryLength - c.keyLength;
        expect(got.logsumexp[row] === -Infinity, `row ${row}`).toBe(empty);
        if (empty) expect(got.out.slice(row * c.headSize, (row + 1) * c.headSize).every((x) => x === 0)).toBe(true);
      }
    });
  });

  it('with dropout equals softmax → dropout → matmul with the same seed, gradients too', () => {
    tidy(() => {
      const [batch, heads, lq, lk, d] = [2, 3, 21, 45, 12];
      const seed = 4242 + (baseSeed % 100);
      const leaves = () => [
        randomTensor([batch, heads, lq, d]),
        randomTensor([batch, heads, lk, d]),
        randomTensor([batch, heads, lk, d]),
      ];
      const [q, k, v] = leaves().map((t) => t.requireGrad());
      const [q2, k2, v2] = [q, k, v].map((t) => Tensor.from(t.toFloat32Array(), t.shape).requireGrad());
      const mask = maskFor({
        label: '',
        batch,
        heads,
        kvHeads: heads,
        queryLength: lq,
        keyLength: lk,
        headSize: d,
        mask: 'padding',
      })!;
      const grad = randomTensor([batch, heads, lq, d]);
      const fused = ops.scaledDotProductAttention(q, k, v, { keyMask: mask, dropout: { p: 0.25, seed } });
      const probabilities = ops.softmax(ops.scale(ops.matmul(q2, k2, { transposeB: true }), 1 / Math.sqrt(d)), mask);
      const composed = ops.matmul(ops.dropout(probabilities, 0.25, seed), v2);
      fused.backward({ gradient: grad });
      composed.backward({ gradient: grad });
      expect(relativeError(fused.toFloat32Array(), composed.toFloat32Array()), seedNote).toBeLessThan(1e-5);
      for (const [a, b] of [
        [q, q2],
        [k, k2],
        [v, v2],
      ]) {
        expect(relativeError(a.grad!.toFloat32Array(), b.grad!.toFloat32Array()), seedNote).toBeLessThan(1e-5);
      }
    });
  });

  // The backward splits key blocks and query blocks into tasks of their own when there are fewer (batch, kv head)
  // pairs than threads (the second case at 2 threads or more): the same sums in the same order, so the same bits.
  it.each(['grouped queries, heads 4 kvHeads 2', 'causal, past one query block and one key block'])(
    'gives the same bits whatever the thread count: %s',
    (label) => {
      tidy(() => {
        const c = cases.find((entry) => entry.label === label)!;
        const inputs = inputsFor(c);
        setNumThreads(1);
        const one = runNative(c, inputs, false, 5);
        setNumThreads(initialThreads);
        const many = runNative(c, inputs, false, 5);
        for (const key of ['out', 'dq', 'dk', 'dv'] as const) expect(many[key]).toEqual(one[key]);
      });
    },
  );
});

describe('fused attention on empty shapes', () => {
  it.each([
    [
      [1, 2, 0, 4],
      [1, 1, 3, 4],
    ],
    [
      [1, 2, 3, 4],
      [1, 1, 0, 4],
    ],
    [
      [0, 2, 3, 4],
      [0, 1, 3, 4],
    ],
    [
      [1, 2, 3, 0],
      [1, 1, 3, 0],
    ],
  ])("query %j, key %j: zeros where a query sees no key, gradients of the inputs' shapes", (queryShape, keyShape) => {
    tidy(() => {
      const [q, k, v] = [queryShape, keyShape, keyShape].map((shape) => randomTensor(shape).requireGrad());
      const output = ops.scaledDotProductAttention(q, k, v, { causal: true, dropout: { p: 0.2, seed: 3 } });
      output.backward({ gradient: randomTensor(queryShape) });
      expect(output.shape).toEqual(queryShape);
      expect(output.toFloat32Array().every((x) => x === 0)).toBe(true);
      for (const t of [q, k, v]) {
        expect(t.grad!.shape).toEqual(t.shape);
        expect(t.grad!.toFloat32Array().every((x) => x === 0)).toBe(true);
      }
    });
  });
});

describe('fused attention gradients against central differences', () => {
  const shapes = [
    { label: 'padding mask, grouped queries', causal: false, dropout: undefined },
    { label: 'causal, fewer queries than keys', causal: true, dropout: undefined },
    { label: 'dropout', causal: false, dropout: { p: 0.3, seed: 99 } },
  ];
  it.each(shapes)('$label', ({ label, causal, dropout }) => {
    tidy(() => {
      const mask = Tensor.from(Float32Array.from([1, 1, 0, 1, 1, 1, 1, 1, 1, 0]), [2, 5]);
      checkGradients(label, ([q, k, v]) => ops.scaledDotProductAttention(q, k, v, { keyMask: mask, causal, dropout }), [
        randomTensor([2, 4, 3, 5]).requireGrad(),
        randomTensor([2, 2, 5, 5]).requireGrad(),
        randomTensor([2, 2, 5, 5]).requireGrad(),
      ]);
    });
  });
});

describe('fused attention refuses bad input, naming the argument', () => {
  const q = () => randomTensor([1, 4, 3, 8]);
  const kv = (heads = 2, length = 5, d = 8) => randomTensor([1, heads, length, d]);
  const attend = ops.scaledDotProductAttention;
  it.each([
    ['a query that is not a tensor', () => attend([1] as never, kv(), kv()), TypeError, /query must be a Tensor/],
    ['a key that is not a tensor', () => attend(q(), undefined as never, kv()), TypeError, /key must be a Tensor/],
    ['a query of rank 3', () => attend(randomTensor([4, 3, 8]), kv(), kv()), RangeError, /query/],
    ['kvHeads not dividing heads', () => attend(q(), kv(3), kv(3)), RangeError, /kvHeads/],
    ['a head size that differs', () => attend(q(), kv(2, 5, 6), kv(2, 5, 6)), RangeError, /headSize/],
    ['value unlike key', () => attend(q(), kv(), kv(2, 4)), RangeError, /value/],
    [
      'a key mask of the wrong shape',
      () => attend(q(), kv(), kv(), { keyMask: Tensor.full([1, 4], 1) }),
      RangeError,
      /keyMask/,
    ],
    ['dropout p of 1', () => attend(q(), kv(), kv(), { dropout: { p: 1, seed: 1 } }), RangeError, /dropout\.p/],
    ['a negative seed', () => attend(q(), kv(), kv(), { dropout: { p: 0.1, seed: -1 } }), RangeError, /dropout\.seed/],
    ['a NaN scale', () => attend(q(), kv(), kv(), { scale: NaN }), RangeError, /scale/],
    ['causal not a boolean', () => attend(q(), kv(), kv(), { causal: 1 as never }), TypeError, /causal/],
  ])('%s', (_, call, type, message) => {
    tidy(() => {
      expect(call).toThrow(type);
      expect(call).toThrow(message);
    });
  });
});
