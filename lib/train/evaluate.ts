// Evaluation: predictions over a set of examples in eval mode without a graph, and the task's metrics.
import { noGrad } from '../autograd';
import { type EncoderTaskModel } from '../models/encoder';
import { tidy } from '../tensor';
import { collate, type Example } from './data';
import { argmaxRows, classificationMetrics, regressionMetrics } from './metrics';

export interface Evaluation {
  loss: number;
  metrics: Record<string, number>;
  predictions: Float32Array | Int32Array;
}

/** Runs `model` over `examples` in batches (eval mode, no graph) and scores the predictions. */
export function evaluate(model: EncoderTaskModel, examples: readonly Example[], batchSize = 64): Evaluation {
  const batches = evaluationBatches(model, examples, batchSize);
  for (;;) {
    const next = batches.next();
    if (next.done) return next.value;
  }
}

/**
 * evaluate() one batch at a time: each `next()` runs one batch, and the last returns the evaluation. Eval mode and
 * the graph switch apply within a batch only, so a caller can give the event loop a turn between batches without the
 * rest of the program seeing the model in eval mode.
 */
export function* evaluationBatches(
  model: EncoderTaskModel,
  examples: readonly Example[],
  batchSize = 64,
): Generator<void, Evaluation> {
  if (examples.length === 0) throw new RangeError('evaluate: no examples');
  const regression = model.config.problemType === 'regression';
  const classes = model.config.numLabels;
  const predictions = regression ? new Float32Array(examples.length) : new Int32Array(examples.length);
  let lossTotal = 0;
  for (let start = 0; start < examples.length; start += batchSize) {
    const chunk = examples.slice(start, start + batchSize);
    const wasTraining = model.training;
    model.eval();
    try {
      noGrad(() =>
        tidy(() => {
          const batch = collate(chunk, model.config.padTokenId, model.config);
          const { logits, loss } = model.forward(batch);
          lossTotal += loss!.item() * chunk.length;
          const values = logits.toFloat32Array();
          predictions.set(regression ? values : argmaxRows(values, classes), start);
        }),
      );
    } finally {
      model.train(wasTraining);
    }
    if (start + batchSize < examples.length) yield;
  }
  const labels = Float64Array.from(examples, (example) => example.label);
  const metrics = regression ? regressionMetrics(predictions, labels) : classificationMetrics(predictions, labels);
  return { loss: lossTotal / examples.length, metrics: { ...metrics }, predictions };
}

/** The metric a run is judged by, and whether higher is better. */
export function primaryMetric(model: EncoderTaskModel, name?: string): { name: string; higherIsBetter: boolean } {
  const chosen = name ?? (model.config.problemType === 'regression' ? 'mse' : 'accuracy');
  return { name: chosen, higherIsBetter: chosen !== 'mse' && chosen !== 'loss' };
}
