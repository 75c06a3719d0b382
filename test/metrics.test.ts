// Metrics and statistics: hand-worked cases, and brute-force references written here from the definitions
// (MCC from one-hot covariances, Spearman from counted ranks, Wilcoxon p-values by enumerating every sign pattern).
import { describe, expect, it } from 'vitest';

import {
  accuracy,
  argmaxRows,
  averageRanks,
  classificationMetrics,
  entitiesOf,
  entityMetrics,
  isEntityTagSet,
  macroF1,
  multiLabelMetrics,
  matthewsCorrelation,
  meanSquaredError,
  pearson,
  regressionMetrics,
  spearman,
} from '../lib/train/metrics';
import { Random } from '../lib/random';
import { erfc, mean, pairedDifferences, standardDeviation, wilcoxonSignedRank } from '../lib/train/stats';

function randomClasses(random: Random, count: number, classes: number): number[] {
  return Array.from({ length: count }, () => random.int(classes));
}

/** MCC as the correlation of one-hot truth and prediction matrices: cov(X, Y) / √(cov(X, X) · cov(Y, Y)). */
function mccFromCovariance(predictions: number[], labels: number[]): number {
  const classes = [...new Set([...labels, ...predictions])];
  const oneHot = (values: number[]): number[][] => values.map((value) => classes.map((c) => (c === value ? 1 : 0)));
  const truth = oneHot(labels);
  const predicted = oneHot(predictions);
  const covariance = (a: number[][], b: number[][]): number => {
    let total = 0;
    classes.forEach((_, k) => {
      const meanA = a.reduce((sum, row) => sum + row[k], 0) / a.length;
      const meanB = b.reduce((sum, row) => sum + row[k], 0) / b.length;
      a.forEach((row, i) => (total += (row[k] - meanA) * (b[i][k] - meanB)));
    });
    return total;
  };
  const denominator = Math.sqrt(covariance(truth, truth) * covariance(predicted, predicted));
  return denominator === 0 ? 0 : covariance(truth, predicted) / denominator;
}

/** Macro F1 from per-class precision and recall (each 0 when undefined), over classes in labels or predictions. */
function macroF1FromPrecisionRecall(predictions: number[], labels: number[]): number {
  const classes = [...new Set([...labels, ...predictions])];
  const scores = classes.map((c) => {
    const truePositives = labels.filter((label, i) => label === c && predictions[i] === c).length;
    const predictedCount = predictions.filter((p) => p === c).length;
    const actualCount = labels.filter((label) => label === c).length;
    const precision = predictedCount === 0 ? 0 : truePositives / predictedCount;
    const recall = actualCount === 0 ? 0 : truePositives / actualCount;
    return precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  });
  return scores.reduce((sum, score) => sum + score, 0) / scores.length;
}

/** Rank = (values below) + (ties, itself included, + 1) / 2: the average rank, counted instead of sorted. */
function countedRanks(values: number[]): number[] {
  return values.map((value) => {
    const below = values.filter((other) => other < value).length;
    const equal = values.filter((other) => other === value).length;
    return below + (equal + 1) / 2;
  });
}

function correlation(x: number[], y: number[]): number {
  const n = x.length;
  const sumX = x.reduce((s, v) => s + v, 0);
  const sumY = y.reduce((s, v) => s + v, 0);
  const sumXY = x.reduce((s, v, i) => s + v * y[i], 0);
  const sumXX = x.reduce((s, v) => s + v * v, 0);
  const sumYY = y.reduce((s, v) => s + v * v, 0);
  return (n * sumXY - sumX * sumY) / Math.sqrt((n * sumXX - sumX ** 2) * (n * sumYY - sumY ** 2));
}

