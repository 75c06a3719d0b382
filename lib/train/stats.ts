// Summary statistics over runs (seeds) and the Wilcoxon signed-rank test for paired comparisons of two methods,
// computed as scipy.stats.wilcoxon computes them so p-values match published ones.
import { averageRanks } from './metrics';

/** The arithmetic mean; NaN for no values. */
export function mean(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}

/** The sample standard deviation (n − 1 in the denominator); NaN for fewer than two values. */
export function standardDeviation(values: readonly number[]): number {
  if (values.length < 2) return Number.NaN;
  const centre = mean(values);
  const squares = values.reduce((sum, value) => sum + (value - centre) ** 2, 0);
  return Math.sqrt(squares / (values.length - 1));
}

/** a[i] − b[i] for each pair, e.g. one method's score minus another's on the same seeds or tasks. */
export function pairedDifferences(a: readonly number[], b: readonly number[]): number[] {
  if (a.length !== b.length) throw new RangeError(`pairedDifferences: ${a.length} values paired with ${b.length}`);
  return a.map((value, index) => value - b[index]);
}

/**
 * The complementary error function, erfc(x) = 1 − erf(x), accurate to about 1e-15 relative: a positive-term series
 * for erf below 2.5 and a continued fraction for the tail above, where 1 − erf would lose every digit.
 */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  if (x < 0) return 2 - erfc(-x);
  if (x < 2.5) {
    // erf(x) = 2/√π · e^(−x²) · Σ_k x·(2x²)^k / (1·3·…·(2k+1)): every term is positive, so nothing cancels.
    let term = x;
    let sum = x;
    for (let k = 1; term > sum * 1e-17; k++) {
      term *= (2 * x * x) / (2 * k + 1);
      sum += term;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
  }
  // erfc(x) = e^(−x²)/√π / (x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), evaluated by the modified Lentz method.
  const tiny = 1e-300;
  let fraction = x;
  let numerators = x;
  let denominators = 0;
  for (let k = 1; k < 1000; k++) {
    const partial = k / 2;
    denominators = 1 / (x + partial * denominators);
    numerators = x + partial / (Math.abs(numerators) < tiny ? tiny : numerators);
    const step = numerators * denominators;
    fraction *= step;
    if (Math.abs(step - 1) < 1e-16) break;
  }
  return Math.exp(-x * x) / (Math.sqrt(Math.PI) * fraction);
}

/** How `wilcoxonSignedRank` computes its p-value. */
export interface WilcoxonOptions {
  /**
   * 'exact': the null distribution of the rank sum; 'normal': the normal approximation with tie correction;
   * 'auto' (default): exact for at most 25 non-zero differences without ties, normal otherwise.
   */
  method?: 'auto' | 'exact' | 'normal';
  /** Continuity correction of the normal approximation (default false, as scipy.stats.wilcoxon's `correction`). */
  continuityCorrection?: boolean;
}

/** The Wilcoxon signed-rank test's outcome, as scipy.stats.wilcoxon reports it. */
export interface WilcoxonResult {
  /** min(W+, W−): the smaller of the rank sums of the positive and of the negative differences. */
  statistic: number;
  /** Two-sided; NaN when every difference is zero. */
  pValue: number;
  /** Non-zero differences, the ones ranked. */
  n: number;
  /** Which null distribution gave the p-value (what 'auto' chose). */
  method: 'exact' | 'normal';
}

/** Largest n for which 'auto' uses the exact distribution. */
export const WILCOXON_EXACT_MAXIMUM = 25;

/** P(W+ = k) for k = 0 … n(n+1)/2 when each rank 1 … n is positive with probability 1/2 independently. */
function signedRankDistribution(n: number): Float64Array {
  const maximum = (n * (n + 1)) / 2;
  let probabilities = new Float64Array(maximum + 1);
  probabilities[0] = 1;
  for (let rank = 1; rank <= n; rank++) {
    const next = new Float64Array(maximum + 1);
    const reached = (rank * (rank - 1)) / 2; // largest sum of the ranks before this one
    for (let sum = 0; sum <= reached; sum++) {
      next[sum] += probabilities[sum] / 2;
      next[sum + rank] += probabilities[sum] / 2;
    }
    probabilities = next;
  }
  return probabilities;
}

/**
 * The two-sided Wilcoxon signed-rank test that the differences are symmetric about zero. Zero differences are
 * dropped (Wilcoxon's method, scipy's zero_method='wilcox'); the rest are ranked by absolute value with tied values
 * sharing the average rank.
 */
export function wilcoxonSignedRank(differences: readonly number[], options: WilcoxonOptions = {}): WilcoxonResult {
  if (differences.some((difference) => !Number.isFinite(difference))) {
    throw new RangeError('wilcoxonSignedRank: differences must be finite numbers');
  }
  const nonZero = differences.filter((difference) => difference !== 0);
  const n = nonZero.length;
  const ranks = averageRanks(nonZero.map(Math.abs));
  let positiveSum = 0;
  nonZero.forEach((difference, index) => {
    if (difference > 0) positiveSum += ranks[index];
  });
  const negativeSum = (n * (n + 1)) / 2 - positiveSum;
  const statistic = Math.min(positiveSum, negativeSum);

  // Σ(t³ − t) over groups of tied absolute values: the variance correction, and zero exactly when nothing ties.
  const groupSizes = new Map<number, number>();
  for (const rank of ranks) groupSizes.set(rank, (groupSizes.get(rank) ?? 0) + 1);
  let tieTerm = 0;
  for (const size of groupSizes.values()) tieTerm += size ** 3 - size;

  const requested = options.method ?? 'auto';
  const method = requested === 'auto' ? (n <= WILCOXON_EXACT_MAXIMUM && tieTerm === 0 ? 'exact' : 'normal') : requested;
  if (n === 0) return { statistic: 0, pValue: Number.NaN, n, method };

  if (method === 'exact') {
    const probabilities = signedRankDistribution(n);
    const atMost = (k: number): number => probabilities.slice(0, k + 1).reduce((sum, p) => sum + p, 0);
    const atLeast = (k: number): number => probabilities.slice(Math.max(0, k)).reduce((sum, p) => sum + p, 0);
    // With ties W+ can be a half-integer, outside the support: round towards the centre on each side (conservative,
    // as scipy does).
    const lowerTail = atMost(Math.ceil(positiveSum));
    const upperTail = atLeast(Math.floor(positiveSum));
    return { statistic, pValue: Math.min(1, 2 * Math.min(lowerTail, upperTail)), n, method };
  }

  const expected = (n * (n + 1)) / 4;
  const standardError = Math.sqrt((n * (n + 1) * (2 * n + 1) - tieTerm / 2) / 24);
  let z = (positiveSum - expected) / standardError;
  if (options.continuityCorrection) z -= (Math.sign(z) * 0.5) / standardError;
  return { statistic, pValue: Math.min(1, erfc(Math.abs(z) / Math.SQRT2)), n, method };
}
