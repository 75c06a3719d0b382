// Metrics of language models and of the text they generate: perplexity from a mean token loss, and, over token
// sequences, exact match, Levenshtein edit distance with its corpus error rate, and corpus BLEU as sacrebleu computes it.

/** A sequence of tokens: token ids, or strings (words, characters, phonemes). */
export type TokenSequence = readonly (number | string)[];

/** exp(mean negative log-likelihood per token): the perplexity of a mean token loss (natural log, as the losses). */
export function perplexity(meanTokenLoss: number): number {
  if (typeof meanTokenLoss !== 'number' || Number.isNaN(meanTokenLoss)) {
    throw new RangeError(`perplexity: meanTokenLoss must be a number, got ${String(meanTokenLoss)}`);
  }
  return Math.exp(meanTokenLoss);
}

function checkSequences(fn: string, name: string, sequences: readonly TokenSequence[]): void {
  if (!Array.isArray(sequences)) throw new TypeError(`${fn}: ${name} must be an array of token sequences`);
  sequences.forEach((sequence, index) => {
    if (!Array.isArray(sequence)) throw new TypeError(`${fn}: ${name}[${index}] must be an array of tokens`);
  });
}

function checkCorpus(fn: string, predictions: readonly TokenSequence[], references: readonly TokenSequence[]): void {
  checkSequences(fn, 'predictions', predictions);
  checkSequences(fn, 'references', references);
  if (predictions.length !== references.length) {
    throw new RangeError(`${fn}: ${predictions.length} predictions for ${references.length} references`);
  }
  if (predictions.length === 0) throw new RangeError(`${fn}: no predictions`);
}

function sameTokens(a: TokenSequence, b: TokenSequence): boolean {
  return a.length === b.length && a.every((token, index) => token === b[index]);
}

/** The share of predictions equal to their reference, token for token. */
export function exactMatch(predictions: readonly TokenSequence[], references: readonly TokenSequence[]): number {
  checkCorpus('exactMatch', predictions, references);
  let equal = 0;
  predictions.forEach((prediction, index) => {
    if (sameTokens(prediction, references[index])) equal++;
  });
  return equal / predictions.length;
}

/**
 * Levenshtein distance between two token sequences: the fewest insertions, deletions and substitutions of one token
 * that turn `prediction` into `reference` (one row of the dynamic programme at a time).
 */
export function editDistance(prediction: TokenSequence, reference: TokenSequence): number {
  checkSequences('editDistance', 'sequences', [prediction, reference]);
  let previous = Array.from({ length: reference.length + 1 }, (_, column) => column);
  for (let row = 1; row <= prediction.length; row++) {
    const current = [row];
    for (let column = 1; column <= reference.length; column++) {
      const substitution = previous[column - 1] + (prediction[row - 1] === reference[column - 1] ? 0 : 1);
      current.push(Math.min(substitution, previous[column] + 1, current[column - 1] + 1));
    }
    previous = current;
  }
  return previous[reference.length];
}

/**
 * The corpus token error rate: the summed edit distances over the summed reference lengths, as word and phoneme
 * error rates are computed (jiwer's wer). It can exceed 1 when predictions are longer than their references.
 */
export function tokenErrorRate(predictions: readonly TokenSequence[], references: readonly TokenSequence[]): number {
  checkCorpus('tokenErrorRate', predictions, references);
  let errors = 0;
  let length = 0;
  predictions.forEach((prediction, index) => {
    errors += editDistance(prediction, references[index]);
    length += references[index].length;
  });
  if (length === 0) throw new RangeError('tokenErrorRate: every reference is empty, so the rate has no denominator');
  return errors / length;
}

/** How corpusBleu counts. */
export interface BleuOptions {
  /** The longest n-gram counted (default 4: BLEU-4). */
  maxOrder?: number;
  /**
   * How an order with no matching n-gram is scored: 'exp' (default, sacrebleu's default) gives it precision
   * 1 / (2^k · total) for the k-th such order; 'none' leaves it 0, so the score is 0 (the classic definition, NLTK).
   */
  smoothing?: 'exp' | 'none';
}

/** Corpus BLEU and the figures it is made of. */
export interface BleuScore {
  /** In [0, 1] (sacrebleu reports 100 times this). */
  bleu: number;
  /** The modified n-gram precision of each order, 1 to maxOrder, after smoothing. */
  precisions: number[];
  /** exp(1 − r/c) when the predictions' length c is below the references' r, else 1. */
  brevityPenalty: number;
  /** Tokens in the predictions. */
  predictionLength: number;
  /** Tokens in the references (per prediction, the reference length closest to its own). */
  referenceLength: number;
}

