// Scoring what a language model generates: prompts left-padded into batches, the new tokens of each cut at its first
// end-of-sequence token, and exact match, token error rate and BLEU against reference completions.
import { deriveSeed } from '../random';
import { type GenerationMetrics, generationMetrics } from './generation-metrics';
import { paddingId, type TrainableModel } from './model';

/** What a model's generate takes (the causal-LM models' GenerateOptions), as far as scoring needs to know. */
export interface GenerationSettings {
  /** New tokens at most per prompt. */
  maxNewTokens?: number;
  /** Sample from the softmax instead of taking the most likely token. */
  doSample?: boolean;
  /** Sampling: logits divided by it. */
  temperature?: number;
  /** Sampling: keep the k most likely tokens. */
  topK?: number;
  /** Sampling: keep the smallest set of most likely tokens holding this probability. */
  topP?: number;
  /** Beam search with this many beams when more than 1. */
  numBeams?: number;
  /** Beam search: finished beams ranked by log-probability / length^lengthPenalty. */
  lengthPenalty?: number;
  /** With doSample: each batch samples from its own seed, hashed from this one (0 when not given). */
  seed?: number;
}

/** A language model that generates: `generate` returns each row's prompt (padding included) and new tokens. */
export interface GeneratingModel extends TrainableModel {
  /** Each row's prompt (padding included) followed by its new tokens, in `sequences`. */
  generate(
    inputs: {
      inputIds: { data: Int32Array; shape: [number, number] };
      attentionMask: { data: Int32Array; shape: [number, number] };
    },
    options?: GenerationSettings,
  ): Promise<{
    /** [batch] rows of ids: the prompt as given, then the new tokens. */
    sequences: number[][];
  }>;
}

/** Generation settings, and how generateCompletions batches. */
export interface CompletionOptions extends GenerationSettings {
  /** Prompts generated together (default 8). */
  batchSize?: number;
  /** Called with each batch's completions as they are ready, with the index of the batch's first prompt. */
  onBatch?: (completions: number[][], start: number) => void;
}

/**
 * The tokens `model` generates after each prompt (ids, start tokens included), in eval mode: prompts are left-padded
 * into batches of `batchSize`, and each completion ends before its first end-of-sequence token. With sampling, a
 * batch's seed is hashed from `seed` and the batch's first prompt index, so the tokens do not depend on how many
 * batches ran before.
 */
export async function generateCompletions(
  model: GeneratingModel,
  prompts: readonly (readonly number[])[],
  options: CompletionOptions = {},
): Promise<number[][]> {
  if (!Array.isArray(prompts) || prompts.length === 0) {
    throw new RangeError('generateCompletions: prompts must be a non-empty array of id arrays');
  }
  prompts.forEach((ids, index) => {
    if (!Array.isArray(ids) || ids.length === 0) {
      throw new RangeError(`generateCompletions: prompt ${index} must be a non-empty array of ids`);
    }
  });
  const { batchSize = 8, onBatch, seed, ...settings } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`generateCompletions: batchSize must be a positive integer, got ${String(batchSize)}`);
  }
  const stops = new Set(model.config.eosTokenIds ?? []);
  const pad = paddingId(model.config);
  const completions: number[][] = [];
  const wasTraining = model.training;
  model.eval();
  try {
    for (let start = 0; start < prompts.length; start += batchSize) {
      const chunk = prompts.slice(start, start + batchSize);
      const width = Math.max(...chunk.map((ids) => ids.length));
      const inputIds = new Int32Array(chunk.length * width).fill(pad);
      const attentionMask = new Int32Array(chunk.length * width);
      chunk.forEach((ids, row) => {
        const offset = row * width + width - ids.length;
        inputIds.set(ids, offset);
        attentionMask.fill(1, offset, (row + 1) * width);
      });
      const shape: [number, number] = [chunk.length, width];
      const { sequences } = await model.generate(
        { inputIds: { data: inputIds, shape }, attentionMask: { data: attentionMask, shape } },
        settings.doSample ? { ...settings, seed: deriveSeed(seed ?? 0, `generate.batch.${start}`) } : settings,
      );
      const batch = sequences.map((sequence) => {
        const added = sequence.slice(width);
        const end = added.findIndex((token) => stops.has(token));
        return end < 0 ? added : added.slice(0, end);
      });
      completions.push(...batch);
      onBatch?.(batch, start);
    }
  } finally {
    model.train(wasTraining);
  }
  return completions;
}

/** What evaluateGeneration returns. */
export interface GenerationEvaluation {
  /** Each prompt's generated tokens, before its end-of-sequence token. */
  completions: number[][];
  /** Exact match, token edit distance and error rate, and BLEU-4 of the completions. */
  metrics: GenerationMetrics;
}

/**
 * Generates a completion for each prompt and scores it against its reference (token ids, without the eos): exact
 * match, token edit distance and error rate, and corpus BLEU-4.
 */
export async function evaluateGeneration(
  model: GeneratingModel,
  examples: readonly { prompt: readonly number[]; reference: readonly number[] }[],
  options: CompletionOptions = {},
): Promise<GenerationEvaluation> {
  if (!Array.isArray(examples) || examples.length === 0) {
    throw new RangeError('evaluateGeneration: examples must be a non-empty array of { prompt, reference }');
  }
  const completions = await generateCompletions(
    model,
    examples.map((example) => example.prompt),
    options,
  );
  const metrics = generationMetrics(
    completions,
    examples.map((example) => example.reference),
  );
  return { completions, metrics };
}