describe('classification metrics', () => {
  it('accuracy counts matches', () => {
    expect(accuracy([0, 1, 2, 1], [0, 2, 2, 1])).toBe(0.75);
    expect(accuracy(new Int32Array([3, 3]), new Float64Array([3, 3]))).toBe(1);
  });

  it('macro F1 by hand: a missed class scores 0, a predicted-only class scores 0 and counts', () => {
    // class 0: tp 1 of 2 true, 2 predicted → 0.5; class 1: tp 2, 2 true, 3 predicted → 0.8; class 2 never hit → 0.
    expect(macroF1([0, 1, 1, 1, 0], [0, 0, 1, 1, 2])).toBeCloseTo((0.5 + 0.8 + 0) / 3, 14);
    // class 2 is predicted but absent from the labels: it enters with F1 0.
    expect(macroF1([0, 2, 1], [0, 0, 1])).toBeCloseTo((2 / 3 + 1 + 0) / 3, 14);
    expect(macroF1([4, 4, 7], [4, 4, 7])).toBe(1);
  });

  it('macro F1 matches per-class precision/recall on random cases', () => {
    const random = new Random(11);
    for (let trial = 0; trial < 200; trial++) {
      const count = 1 + random.int(40);
      const classes = 1 + random.int(6);
      const labels = randomClasses(random, count, classes);
      const predictions = randomClasses(random, count, classes + 1);
      expect(macroF1(predictions, labels)).toBeCloseTo(macroF1FromPrecisionRecall(predictions, labels), 12);
    }
  });

  it('MCC: binary case equals (tp·tn − fp·fn)/√(…), perfect is 1, inverted is −1, constant is 0', () => {
    const labels = [1, 1, 1, 0, 0, 0, 0, 1, 0, 1];
    const predictions = [1, 0, 1, 0, 1, 0, 0, 1, 1, 1];
    const [tp, tn, fp, fn] = [4, 3, 2, 1];
    const expected = (tp * tn - fp * fn) / Math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn));
    expect(matthewsCorrelation(predictions, labels)).toBeCloseTo(expected, 14);
    expect(matthewsCorrelation(labels, labels)).toBe(1);
    expect(
      matthewsCorrelation(
        labels.map((label) => 1 - label),
        labels,
      ),
    ).toBeCloseTo(-1, 14);
    expect(matthewsCorrelation([2, 2, 2, 2], [0, 1, 2, 1])).toBe(0);
    expect(matthewsCorrelation([0, 1, 2, 1], [5, 5, 5, 5])).toBe(0);
  });

  it('multi-class MCC matches the one-hot covariance definition on random cases', () => {
    const random = new Random(12);
    for (let trial = 0; trial < 200; trial++) {
      const count = 2 + random.int(40);
      const classes = 2 + random.int(5);
      const labels = randomClasses(random, count, classes);
      // Correlated predictions: right about half the time, so MCC spans more than the neighbourhood of 0.
      const predictions = labels.map((label) => (random.next() < 0.5 ? label : random.int(classes)));
      expect(matthewsCorrelation(predictions, labels)).toBeCloseTo(mccFromCovariance(predictions, labels), 12);
    }
  });

  it('classificationMetrics gathers the three; bad input throws', () => {
    const metrics = classificationMetrics(new Int32Array([0, 1, 1]), new Float64Array([0, 1, 0]));
    expect(Object.keys(metrics).sort()).toEqual(['accuracy', 'macroF1', 'mcc']);
    expect(metrics.accuracy).toBeCloseTo(2 / 3, 14);
    expect(metrics.macroF1).toBeCloseTo((2 / 3 + 2 / 3) / 2, 14);
    expect(metrics.mcc).toBeCloseTo(0.5, 14);
    expect(() => classificationMetrics([0, 1], [0])).toThrow(RangeError);
    expect(() => classificationMetrics([], [])).toThrow(/no predictions/);
    expect(() => macroF1([0.5], [0])).toThrow(/integers/);
  });

  it('argmaxRows picks the largest logit per row, the first on ties, never NaN', () => {
    const logits = new Float32Array([0.1, 2, -1, 5, 5, 1, Number.NaN, -3, -4, -2, -2, -2]);
    expect(Array.from(argmaxRows(logits, 3))).toEqual([1, 0, 1, 0]);
    expect(Array.from(argmaxRows(new Float32Array([1, 2, 3]), 1))).toEqual([0, 0, 0]);
    expect(() => argmaxRows(new Float32Array(5), 2)).toThrow(RangeError);
  });
});

