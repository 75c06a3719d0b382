// Evaluation: predictions over a set of examples in eval mode without a graph, and the task's metrics.
import { noGrad } from '../autograd';
import { type EncoderTaskModel } from '../models/encoder';
import { select } from '../ops/shape';
import { tidy } from '../tensor';
import { type Example } from './data';
import { collateFor, type TrainableModel } from './model';
import {
  argmaxRows,
  classificationMetrics,
  entityMetrics,
  isEntityTagSet,
  multiLabelMetrics,
  perplexity,
  regressionMetrics,
} from './metrics';
import { IGNORE_INDEX } from '../ops/loss';
import { concatenateOverRanks, distributed, shardRange, sumOverRanks } from './distributed';

/** What `evaluate` returns: the task's loss and metrics over the examples, and the predictions they score. */
export interface Evaluation {
  /** The mean loss over the counted examples (token classification: over labelled tokens), as in training. */
  loss: number;
  /**
   * The task's metrics by name: accuracy, macroF1 and mcc for classification (per labelled token for token
   * classification, plus entityPrecision, entityRecall and entityF1 for BIO tags); mse, pearson and spearman for
   * regression; subsetAccuracy, microF1 and macroF1 for multi-label classification.
   */
  metrics: Record<string, number>;
  /**
   * Regression: the predicted values, one per example (Float32Array). Classification: each example's class id.
   * Multi-label: 0/1 decisions, [examples × classes] row by row. Token classification: the predicted class of each
   * labelled token, in order.
   */
  predictions: Float32Array | Int32Array;
}

/** Runs `model` over `examples` in batches (eval mode, no graph) and scores the predictions. */
export function evaluate(model: TrainableModel, examples: readonly Example[], batchSize = 64): Evaluation {
  const batches = evaluationBatches(model, examples, batchSize);
  for (;;) {
    const next = batches.next();
    if (next.done) return next.value;
  }
}

/**
 * evaluate() one batch at a time: each `next()` runs one batch, and the last returns the evaluation. Eval mode and
 * the graph switch apply within a batch only, so a caller can give the event loop a turn between batches without the
 * rest of the program seeing the model in eval mode. With `sharded`, under MPI (train.distributed()) each rank runs
 * its contiguous share of the examples and the ranks combine predictions and loss sums, so every rank returns the
 * evaluation of the whole set; every rank must then call it, with the same examples.
 */
export function* evaluationBatches(
  trainable: TrainableModel,
  examples: readonly Example[],
  batchSize = 64,
  sharded = false,
): Generator<void, Evaluation> {
  if (examples.length === 0) throw new RangeError('evaluate: no examples');
  const { rank, worldSize } = sharded ? distributed() : { rank: 0, worldSize: 1 };
  const range: Range = { ...shardRange(examples.length, rank, worldSize), gather: worldSize > 1 };
  if (trainable.config.task === 'causal-lm') return yield* causalEvaluation(trainable, examples, batchSize, range);
  // Every other task is an encoder's, with its head's config (numLabels, problemType, id2label).
  const model = trainable as unknown as EncoderTaskModel;
  if (model.config.task === 'token-classification') return yield* tokenEvaluation(model, examples, batchSize, range);
  if (model.config.problemType === 'multi_label_classification') {
    return yield* multiLabelEvaluation(model, examples, batchSize, range);
  }
  const regression = model.config.problemType === 'regression';
  const classes = model.config.numLabels;
  const predictions = regression ? new Float32Array(examples.length) : new Int32Array(examples.length);
  // Rows labelled -100 are out of the loss (transformers) and so out of the metrics and the loss's weights.
  const counts = (example: Example) => regression || example.label !== IGNORE_INDEX;
  let lossTotal = 0;
  let counted = 0;
  for (let start = range.begin; start < range.end; start += batchSize) {
    const chunk = examples.slice(start, Math.min(start + batchSize, range.end));
    yield* inEvalMode(model, start + batchSize < range.end, () => {
      const batch = collateFor(model, chunk);
      const { logits, loss } = model.forward(batch);
      const rows = chunk.filter(counts).length;
      if (rows > 0) lossTotal += loss!.item() * rows;
      counted += rows;
      const values = logits.toFloat32Array();
      predictions.set(regression ? values : argmaxRows(values, classes), start);
    });
  }
  if (range.gather) {
    // Each rank filled its own rows and left the others 0: the sums are everyone's predictions.
    predictions.set(sumOverRanks(Float32Array.from(predictions)));
    [lossTotal, counted] = sumOverRanks(Float32Array.of(lossTotal, counted));
  }
  if (counted === 0) throw new RangeError('evaluate: every example is labelled -100 (ignored)');
  const kept = examples.flatMap((example, index) => (counts(example) ? [index] : []));
  const labels = Float64Array.from(kept, (index) => examples[index].label as number);
  const scored =
    kept.length === examples.length ? predictions : predictions.filter((_, index) => counts(examples[index]));
  const metrics = regression ? regressionMetrics(scored, labels) : classificationMetrics(scored, labels);
  return { loss: lossTotal / counted, metrics: { ...metrics }, predictions };
}

