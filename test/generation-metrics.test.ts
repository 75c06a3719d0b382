// Generation metrics against cases worked by hand from their definitions, and edit distance against a brute-force
// recursion over every alignment.
import { describe, expect, it } from 'vitest';

import {
  corpusBleu,
  editDistance,
  exactMatch,
  generationMetrics,
  perplexity,
  tokenErrorRate,
} from '../lib/train/metrics';
import { Random } from '../lib/random';

const chars = (text: string) => [...text];

describe('perplexity and exact match', () => {
  it('perplexity is exp of the mean token loss', () => {
    expect(perplexity(Math.log(5))).toBeCloseTo(5, 12);
    expect(perplexity(0)).toBe(1);
    expect(() => perplexity(Number.NaN)).toThrow(RangeError);
  });

  it('exact match compares whole sequences token for token (1 and "1" differ)', () => {
    expect(
      exactMatch(
        [[1, 2], [3], [4, 5]],
        [
          [1, 2],
          [3, 0],
          [4, 5],
        ],
      ),
    ).toBeCloseTo(2 / 3, 12);
    expect(exactMatch([[1]], [['1']])).toBe(0);
    expect(exactMatch([[]], [[]])).toBe(1);
    expect(() => exactMatch([[1]], [])).toThrow(/1 predictions for 0 references/);
    expect(() => exactMatch([], [])).toThrow(/no predictions/);
    expect(() => exactMatch([1 as never], [[1]])).toThrow(TypeError);
  });
});

/** The edit distance straight from its recursive definition (exponential without the memo). */
function bruteDistance(a: readonly number[], b: readonly number[]): number {
  const memo = new Map<string, number>();
  const go = (i: number, j: number): number => {
    if (i === 0) return j;
    if (j === 0) return i;
    const key = `${i},${j}`;
    const known = memo.get(key);
    if (known !== undefined) return known;
    const value = Math.min(go(i - 1, j) + 1, go(i, j - 1) + 1, go(i - 1, j - 1) + (a[i - 1] === b[j - 1] ? 0 : 1));
    memo.set(key, value);
    return value;
  };
  return go(a.length, b.length);
}

describe('edit distance', () => {
  it('worked cases: kitten → sitting 3, flaw → lawn 2, to or from nothing the length', () => {
    expect(editDistance(chars('kitten'), chars('sitting'))).toBe(3);
    expect(editDistance(chars('flaw'), chars('lawn'))).toBe(2);
    expect(editDistance([], [7, 8, 9])).toBe(3);
    expect(editDistance([7, 8], [])).toBe(2);
    expect(editDistance([1, 2, 3], [1, 2, 3])).toBe(0);
  });

  it('equals the recursive definition on random sequences, and is symmetric', () => {
    const random = new Random(11);
    for (let trial = 0; trial < 60; trial++) {
      const a = Array.from({ length: random.int(9) }, () => random.int(4));
      const b = Array.from({ length: random.int(9) }, () => random.int(4));
      expect(editDistance(a, b)).toBe(bruteDistance(a, b));
      expect(editDistance(b, a)).toBe(editDistance(a, b));
    }
  });

  it('the corpus rate sums distances over summed reference lengths', () => {
    // abc → ac: one deletion; x → yz: a substitution and an insertion. (1 + 2) / (2 + 2).
    expect(tokenErrorRate([chars('abc'), ['x']], [chars('ac'), chars('yz')])).toBeCloseTo(0.75, 12);
    expect(() => tokenErrorRate([[1]], [[]])).toThrow(/every reference is empty/);
  });
});

