// `bidora generate`: continue prompts with a causal language model (optionally through an adapter), greedy, sampled
// or by beam search; with a data file of prompts and completions, score the generations against them.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import * as adapters from '../adapters/index';
import * as tokenizers from '../tokenizers/index';
import { isPromptRow } from '../train/causal-data';
import { generateCompletions, type GenerationSettings } from '../train/generation-eval';
import { generationMetrics } from '../train/metrics';
import { commandOptions, numberOption, type OptionSpec, type OptionValues, UsageError } from './args';
import { causalEncodingOf, loadCausalLM, readCausalRows } from './causal';
import { checkModelFolder } from './task';

export const generateOptions: Record<string, OptionSpec> = {
  model: {
    type: 'string',
    description: 'causal LM checkpoint folder (config.json, model.safetensors, a tokenizer)',
    required: true,
  },
  adapter: { type: 'string', description: 'PEFT adapter folder to load onto the model (bidora train writes one)' },
  prompt: { type: 'string', description: 'a prompt to continue', multiple: true },
  data: {
    type: 'string',
    description: 'JSONL of "prompt" (and "completion": the reference, to score) or "text" rows to continue',
  },
  'max-new-tokens': { type: 'string', description: 'most tokens generated per prompt', default: '32' },
  'do-sample': { type: 'boolean', description: 'sample instead of greedy decoding' },
  temperature: { type: 'string', description: 'sampling: divide the logits by this (default 1)' },
  'top-k': { type: 'string', description: 'sampling: keep the k most likely tokens' },
  'top-p': { type: 'string', description: 'sampling: keep the smallest set of tokens holding this probability' },
  'num-beams': {
    type: 'string',
    description: 'beam search with this many beams (1: greedy or sampling)',
    default: '1',
  },
  'length-penalty': { type: 'string', description: 'beam search: score / length^this (default 1)' },
  seed: { type: 'string', description: 'seed of sampling (the same tokens on every run)', default: '0' },
  'batch-size': { type: 'string', description: 'prompts generated together (left-padded)', default: '8' },
};

interface Item {
  prompt: string;
  /** The completion the data file gives, to score against. */
  reference?: string;
  /** Where it came from, for errors. */
  where: string;
}

/** A number option that must satisfy `valid`, or a UsageError naming the flag and what it must be. */
function checkedNumber(
  values: OptionValues,
  name: string,
  valid: (value: number) => boolean,
  expected: string,
): number | undefined {
  const value = numberOption(values, name);
  if (value !== undefined && !valid(value)) throw new UsageError(`--${name} must be ${expected}, got ${value}`);
  return value;
}

const positiveInteger = (value: number) => Number.isInteger(value) && value >= 1;

/** The options given, as generate takes them: those not given are left out, so the model's defaults apply. */
function generationSettings(values: OptionValues): GenerationSettings {
  const settings: GenerationSettings = {
    maxNewTokens: checkedNumber(values, 'max-new-tokens', positiveInteger, 'a positive integer'),
    doSample: values['do-sample'] === true,
    temperature: checkedNumber(values, 'temperature', (value) => value > 0, 'a positive number'),
    topK: checkedNumber(values, 'top-k', positiveInteger, 'a positive integer'),
    topP: checkedNumber(values, 'top-p', (value) => value > 0 && value <= 1, 'in (0, 1]'),
    numBeams: checkedNumber(values, 'num-beams', positiveInteger, 'a positive integer'),
    lengthPenalty: numberOption(values, 'length-penalty'),
    seed: checkedNumber(values, 'seed', Number.isSafeInteger, 'an integer'),
  };
  return Object.fromEntries(Object.entries(settings).filter(([, value]) => value !== undefined)) as GenerationSettings;
}

function readItems(values: OptionValues): Item[] {
  const prompts = values.prompt as string[] | undefined;
  const data = values.data as string | undefined;
  if ((prompts === undefined || prompts.length === 0) === (data === undefined)) {
    throw new UsageError('give --prompt <text> (one or more) or --data <file.jsonl>, not both');
  }
  if (data === undefined) return prompts!.map((prompt, index) => ({ prompt, where: `--prompt ${index + 1}` }));
  return readCausalRows(data, '--data').map((row, index) => {
    const where = `${data}:${row.line ?? index + 1}`;
    return isPromptRow(row) ? { prompt: row.prompt, reference: row.completion, where } : { prompt: row.text, where };
  });
}

export async function generateCommand(argv: string[]): Promise<void> {
  const values = commandOptions(
    'generate',
    'Continue prompts with a GPT-2, Llama or Qwen2 model (and an adapter); prints one JSON line per generation, and ' +
      'with --data of prompts and completions, exact match, token error rate and BLEU.',
    argv,
    generateOptions,
  );
  if (values === undefined) return;
  const settings = generationSettings(values);
  const batchSize = checkedNumber(values, 'batch-size', positiveInteger, 'a positive integer')!;
  const items = readItems(values);
  const modelDir = values.model as string;
  checkModelFolder(modelDir);
  const adapterDir = values.adapter as string | undefined;
  if (adapterDir !== undefined) {
    for (const file of [adapters.ADAPTER_CONFIG_FILE, adapters.ADAPTER_WEIGHTS_FILE]) {
      if (!existsSync(join(adapterDir, file))) throw new UsageError(`--adapter ${adapterDir}: ${file} is missing`);
    }
  }
  const tokenizer = tokenizers.load(modelDir);
  const decode = tokenizer.decode?.bind(tokenizer);
  if (decode === undefined) throw new UsageError(`--model ${modelDir}: its tokenizer cannot decode`);
  const model = loadCausalLM(modelDir, settings.seed ?? 0);
  try {
    if (adapterDir !== undefined) adapters.load(model, adapterDir);
    const encoding = causalEncodingOf(tokenizer, model);
    // Prompts are tokenized as training saw them: the start ids, then the text.
    const prompts = items.map((item) => {
      const ids = [...(encoding.prefix ?? []), ...encoding.tokenize(item.prompt)];
      if (ids.length === 0) {
        throw new UsageError(`${item.where}: the prompt is empty and the tokenizer puts no start token before it`);
      }
      return ids;
    });
    const completions = await generateCompletions(model, prompts, {
      ...settings,
      batchSize,
      onBatch: (batch, start) =>
        batch.forEach((tokens, index) => {
          const item = items[start + index];
          const line = { prompt: item.prompt, generated: decode(tokens) };
          process.stdout.write(
            JSON.stringify(item.reference === undefined ? line : { ...line, reference: item.reference }) + '\n',
          );
        }),
    });
    const scored = items.flatMap((item, index) => (item.reference === undefined ? [] : [index]));
    if (scored.length > 0) {
      const metrics = generationMetrics(
        scored.map((index) => completions[index]),
        scored.map((index) => encoding.tokenize(items[index].reference!)),
      );
      process.stdout.write(JSON.stringify({ metrics: { examples: scored.length, ...metrics } }) + '\n');
    }
  } finally {
    model.dispose();
  }
}
