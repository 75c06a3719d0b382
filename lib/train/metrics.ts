// Evaluation metrics for classification (accuracy, macro F1, Matthews correlation), regression (MSE, Pearson,
// Spearman) and named entities (span precision, recall and F1 over BIO tags), defined as scikit-learn, SciPy and
// seqeval define them so reported numbers compare with published ones.

/** A single-label classifier's scores, each in the scikit-learn definition. */
export interface ClassificationMetrics {
  /** The share of examples predicted right, in [0, 1]. */
  accuracy: number;
  /** The unweighted mean over classes of each class's F1, in [0, 1]. */
  macroF1: number;
  /** Matthews correlation coefficient (multiclass), in [-1, 1]; 0 when either side is constant. */
  mcc: number;
}

/** A regression's scores against its targets. */
export interface RegressionMetrics {
  /** Mean squared error, in the targets' units squared. */
  mse: number;
  /** Pearson's correlation; NaN when either side is constant. */
  pearson: number;
  /** Spearman's rank correlation (ties averaged); NaN when either side is constant. */
  spearman: number;
}

function checkPair(fn: string, predictions: ArrayLike<number>, labels: ArrayLike<number>): void {
  if (predictions.length !== labels.length) {
    throw new RangeError(`${fn}: ${predictions.length} predictions for ${labels.length} labels`);
  }
  if (predictions.length === 0) throw new RangeError(`${fn}: no predictions`);
}

function checkClassIds(fn: string, predictions: ArrayLike<number>, labels: ArrayLike<number>): void {
  checkPair(fn, predictions, labels);
  for (let index = 0; index < labels.length; index++) {
    if (!Number.isInteger(predictions[index]) || !Number.isInteger(labels[index])) {
      throw new RangeError(
        `${fn}: class ids must be integers (prediction ${predictions[index]}, label ${labels[index]} at ${index})`,
      );
    }
  }
}

/** The confusion matrix over the classes present in labels or predictions: counts[true][predicted]. */
function confusionMatrix(predictions: ArrayLike<number>, labels: ArrayLike<number>): number[][] {
  const classes = [...new Set([...Array.from(labels), ...Array.from(predictions)])].sort((a, b) => a - b);
  const indexOf = new Map(classes.map((label, index) => [label, index]));
  const counts = classes.map(() => new Array<number>(classes.length).fill(0));
  for (let index = 0; index < labels.length; index++) {
    counts[indexOf.get(labels[index])!][indexOf.get(predictions[index])!]++;
  }
  return counts;
}

/** Fraction of predictions equal to their label. */
export function accuracy(predictions: ArrayLike<number>, labels: ArrayLike<number>): number {
  checkPair('accuracy', predictions, labels);
  let correct = 0;
  for (let index = 0; index < labels.length; index++) if (predictions[index] === labels[index]) correct++;
  return correct / labels.length;
}

/**
 * The unweighted mean of per-class F1 over the classes present in labels or predictions. A class that is predicted
 * but never true (or true but never predicted) scores 0, as scikit-learn's f1_score(average='macro') gives it; a
 * class in neither never enters.
 */
export function macroF1(predictions: ArrayLike<number>, labels: ArrayLike<number>): number {
  checkClassIds('macroF1', predictions, labels);
  const counts = confusionMatrix(predictions, labels);
  let total = 0;
  counts.forEach((row, index) => {
    const truePositives = row[index];
    const actual = row.reduce((sum, count) => sum + count, 0);
    const predicted = counts.reduce((sum, other) => sum + other[index], 0);
    // 2PR/(P+R) with P = tp/predicted and R = tp/actual, written so that no term divides by zero.
    total += (2 * truePositives) / (actual + predicted);
  });
  return total / counts.length;
}

/**
 * Matthews correlation for any number of classes (Gorodkin's R_K, scikit-learn's matthews_corrcoef): the covariance
 * of the one-hot truth and prediction over the square root of their variances; 0 when either is constant.
 */
export function matthewsCorrelation(predictions: ArrayLike<number>, labels: ArrayLike<number>): number {
  checkClassIds('matthewsCorrelation', predictions, labels);
  const counts = confusionMatrix(predictions, labels);
  const samples = labels.length;
  const trueTotals = counts.map((row) => row.reduce((sum, count) => sum + count, 0));
  const predictedTotals = counts.map((_, column) => counts.reduce((sum, row) => sum + row[column], 0));
  const correct = counts.reduce((sum, row, index) => sum + row[index], 0);
  const dot = (a: number[], b: number[]): number => a.reduce((sum, value, index) => sum + value * b[index], 0);
  const covariance = correct * samples - dot(trueTotals, predictedTotals);
  const trueVariance = samples * samples - dot(trueTotals, trueTotals);
  const predictedVariance = samples * samples - dot(predictedTotals, predictedTotals);
  if (trueVariance === 0 || predictedVariance === 0) return 0;
  return covariance / Math.sqrt(trueVariance * predictedVariance);
}