/**
 * Runs `batch` in eval mode without a graph, then yields when more batches follow. The mode switch covers one batch
 * only, so whatever runs between batches sees the model as it was.
 */
function* inEvalMode(model: TrainableModel, more: boolean, batch: () => void): Generator<void, void> {
  const wasTraining = model.training;
  model.eval();
  try {
    noGrad(() => tidy(batch));
  } finally {
    model.train(wasTraining);
  }
  if (more) yield;
}

/**
 * Multi-label classification: a class is predicted when its logit is positive (σ > 0.5); `predictions` holds the
 * 0/1 decisions, [examples × classes] row by row.
 */
function* multiLabelEvaluation(
  model: EncoderTaskModel,
  examples: readonly Example[],
  batchSize: number,
  range: Range,
): Generator<void, Evaluation> {
  const classes = model.config.numLabels;
  const predictions = new Int32Array(examples.length * classes);
  let lossTotal = 0;
  for (let start = range.begin; start < range.end; start += batchSize) {
    const chunk = examples.slice(start, Math.min(start + batchSize, range.end));
    yield* inEvalMode(model, start + batchSize < range.end, () => {
      const { logits, loss } = model.forward(collateFor(model, chunk));
      lossTotal += loss!.item() * chunk.length;
      predictions.set(
        Int32Array.from(logits.toFloat32Array(), (logit) => (logit > 0 ? 1 : 0)),
        start * classes,
      );
    });
  }
  if (range.gather) {
    predictions.set(sumOverRanks(Float32Array.from(predictions)));
    [lossTotal] = sumOverRanks(Float32Array.of(lossTotal));
  }
  const targets = Float64Array.from(examples.flatMap((example) => example.label as readonly number[]));
  const metrics = multiLabelMetrics(predictions, targets, classes);
  return { loss: lossTotal / examples.length, metrics: { ...metrics }, predictions };
}

/**
 * Token classification: the loss is the mean over labelled tokens (as transformers' cross-entropy over a batch), the
 * metrics are over labelled tokens, plus entity-level precision, recall and F1 when the labels are BIO tags
 * (id2label names such as B-PER, I-PER, O). `predictions` holds the labelled tokens' predicted classes in order.
 */
function* tokenEvaluation(
  model: EncoderTaskModel,
  examples: readonly Example[],
  batchSize: number,
  range: Range,
): Generator<void, Evaluation> {
  const classes = model.config.numLabels;
  let predicted: number[] = [];
  let truth: number[] = [];
  // Labelled tokens per example: the rows of predicted and truth.
  let rowLengths: number[] = [];
  let lossTotal = 0;
  for (let start = range.begin; start < range.end; start += batchSize) {
    const chunk = examples.slice(start, Math.min(start + batchSize, range.end));
    yield* inEvalMode(model, start + batchSize < range.end, () => {
      const batch = collateFor(model, chunk);
      const { logits, loss } = model.forward(batch);
      const best = argmaxRows(logits.toFloat32Array(), classes);
      const seq = batch.inputIds.shape[1];
      let labelled = 0;
      chunk.forEach((_, row) => {
        const rowPredicted: number[] = [];
        const rowTrue: number[] = [];
        for (let column = 0; column < seq; column++) {
          const label = batch.labels[row * seq + column];
          if (label === IGNORE_INDEX) continue;
          rowPredicted.push(best[row * seq + column]);
          rowTrue.push(label);
        }
        labelled += rowTrue.length;
        predicted.push(...rowPredicted);
        truth.push(...rowTrue);
        rowLengths.push(rowTrue.length);
      });
      if (labelled > 0) lossTotal += loss!.item() * labelled;
    });
  }
  if (range.gather) {
    [predicted, truth, rowLengths] = [predicted, truth, rowLengths].map((values) => [...concatenateOverRanks(values)]);
    [lossTotal] = sumOverRanks(Float32Array.of(lossTotal));
  }
  const rows = (flat: number[]) => {
    let offset = 0;
    return rowLengths.map((length) => flat.slice(offset, (offset += length)));
  };
  const predictedTags = rows(predicted);
  const trueTags = rows(truth);
  if (truth.length === 0) throw new RangeError('evaluate: no example has a labelled token (every label is -100)');
  const metrics: Record<string, number> = { ...classificationMetrics(predicted, truth) };
  const names = labelNames(model);
  if (names !== undefined && isEntityTagSet(names)) {
    const tags = (sequences: number[][]) => sequences.map((sequence) => sequence.map((id) => names[id]));
    Object.assign(metrics, entityMetrics(tags(predictedTags), tags(trueTags)));
  }
  return { loss: lossTotal / truth.length, metrics, predictions: Int32Array.from(predicted) };
}