/** Every n-gram of `tokens` of order `order`, counted. Tokens are keyed with their type, so 1 and "1" differ. */
function ngramCounts(tokens: TokenSequence, order: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let start = 0; start + order <= tokens.length; start++) {
    const key = JSON.stringify(tokens.slice(start, start + order));
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/**
 * Corpus BLEU over token sequences (Papineni et al. 2002, as sacrebleu's corpus_bleu computes it on given tokens):
 * clipped n-gram matches and n-gram totals are summed over the corpus for each order, their precisions combined by a
 * geometric mean and multiplied by the brevity penalty exp(1 − r/c) when the predictions' length c is below the
 * references' r. A prediction's reference may be several sequences: counts are clipped by the most any of them
 * holds, and r takes the length closest to the prediction's (the shorter on a tie).
 */
export function corpusBleu(
  predictions: readonly TokenSequence[],
  references: readonly (TokenSequence | readonly TokenSequence[])[],
  options: BleuOptions = {},
): BleuScore {
  const maxOrder = options.maxOrder ?? 4;
  if (!Number.isInteger(maxOrder) || maxOrder < 1) {
    throw new RangeError(`corpusBleu: maxOrder must be a positive integer, got ${String(maxOrder)}`);
  }
  const smoothing = options.smoothing ?? 'exp';
  if (smoothing !== 'exp' && smoothing !== 'none') {
    throw new RangeError(`corpusBleu: smoothing must be 'exp' or 'none', got ${String(smoothing)}`);
  }
  const referenceSets = (references ?? []).map((reference) =>
    Array.isArray(reference) && reference.length > 0 && reference.every((item) => Array.isArray(item))
      ? (reference as readonly TokenSequence[])
      : [reference as TokenSequence],
  );
  checkSequences('corpusBleu', 'predictions', predictions);
  referenceSets.forEach((set, index) => checkSequences('corpusBleu', `references[${index}]`, set));
  if (predictions.length !== referenceSets.length) {
    throw new RangeError(`corpusBleu: ${predictions.length} predictions for ${referenceSets.length} references`);
  }
  if (predictions.length === 0) throw new RangeError('corpusBleu: no predictions');

  const matches = new Array<number>(maxOrder).fill(0);
  const totals = new Array<number>(maxOrder).fill(0);
  let predictionLength = 0;
  let referenceLength = 0;
  predictions.forEach((prediction, index) => {
    const set = referenceSets[index];
    predictionLength += prediction.length;
    let closest = set[0].length;
    for (const reference of set) {
      const gap = Math.abs(reference.length - prediction.length);
      const best = Math.abs(closest - prediction.length);
      if (gap < best || (gap === best && reference.length < closest)) closest = reference.length;
    }
    referenceLength += closest;
    for (let order = 1; order <= maxOrder; order++) {
      const most = new Map<string, number>();
      for (const reference of set) {
        for (const [key, count] of ngramCounts(reference, order)) most.set(key, Math.max(most.get(key) ?? 0, count));
      }
      for (const [key, count] of ngramCounts(prediction, order)) {
        matches[order - 1] += Math.min(count, most.get(key) ?? 0);
        totals[order - 1] += count;
      }
    }
  });

  // sacrebleu's compute_bleu: orders past the longest prediction stay at precision 0 (the score is then 0).
  const precisions = new Array<number>(maxOrder).fill(0);
  let smoothingFactor = 1;
  for (let order = 0; order < maxOrder; order++) {
    if (totals[order] === 0) break;
    if (matches[order] > 0) {
      precisions[order] = matches[order] / totals[order];
    } else if (smoothing === 'exp') {
      smoothingFactor *= 2;
      precisions[order] = 1 / (smoothingFactor * totals[order]);
    }
  }
  const brevityPenalty =
    predictionLength >= referenceLength
      ? 1
      : predictionLength === 0
        ? 0
        : Math.exp(1 - referenceLength / predictionLength);
  const bleu = precisions.some((precision) => precision === 0)
    ? 0
    : brevityPenalty * Math.exp(precisions.reduce((sum, precision) => sum + Math.log(precision), 0) / maxOrder);
  return { bleu, precisions, brevityPenalty, predictionLength, referenceLength };
}

/** The scores of generated token sequences against their references. */
export interface GenerationMetrics {
  /** The share of predictions equal to their reference. */
  exactMatch: number;
  /** Corpus token error rate: summed edit distances over summed reference lengths. */
  tokenErrorRate: number;
  /** Mean edit distance per example, in tokens. */
  editDistance: number;
  /** Corpus BLEU-4 in [0, 1], sacrebleu's exp smoothing. */
  bleu: number;
}

/** Exact match, token edit distance (mean and corpus rate) and corpus BLEU-4 of generated token sequences. */
export function generationMetrics(
  predictions: readonly TokenSequence[],
  references: readonly TokenSequence[],
): GenerationMetrics {
  checkCorpus('generationMetrics', predictions, references);
  const errors = predictions.reduce((sum, prediction, index) => sum + editDistance(prediction, references[index]), 0);
  return {
    exactMatch: exactMatch(predictions, references),
    tokenErrorRate: tokenErrorRate(predictions, references),
    editDistance: errors / predictions.length,
    bleu: corpusBleu(predictions, references).bleu,
  };
}