describe('regression metrics', () => {
  it('MSE and Pearson by hand', () => {
    expect(meanSquaredError([1, 2, 4], [1, 0, 1])).toBeCloseTo((0 + 4 + 9) / 3, 14);
    // x̄ = 2, ȳ = 13/3: Σdxdy = 5, Σdx² = 2, Σdy² = 114/9.
    expect(pearson([1, 2, 3], [2, 4, 7])).toBeCloseTo(5 / Math.sqrt((2 * 114) / 9), 14);
    expect(pearson([1, 2, 3], [6, 4, 2])).toBeCloseTo(-1, 14);
    expect(pearson([1, 1, 1], [1, 2, 3])).toBeNaN();
  });

  it('Pearson stays accurate with a large offset', () => {
    const x = [1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 4];
    expect(pearson(x, [1, 2, 3, 5])).toBeCloseTo(correlation([1, 2, 3, 4], [1, 2, 3, 5]), 12);
  });

  it('average ranks share tied positions', () => {
    expect(Array.from(averageRanks([10, 20, 10, 30, 20, 10]))).toEqual([2, 4.5, 2, 6, 4.5, 2]);
  });

  it('Spearman equals Pearson of counted ranks (ties included), and 1 − 6Σd²/(n(n²−1)) without ties', () => {
    const random = new Random(13);
    for (let trial = 0; trial < 100; trial++) {
      const count = 3 + random.int(30);
      const x = Array.from({ length: count }, () => random.int(8));
      const y = x.map((value) => value + random.int(6));
      const expected = correlation(countedRanks(x), countedRanks(y));
      if (Number.isNaN(expected)) expect(spearman(x, y)).toBeNaN();
      else expect(spearman(x, y)).toBeCloseTo(expected, 12);
    }
    const x = [3.1, 1.2, 5.5, 4.4, 2.0];
    const y = [2.0, 1.0, 3.0, 5.0, 4.0];
    const d2 = countedRanks(x).reduce((sum, rank, i) => sum + (rank - countedRanks(y)[i]) ** 2, 0);
    expect(spearman(x, y)).toBeCloseTo(1 - (6 * d2) / (5 * 24), 14);
    expect(spearman([1, Number.NaN, 3], [1, 2, 3])).toBeNaN();
  });

  it('regressionMetrics gathers the three', () => {
    const metrics = regressionMetrics(new Float32Array([1, 2, 3, 4]), new Float64Array([1, 3, 2, 4]));
    expect(metrics.mse).toBeCloseTo(0.5, 14);
    expect(metrics.pearson).toBeCloseTo(0.8, 6);
    expect(metrics.spearman).toBeCloseTo(0.8, 14);
  });
});

/** Two-sided p by enumerating all 2^n sign patterns of the ranks: P(min(W+, W−) ≤ observed). */
function enumeratedWilcoxonP(differences: number[]): number {
  const nonZero = differences.filter((d) => d !== 0);
  const ranks = countedRanks(nonZero.map(Math.abs));
  const total = ranks.reduce((sum, rank) => sum + rank, 0);
  const observedPlus = nonZero.reduce((sum, d, i) => sum + (d > 0 ? ranks[i] : 0), 0);
  const observed = Math.min(observedPlus, total - observedPlus);
  let atMostObserved = 0;
  const patterns = 2 ** nonZero.length;
  for (let signs = 0; signs < patterns; signs++) {
    let plus = 0;
    ranks.forEach((rank, i) => {
      if (signs & (1 << i)) plus += rank;
    });
    if (Math.min(plus, total - plus) <= observed + 1e-9) atMostObserved++;
  }
  return atMostObserved / patterns;
}