/** The class names of id2label, in id order, when the config has them. */
function labelNames(model: EncoderTaskModel): string[] | undefined {
  const id2label = model.config.raw.id2label;
  if (id2label === undefined || id2label === null) return undefined;
  return Array.from({ length: model.config.numLabels }, (_, id) => id2label[String(id)]);
}

/**
 * A causal language model's loss (the mean over every predicted token, as transformers' loss over one batch), its
 * perplexity, and next-token accuracy: how often the largest logit at a position is the label of the next one.
 * `predictions` holds those argmax ids, labelled positions only, in order.
 */
function* causalEvaluation(
  model: TrainableModel,
  examples: readonly Example[],
  batchSize: number,
  range: Range,
): Generator<void, Evaluation> {
  const vocabulary = model.config.vocabSize;
  let predicted: number[] = [];
  let correct = 0;
  let lossTotal = 0;
  for (let start = range.begin; start < range.end; start += batchSize) {
    const chunk = examples.slice(start, Math.min(start + batchSize, range.end));
    yield* inEvalMode(model, start + batchSize < range.end, () => {
      const batch = collateFor(model, chunk);
      const { logits, loss } = model.forward(batch);
      const [rows, seq] = batch.inputIds.shape;
      const classes = vocabulary ?? logits.shape[2];
      let counted = 0;
      for (let row = 0; row < rows; row++) {
        // One row's logits at a time: a batch's [batch, seq, vocab] would be gigabytes for a real vocabulary.
        const best = argmaxRows(select(logits, 0, row).toFloat32Array(), classes);
        for (let position = 0; position + 1 < seq; position++) {
          const next = batch.labels[row * seq + position + 1];
          if (next === IGNORE_INDEX) continue;
          counted++;
          predicted.push(best[position]);
          if (best[position] === next) correct++;
        }
      }
      if (counted > 0) lossTotal += loss!.item() * counted;
    });
  }
  if (range.gather) {
    // Token ids below 2^24 (every vocabulary in use) travel exactly as float32.
    predicted = [...concatenateOverRanks(predicted)];
    [correct, lossTotal] = sumOverRanks(Float32Array.of(correct, lossTotal));
  }
  if (predicted.length === 0) throw new RangeError('evaluate: no example has a token to predict (every label is -100)');
  const loss = lossTotal / predicted.length;
  return {
    loss,
    metrics: { perplexity: perplexity(loss), tokenAccuracy: correct / predicted.length },
    predictions: Int32Array.from(predicted),
  };
}

/** The examples [begin, end) this process evaluates, and whether the ranks then combine their results. */
interface Range {
  begin: number;
  end: number;
  gather: boolean;
}

/** Metrics where lower is better; every other one is better higher. */
const LOWER_IS_BETTER = new Set(['loss', 'mse', 'perplexity', 'tokenErrorRate', 'editDistance']);

/** The metric a run is judged by, and whether higher is better. */
export function primaryMetric(model: TrainableModel, name?: string): { name: string; higherIsBetter: boolean } {
  const { problemType, task } = model.config;
  const chosen =
    name ??
    (task === 'causal-lm'
      ? 'loss'
      : problemType === 'regression'
        ? 'mse'
        : problemType === 'multi_label_classification'
          ? 'microF1'
          : 'accuracy');
  return { name: chosen, higherIsBetter: !LOWER_IS_BETTER.has(chosen) };
}