/** The mean of (prediction − target)²; a RangeError when the lengths differ. */
export function meanSquaredError(predictions: ArrayLike<number>, targets: ArrayLike<number>): number {
  checkPair('meanSquaredError', predictions, targets);
  let total = 0;
  for (let index = 0; index < targets.length; index++) total += (predictions[index] - targets[index]) ** 2;
  return total / targets.length;
}

/** Pearson's correlation coefficient; NaN when either side is constant (as SciPy's pearsonr). */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  checkPair('pearson', x, y);
  const count = x.length;
  let meanX = 0;
  let meanY = 0;
  for (let index = 0; index < count; index++) {
    meanX += x[index];
    meanY += y[index];
  }
  meanX /= count;
  meanY /= count;
  // Centred sums (two passes) rather than Σxy − n·x̄ȳ, which cancels badly when the means are large.
  let crossSum = 0;
  let squaresX = 0;
  let squaresY = 0;
  for (let index = 0; index < count; index++) {
    const dx = x[index] - meanX;
    const dy = y[index] - meanY;
    crossSum += dx * dy;
    squaresX += dx * dx;
    squaresY += dy * dy;
  }
  if (squaresX === 0 || squaresY === 0) return Number.NaN;
  // Rounding can put |r| a hair above 1.
  return Math.max(-1, Math.min(1, crossSum / Math.sqrt(squaresX * squaresY)));
}

/** 1-based ranks, tied values sharing the mean of the ranks they span. */
export function averageRanks(values: ArrayLike<number>): Float64Array {
  const order = Array.from({ length: values.length }, (_, index) => index).sort((a, b) => values[a] - values[b]);
  const ranks = new Float64Array(values.length);
  for (let start = 0; start < order.length;) {
    let end = start + 1;
    while (end < order.length && values[order[end]] === values[order[start]]) end++;
    const shared = (start + 1 + end) / 2; // mean of ranks start+1 .. end
    for (let position = start; position < end; position++) ranks[order[position]] = shared;
    start = end;
  }
  return ranks;
}

/** Spearman's rank correlation: Pearson's correlation of the average ranks; NaN if any value is NaN. */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  checkPair('spearman', x, y);
  // NaN has no rank (it would also break the sort), so it propagates as it does through pearson.
  if (Array.from(x).some(Number.isNaN) || Array.from(y).some(Number.isNaN)) return Number.NaN;
  return pearson(averageRanks(x), averageRanks(y));
}

/** Accuracy, macro F1 and MCC of class-id predictions. */
export function classificationMetrics(
  predictions: ArrayLike<number>,
  labels: ArrayLike<number>,
): ClassificationMetrics {
  return {
    accuracy: accuracy(predictions, labels),
    macroF1: macroF1(predictions, labels),
    mcc: matthewsCorrelation(predictions, labels),
  };
}

/** MSE, Pearson and Spearman of regression predictions. */
export function regressionMetrics(predictions: ArrayLike<number>, targets: ArrayLike<number>): RegressionMetrics {
  return {
    mse: meanSquaredError(predictions, targets),
    pearson: pearson(predictions, targets),
    spearman: spearman(predictions, targets),
  };
}

/** The index of the largest logit in each row of a [rows, classes] matrix (the first on ties; NaN never wins). */
export function argmaxRows(logits: Float32Array, classes: number): Int32Array {
  if (!Number.isInteger(classes) || classes < 1 || logits.length % classes !== 0) {
    throw new RangeError(`argmaxRows: ${logits.length} logits do not make rows of ${classes} classes`);
  }
  const rows = logits.length / classes;
  const result = new Int32Array(rows);
  for (let row = 0; row < rows; row++) {
    const offset = row * classes;
    let best = 0;
    let bestValue = -Infinity;
    for (let column = 0; column < classes; column++) {
      if (logits[offset + column] > bestValue) {
        bestValue = logits[offset + column];
        best = column;
      }
    }
    result[row] = best;
  }
  return result;
}

/** Span-level named-entity scores, micro-averaged as seqeval's. */
export interface EntityMetrics {
  /** Predicted entities that match a true one (type and both ends) over all predicted; 0 when none is predicted. */
  entityPrecision: number;
  /** True entities found over all true ones; 0 when there are none. */
  entityRecall: number;
  /** The harmonic mean of precision and recall; 0 when both are 0. */
  entityF1: number;
}

/** A labelled span: its type and its first and last positions. */
export interface Entity {
  /** The entity type, the tag without its prefix ("PER" of "B-PER"). */
  type: string;
  /** The position of its first tag, counting from 0. */
  start: number;
  /** The position of its last tag (inclusive). */
  end: number;
}

/** Splits a tag into its prefix (B, I, E, S, or O) and type ("B-PER" → ["B", "PER"]; "O" → ["O", ""]). */
function splitTag(tag: string): [string, string] {
  if (tag === 'O' || tag === '') return ['O', ''];
  const match = /^([BIES])[-_](.+)$/.exec(tag);
  // A tag without a prefix names its type alone, as seqeval reads it: a chunk of its own kind.
  return match === null ? ['I', tag] : [match[1], match[2]];
}