describe('entity metrics (seqeval)', () => {
  it('a worked BIO case: spans match only with type and both ends, micro-averaged over sequences', () => {
    const truth = [
      ['B-PER', 'I-PER', 'O', 'B-LOC'],
      ['O', 'B-ORG', 'I-ORG', 'I-ORG'],
    ];
    const predicted = [
      ['B-PER', 'I-PER', 'O', 'B-LOC'],
      ['O', 'B-ORG', 'I-ORG', 'O'],
    ];
    // True: PER 0-1, LOC 3, ORG 1-3. Predicted: PER 0-1, LOC 3, ORG 1-2 (the wrong end). 2 of 3 each way.
    const scores = entityMetrics(predicted, truth);
    expect(scores.entityPrecision).toBeCloseTo(2 / 3, 15);
    expect(scores.entityRecall).toBeCloseTo(2 / 3, 15);
    expect(scores.entityF1).toBeCloseTo(2 / 3, 15);
    // One extra predicted span lowers precision only: P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7.
    const extra = entityMetrics([predicted[0], ['B-MISC', 'B-ORG', 'I-ORG', 'O']], truth);
    expect(extra.entityPrecision).toBe(0.5);
    expect(extra.entityF1).toBeCloseTo(4 / 7, 15);
  });

  it('reads chunks as conlleval does: an I after O or another type starts one, B splits, E and S end them', () => {
    const spans = (tags: string[]) => entitiesOf(tags).map(({ type, start, end }) => `${type}:${start}-${end}`);
    expect(spans(['I-PER', 'I-PER', 'O'])).toEqual(['PER:0-1']);
    expect(spans(['B-PER', 'I-LOC', 'I-LOC'])).toEqual(['PER:0-0', 'LOC:1-2']);
    expect(spans(['B-PER', 'B-PER', 'I-PER'])).toEqual(['PER:0-0', 'PER:1-2']);
    expect(spans(['S-PER', 'B-LOC', 'E-LOC', 'I-LOC'])).toEqual(['PER:0-0', 'LOC:1-2', 'LOC:3-3']);
    expect(spans(['O', 'O'])).toEqual([]);
    expect(isEntityTagSet(['O', 'B-PER', 'I-PER'])).toBe(true);
    expect(isEntityTagSet(['LABEL_0', 'LABEL_1'])).toBe(false);
    expect(() => entityMetrics([['O']], [['O', 'O']])).toThrow(/sequence 0 has 1 predicted tags for 2 true ones/);
  });

  it("Spearman with ties is scipy's value; MCC of a worked multi-class case", () => {
    // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).statistic: ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4].
    expect(spearman([1, 2, 2, 3], [1, 3, 2, 4])).toBeCloseTo(4.5 / Math.sqrt(4.5 * 5), 14);
    // sklearn.metrics.matthews_corrcoef([0, 1, 2, 2], [0, 2, 2, 1]): c = 2, s = 4, p_k = (1, 1, 2), t_k = (1, 1, 2).
    const c = 2;
    const samples = 4;
    const pt = 1 * 1 + 1 * 1 + 2 * 2;
    const expected = (c * samples - pt) / Math.sqrt((samples ** 2 - 6) * (samples ** 2 - 6));
    expect(matthewsCorrelation([0, 2, 2, 1], [0, 1, 2, 2])).toBeCloseTo(expected, 14);
  });
});

describe('multi-label metrics', () => {
  it('subset accuracy, micro- and macro-F1 by hand', () => {
    // Rows: [1,0,1] vs [1,0,0]; [0,1,0] vs [0,1,0]; [1,1,0] vs [0,1,1].
    const predicted = [1, 0, 0, 0, 1, 0, 0, 1, 1];
    const truth = [1, 0, 1, 0, 1, 0, 1, 1, 0];
    const scores = multiLabelMetrics(predicted, truth, 3);
    expect(scores.subsetAccuracy).toBeCloseTo(1 / 3, 15);
    // Pooled: tp 3 (c0 r0, c1 r1, c1 r2), fp 1 (c2 r2), fn 2 (c2 r0, c0 r2): 2·3 / (6 + 1 + 2).
    expect(scores.microF1).toBeCloseTo(6 / 9, 15);
    // Per class: c0 tp1 fn1 → 2/3; c1 tp2 → 1; c2 fp1 fn1 → 0.
    expect(scores.macroF1).toBeCloseTo((2 / 3 + 1 + 0) / 3, 15);
    expect(() => multiLabelMetrics([1, 0], [1, 0], 3)).toThrow(/2 decisions do not make rows of 3 classes/);
  });
});

