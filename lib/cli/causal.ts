// What the commands share for causal language models (GPT-2, Llama, Qwen2): loading one, turning its tokenizer and
// config into the encoding of examples and prompts, and reading language-modelling files.
import { existsSync } from 'node:fs';

import { load } from '../models/index';
import * as tokenizers from '../tokenizers/index';
import {
  type CausalEncoding,
  causalExamples,
  type CausalRow,
  isPromptRow,
  packExamples,
  readCausalExamplesFile,
} from '../train/causal-data';
import { type Example } from '../train/data';
import { ExamplesFileError } from '../train/files';
import { evaluateGeneration, type GeneratingModel } from '../train/generation-eval';
import { type TrainableModel } from '../train/model';
import { type OptionValues, UsageError } from './args';
import { DEFAULT_MAX_LENGTH } from './task';
import { type TrainingJob } from './train';

/** A causal language model as the commands use it: trainable, and able to generate. */
export type CausalLM = GeneratingModel;

/** The causal language model in checkpoint folder `dir`, or a UsageError naming what the folder holds instead. */
export function loadCausalLM(dir: string, seed: number, option = '--model'): CausalLM {
  const model = load(dir, { seed }) as unknown as CausalLM;
  if (model.config.task !== 'causal-lm' || typeof model.generate !== 'function') {
    const architecture = (model.config as { architecture?: string }).architecture ?? model.constructor.name;
    model.dispose();
    throw new UsageError(
      `${option} ${dir} holds ${architecture}, not a causal language model (GPT2LMHeadModel, LlamaForCausalLM, ` +
        'Qwen2ForCausalLM)',
    );
  }
  return model;
}

/** The model's end-of-sequence token (the first, when its config lists several), if it has one. */
export function eosTokenIdOf(model: TrainableModel): number | undefined {
  if (model.config.eosTokenIds !== undefined) return model.config.eosTokenIds[0];
  const raw = (model.config as { raw?: Record<string, unknown> }).raw ?? {};
  const eos = Array.isArray(raw.eos_token_id) ? (raw.eos_token_id as unknown[])[0] : raw.eos_token_id;
  return Number.isInteger(eos) ? (eos as number) : undefined;
}

/**
 * How the commands tokenize for `model`: the tokenizer's ids, its start ids (Llama's <s>), and the model's eos after
 * every text and completion (the id generation stops at).
 */
export function causalEncodingOf(tokenizer: tokenizers.Tokenizer, model: TrainableModel): CausalEncoding {
  const { tokenize } = tokenizer;
  if (tokenize === undefined) throw new UsageError('the tokenizer cannot tokenize plain text for a language model');
  return {
    tokenize: (text) => tokenize.call(tokenizer, text),
    prefix: tokenizer.startIds ?? [],
    eosTokenId: eosTokenIdOf(model),
  };
}

/** Reads a language-modelling JSONL file; its problems become UsageErrors naming `option`, the file and the line. */
export function readCausalRows(path: string, option: string): CausalRow[] {
  if (!existsSync(path)) throw new UsageError(`${option} ${path}: no such file`);
  try {
    return readCausalExamplesFile(path);
  } catch (error) {
    if (error instanceof ExamplesFileError) throw new UsageError(`${option} ${error.message}`);
    throw error;
  }
}

/** The default adapter targets of each decoder family: PEFT's own (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES). */
export function defaultCausalTargets(model: TrainableModel): string {
  const modelType = (model.config as { modelType?: string }).modelType;
  return modelType === 'gpt2' ? 'c_attn' : 'q_proj,v_proj';
}

/** Tokenized examples of `rows`; a row with nothing to learn is a UsageError naming the file and line. */
export function causalTrainingExamples(
  rows: readonly CausalRow[],
  encoding: CausalEncoding,
  maxLength: number,
  file: string,
): Example[] {
  try {
    return causalExamples(rows, encoding, { maxLength, source: file });
  } catch (error) {
    if (error instanceof RangeError) throw new UsageError(error.message.replace(/^causalExamples: /, ''));
    throw error;
  }
}

/** `bidora train --task causal-lm`: the language model, its examples (packed with --packing), and labels.json. */
export function prepareCausalTraining(
  values: OptionValues,
  modelDir: string,
  givenMaxLength: number | undefined,
  seed: number,
): TrainingJob {
  const trainRows = readCausalRows(values.data as string, '--data');
  const evalRows = values.eval === undefined ? undefined : readCausalRows(values.eval as string, '--eval');
  const tokenizer = tokenizers.load(modelDir);
  const model = loadCausalLM(modelDir, seed);
  try {
    const positions = (model.config as { maxPositions?: number }).maxPositions ?? Infinity;
    if (givenMaxLength !== undefined && givenMaxLength > positions) {
      throw new UsageError(`--max-length ${givenMaxLength} exceeds the ${positions} positions ${modelDir} has`);
    }
    const maxLength = givenMaxLength ?? Math.min(DEFAULT_MAX_LENGTH, positions);
    const encoding = causalEncodingOf(tokenizer, model);
    const examples = causalTrainingExamples(trainRows, encoding, maxLength, values.data as string);
    let train = examples;
    if (values.packing) {
      try {
        train = packExamples(examples, maxLength);
      } catch (error) {
        throw new UsageError(`--packing: ${(error as Error).message.replace(/^packExamples: /, '')}`);
      }
    }
    const evalExamples = evalRows && causalTrainingExamples(evalRows, encoding, maxLength, values.eval as string);
    // Generating is slow beside a forward pass: only an evaluation file's completions are scored.
    const scored = (evalRows ?? [])
      .filter(isPromptRow)
      .filter((row) => encoding.tokenize(row.prompt).length > 0 || (encoding.prefix ?? []).length > 0);
    return {
      // Completions to score: the model generates after each prompt, greedily, up to the longest reference and eos.
      extraScores:
        scored.length === 0
          ? undefined
          : async (trained) => {
              const examples = scored.map((row) => ({
                prompt: [...(encoding.prefix ?? []), ...encoding.tokenize(row.prompt)],
                reference: encoding.tokenize(row.completion),
              }));
              const longest = Math.max(...examples.map((example) => example.reference.length));
              const room = maxLength - Math.max(...examples.map((example) => example.prompt.length));
              const { metrics } = await evaluateGeneration(trained as GeneratingModel, examples, {
                maxNewTokens: Math.max(1, Math.min(longest + 1, room)),
                batchSize: 16,
              });
              return { ...metrics };
            },
      model,
      train,
      evalExamples,
      labels: { labels: null, task: 'causal-lm', seed, maxLength },
      targets: defaultCausalTargets(model),
      modulesToSave: '',
    };
  } catch (error) {
    model.dispose();
    throw error;
  }
}