/**
 * The entities of one tag sequence, read as conlleval and seqeval's default mode read them: a chunk starts at B (or
 * S), or at an I (or E) whose type differs from the tag before it or that follows O; it runs while I or E of its type
 * continue it, and ends at E or S.
 */
export function entitiesOf(tags: readonly string[]): Entity[] {
  const entities: Entity[] = [];
  let open: Entity | undefined;
  let previous: [string, string] = ['O', ''];
  tags.forEach((tag, position) => {
    const [prefix, type] = splitTag(tag);
    const [previousPrefix, previousType] = previous;
    const continues =
      open !== undefined &&
      type === previousType &&
      (prefix === 'I' || prefix === 'E') &&
      previousPrefix !== 'E' &&
      previousPrefix !== 'S';
    if (!continues) {
      if (open) entities.push(open);
      open = prefix === 'O' ? undefined : { type, start: position, end: position };
    } else {
      open!.end = position;
    }
    previous = [prefix, type];
  });
  if (open) entities.push(open);
  return entities;
}

/**
 * Span-level precision, recall and F1 over every sequence (micro-averaged, as seqeval's classification report's
 * "micro avg" and Hugging Face's `overall_f1`): a predicted entity counts only when its type and both ends match.
 */
export function entityMetrics(
  predicted: readonly (readonly string[])[],
  truth: readonly (readonly string[])[],
): EntityMetrics {
  if (predicted.length !== truth.length) {
    throw new RangeError(`entityMetrics: ${predicted.length} predicted sequences for ${truth.length} true ones`);
  }
  let correct = 0;
  let predictedCount = 0;
  let trueCount = 0;
  predicted.forEach((sequence, index) => {
    if (sequence.length !== truth[index].length) {
      throw new RangeError(
        `entityMetrics: sequence ${index} has ${sequence.length} predicted tags for ${truth[index].length} true ones`,
      );
    }
    const key = (entity: Entity) => `${entity.type}\u0000${entity.start}\u0000${entity.end}`;
    const wanted = new Set(entitiesOf(truth[index]).map(key));
    const found = entitiesOf(sequence);
    trueCount += wanted.size;
    predictedCount += found.length;
    correct += found.filter((entity) => wanted.has(key(entity))).length;
  });
  const precision = predictedCount === 0 ? 0 : correct / predictedCount;
  const recall = trueCount === 0 ? 0 : correct / trueCount;
  const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  return { entityPrecision: precision, entityRecall: recall, entityF1: f1 };
}

/** Whether label names are BIO-style entity tags (O, B-X, I-X, ...), so entity metrics mean something. */
export function isEntityTagSet(names: readonly string[]): boolean {
  return names.length > 1 && names.every((name) => name === 'O' || /^[BIES][-_].+$/.test(name));
}

/** A multi-label classifier's scores over 0/1 decisions, as scikit-learn's. */
export interface MultiLabelMetrics {
  /** Examples whose every class decision is right (scikit-learn's accuracy_score on label sets). */
  subsetAccuracy: number;
  /** F1 over every (example, class) decision pooled: f1_score(average='micro'). */
  microF1: number;
  /** The mean over classes of each class's F1 (a class never true nor predicted scores 0, as scikit-learn's). */
  macroF1: number;
}

/** Multi-label scores of 0/1 decisions against 0/1 targets, both [examples × classes] row by row. */
export function multiLabelMetrics(
  predictions: ArrayLike<number>,
  targets: ArrayLike<number>,
  classes: number,
): MultiLabelMetrics {
  checkPair('multiLabelMetrics', predictions, targets);
  if (!Number.isInteger(classes) || classes < 1 || predictions.length % classes !== 0) {
    throw new RangeError(`multiLabelMetrics: ${predictions.length} decisions do not make rows of ${classes} classes`);
  }
  const perClass = Array.from({ length: classes }, () => ({ tp: 0, fp: 0, fn: 0 }));
  let exact = 0;
  for (let row = 0; row < predictions.length / classes; row++) {
    let allRight = true;
    for (let label = 0; label < classes; label++) {
      const predicted = predictions[row * classes + label] > 0.5;
      const truth = targets[row * classes + label] > 0.5;
      if (predicted !== truth) allRight = false;
      if (predicted && truth) perClass[label].tp++;
      else if (predicted) perClass[label].fp++;
      else if (truth) perClass[label].fn++;
    }
    if (allRight) exact++;
  }
  const f1 = ({ tp, fp, fn }: { tp: number; fp: number; fn: number }) => (tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn));
  const pooled = perClass.reduce((total, counts) => ({
    tp: total.tp + counts.tp,
    fp: total.fp + counts.fp,
    fn: total.fn + counts.fn,
  }));
  return {
    subsetAccuracy: exact / (predictions.length / classes),
    microF1: f1(pooled),
    macroF1: perClass.reduce((total, counts) => total + f1(counts), 0) / classes,
  };
}

export * from './generation-metrics';