describe('statistics', () => {
  it('mean, sample standard deviation and paired differences', () => {
    expect(mean([2, 4, 4, 4, 5, 5, 7, 9])).toBe(5);
    expect(standardDeviation([2, 4, 4, 4, 5, 5, 7, 9])).toBeCloseTo(Math.sqrt(32 / 7), 14);
    expect(mean([])).toBeNaN();
    expect(standardDeviation([3])).toBeNaN();
    expect(pairedDifferences([0.9, 0.8, 0.7], [0.85, 0.8, 0.75])).toEqual([0.9 - 0.85, 0, 0.7 - 0.75]);
    expect(() => pairedDifferences([1], [1, 2])).toThrow(RangeError);
  });

  it('erfc matches known values across the series and continued-fraction ranges', () => {
    const known: [number, number][] = [
      [0, 1],
      [0.1, 0.8875370839817152],
      [0.5, 0.4795001221869535],
      [1, 0.15729920705028516],
      [2, 0.004677734981047266],
      [2.5, 0.00040695201744495886],
      [3, 2.2090496998585445e-5],
      [5, 1.5374597944280347e-12],
      [10, 2.0884875837625446e-45],
    ];
    for (const [x, value] of known) {
      expect(Math.abs(erfc(x) - value) / value).toBeLessThan(1e-13);
      expect(erfc(-x)).toBeCloseTo(2 - value, 14);
    }
  });

  it('Wilcoxon exact p-values equal the enumeration of every sign pattern', () => {
    const random = new Random(14);
    for (let trial = 0; trial < 40; trial++) {
      const n = 1 + random.int(14);
      // Distinct magnitudes (no ties), random signs.
      const magnitudes = shuffledMagnitudes(random, n);
      const differences = magnitudes.map((m) => (random.next() < 0.5 ? -m : m));
      const result = wilcoxonSignedRank(differences);
      expect(result.method).toBe('exact');
      expect(result.n).toBe(n);
      expect(result.pValue).toBeCloseTo(enumeratedWilcoxonP(differences), 12);
    }
  });

  it('Wilcoxon known values: scipy.stats.wilcoxon on the same data', () => {
    // Darwin's plant data as in SciPy's documentation: exact, statistic 24.
    const darwin = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75];
    expect(wilcoxonSignedRank(darwin)).toEqual({ statistic: 24, pValue: 0.041259765625, n: 15, method: 'exact' });
    // 60 differences with one zero (dropped) and ties: normal approximation with tie correction.
    const wide = Array.from({ length: 60 }, (_, i) => (((i + 1) * 37) % 101) - 40);
    const plain = wilcoxonSignedRank(wide);
    expect(plain.n).toBe(59);
    expect(plain.statistic).toBe(535.5);
    expect(plain.method).toBe('normal');
    expect(plain.pValue).toBeCloseTo(0.00833714647154324, 13);
    expect(wilcoxonSignedRank(wide, { continuityCorrection: true }).pValue).toBeCloseTo(0.008430399521170024, 13);
    // Heavy ties among 40 differences.
    const tied = Array.from({ length: 40 }, (_, i) => ((i + 1) % 7) - 2.5);
    expect(wilcoxonSignedRank(tied).statistic).toBe(300);
    expect(wilcoxonSignedRank(tied).pValue).toBeCloseTo(0.13562347864438992, 13);
    expect(wilcoxonSignedRank(tied, { continuityCorrection: true }).pValue).toBeCloseTo(0.13740994998859496, 13);
    // 30 positive differences: the exact tail is 2/2^30, the normal approximation much larger.
    const allPositive = Array.from({ length: 30 }, (_, i) => i + 1);
    expect(wilcoxonSignedRank(allPositive).pValue).toBeCloseTo(1.7343976283205784e-6, 18);
    expect(wilcoxonSignedRank(allPositive, { method: 'exact' }).pValue).toBe(2 / 2 ** 30);
  });

  it('Wilcoxon with ties under 25 uses the normal approximation; forced exact rounds W+ as scipy does', () => {
    const small = [1.5, -0.5, 2, 2, 3, -1, 4, 0, 5, -2, 6, 0.5];
    const normal = wilcoxonSignedRank(small);
    expect(normal).toMatchObject({ statistic: 10.5, n: 11, method: 'normal' });
    expect(normal.pValue).toBeCloseTo(0.04491449845750614, 13);
    expect(wilcoxonSignedRank(small, { method: 'exact' }).pValue).toBeCloseTo(0.0537109375, 15);
  });

  it('Wilcoxon drops zeros, and is symmetric in the sign of the differences', () => {
    const differences = [0.3, -0.1, 0.7, 0.2, -0.45, 0.9];
    const withZeros = [0, ...differences, 0, 0];
    expect(wilcoxonSignedRank(withZeros)).toEqual(wilcoxonSignedRank(differences));
    expect(wilcoxonSignedRank(differences.map((d) => -d))).toEqual(wilcoxonSignedRank(differences));
    expect(wilcoxonSignedRank([0, 0]).pValue).toBeNaN();
    expect(wilcoxonSignedRank([1]).pValue).toBe(1);
    expect(() => wilcoxonSignedRank([1, Number.NaN])).toThrow(RangeError);
  });
});

function shuffledMagnitudes(random: Random, count: number): number[] {
  const magnitudes = Array.from({ length: count }, (_, i) => (i + 1) * 0.37 + random.next() * 0.1);
  for (let last = count - 1; last > 0; last--) {
    const pick = random.int(last + 1);
    [magnitudes[last], magnitudes[pick]] = [magnitudes[pick], magnitudes[last]];
  }
  return magnitudes;
}