describe('corpus BLEU', () => {
  it('one sentence, every order matching in part, with the brevity penalty', () => {
    // p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2; c = 5 < r = 6: BP = exp(1 − 6/5).
    const score = corpusBleu([chars('abcde')], [chars('abcdfg')]);
    expect(score.precisions.map((p) => Number(p.toFixed(12)))).toEqual([0.8, 0.75, Number((2 / 3).toFixed(12)), 0.5]);
    expect(score.brevityPenalty).toBeCloseTo(Math.exp(1 - 6 / 5), 12);
    expect(score.bleu).toBeCloseTo(Math.exp(1 - 6 / 5) * (0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25, 12);
    expect(score.bleu).toBeCloseTo(0.5475182535, 9);
  });

  it('sums counts over the corpus before taking precisions (not a mean of sentence scores)', () => {
    // abcd/abcd: 4/4, 3/3, 2/2, 1/1. xy/xzw: 1/2, 0/1, no 3- or 4-grams. Corpus: 5/6, 3/4, 2/2, 1/1; c 6, r 7.
    const score = corpusBleu([chars('abcd'), chars('xy')], [chars('abcd'), chars('xzw')]);
    expect(score.predictionLength).toBe(6);
    expect(score.referenceLength).toBe(7);
    expect(score.bleu).toBeCloseTo(Math.exp(1 - 7 / 6) * ((5 / 6) * (3 / 4)) ** 0.25, 12);
  });

  it('clips a repeated token at its count in the reference', () => {
    const score = corpusBleu([Array(7).fill('the')], [['the', 'cat', 'is', 'on', 'the', 'mat']], { maxOrder: 1 });
    expect(score.precisions[0]).toBeCloseTo(2 / 7, 12);
    expect(score.brevityPenalty).toBe(1);
    expect(score.bleu).toBeCloseTo(2 / 7, 12);
  });

  it("an order without a match: sacrebleu's exp smoothing gives 1/(2^k·total); none gives 0", () => {
    // abcde vs abxde: 4/5, 2/4, then 0/3 and 0/2, smoothed to 1/(2·3) and 1/(4·2); lengths equal, BP 1.
    const smoothed = corpusBleu([chars('abcde')], [chars('abxde')]);
    expect(smoothed.precisions[2]).toBeCloseTo(1 / 6, 12);
    expect(smoothed.precisions[3]).toBeCloseTo(1 / 8, 12);
    expect(smoothed.bleu).toBeCloseTo((0.8 * 0.5 * (1 / 6) * (1 / 8)) ** 0.25, 12);
    expect(corpusBleu([chars('abcde')], [chars('abxde')], { smoothing: 'none' }).bleu).toBe(0);
    // Shorter than four tokens everywhere: no 4-grams at all, so BLEU-4 is 0 whatever the smoothing.
    expect(corpusBleu([chars('abc')], [chars('abc')]).bleu).toBe(0);
    expect(corpusBleu([[]], [chars('abc')]).bleu).toBe(0);
  });

  it('several references: clipped by the most any holds, r the closest length (the shorter on a tie)', () => {
    const score = corpusBleu([chars('abc')], [[chars('abcde'), chars('ab')]], { maxOrder: 2 });
    expect(score.referenceLength).toBe(2); // |5 − 3| = 2, |2 − 3| = 1
    expect(score.bleu).toBeCloseTo(1, 12); // abc's 1- and 2-grams all in abcde; c 3 > r 2
    expect(corpusBleu([chars('abc')], [[chars('abcd'), chars('ab')]], { maxOrder: 1 }).referenceLength).toBe(2);
  });

  it('refuses bad arguments by name', () => {
    expect(() => corpusBleu([[1]], [[1]], { maxOrder: 0 })).toThrow(/maxOrder/);
    expect(() => corpusBleu([[1]], [[1]], { smoothing: 'add-k' as never })).toThrow(/smoothing/);
    expect(() => corpusBleu([[1], [2]], [[1]])).toThrow(/2 predictions for 1 references/);
  });
});

describe('generationMetrics', () => {
  it('gathers exact match, mean distance, the corpus error rate and BLEU-4', () => {
    const predictions = [chars('abcde'), chars('xyz')];
    const references = [chars('abcde'), chars('xz')];
    const metrics = generationMetrics(predictions, references);
    expect(metrics.exactMatch).toBe(0.5);
    expect(metrics.editDistance).toBe(0.5); // 0 and 1
    expect(metrics.tokenErrorRate).toBeCloseTo(1 / 7, 12);
    expect(metrics.bleu).toBeCloseTo(corpusBleu(predictions, references).bleu, 15);
  });
});
