// `bidora eval` and `bidora merge`: score a trained adapter on a data file, or fold it into a plain checkpoint.
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import * as adapters from '../adapters/index';
import { save } from '../models/index';
import * as tokenizers from '../tokenizers/index';
import { type CausalRow } from '../train/causal-data';
import { evaluate } from '../train/evaluate';
import { type TrainableModel } from '../train/model';
import { commandOptions, numberOption, type OptionSpec, UsageError } from './args';
import { causalEncodingOf, causalTrainingExamples, loadCausalLM, readCausalRows } from './causal';
import {
  checkModelFolder,
  LABELS_FILE,
  loadClassifier,
  readRows,
  type TaskLabels,
  type TaskRows,
  toTaskExamples,
} from './task';

function readLabels(adapterDir: string): TaskLabels {
  return JSON.parse(readFileSync(join(adapterDir, LABELS_FILE), 'utf8')) as TaskLabels;
}

const adapterOption: OptionSpec = {
  type: 'string',
  description: 'adapter folder written by bidora train (adapter_config.json, adapter_model.safetensors)',
  required: true,
};

/** An adapter trained on a language model: labels.json says task causal-lm. */
const isCausal = (task: TaskLabels) => (task.task as string | undefined) === 'causal-lm';

function loadAdapted(modelDir: string, adapterDir: string): { model: TrainableModel; task: TaskLabels } {
  checkModelFolder(modelDir);
  for (const file of [adapters.ADAPTER_CONFIG_FILE, adapters.ADAPTER_WEIGHTS_FILE, LABELS_FILE]) {
    if (!existsSync(join(adapterDir, file))) throw new UsageError(`--adapter ${adapterDir}: ${file} is missing`);
  }
  const task = readLabels(adapterDir);
  const model: TrainableModel = isCausal(task)
    ? loadCausalLM(modelDir, task.seed ?? 0)
    : loadClassifier(modelDir, task, task.seed ?? 0);
  try {
    adapters.load(model, adapterDir);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return { model, task };
}

const evalOptions: Record<string, OptionSpec> = {
  model: { type: 'string', description: 'the base checkpoint folder the adapter was trained on', required: true },
  adapter: adapterOption,
  data: { type: 'string', description: "examples to score, in the training data's format", required: true },
  'max-length': { type: 'string', description: 'longest tokenized sequence', default: '128' },
  'batch-size': { type: 'string', description: 'examples per forward pass', default: '64' },
};

export async function evalCommand(argv: string[]): Promise<void> {
  const values = commandOptions(
    'eval',
    'Score an adapter on a data file; prints the metrics as JSON.',
    argv,
    evalOptions,
  );
  if (values === undefined) return;
  const adapterDir = values.adapter as string;
  const causal = existsSync(join(adapterDir, LABELS_FILE)) && isCausal(readLabels(adapterDir));
  const data = values.data as string;
  const rows = causal ? readCausalRows(data, '--data') : readRows(data, '--data');
  const { model, task } = loadAdapted(values.model as string, adapterDir);
  try {
    const tokenizer = tokenizers.load(values.model as string);
    const maxLength = numberOption(values, 'max-length')!;
    // A language model sees no more ids than it has positions.
    const positions = (model.config as { maxPositions?: number }).maxPositions ?? Infinity;
    const examples = causal
      ? causalTrainingExamples(
          rows as CausalRow[],
          causalEncodingOf(tokenizer, model),
          Math.min(maxLength, positions),
          data,
        )
      : toTaskExamples(rows as TaskRows, tokenizer, task, maxLength, data);
    const result = evaluate(model, examples, numberOption(values, 'batch-size'));
    process.stdout.write(
      JSON.stringify({ examples: examples.length, loss: result.loss, ...result.metrics }, null, 2) + '\n',
    );
  } finally {
    model.dispose();
  }
}

const mergeOptions: Record<string, OptionSpec> = {
  model: { type: 'string', description: 'the base checkpoint folder', required: true },
  adapter: adapterOption,
  out: {
    type: 'string',
    description: 'folder for the merged checkpoint (config.json, model.safetensors)',
    required: true,
  },
};

export async function mergeCommand(argv: string[]): Promise<void> {
  const values = commandOptions(
    'merge',
    'Fold an adapter into the base weights and save a plain checkpoint.',
    argv,
    mergeOptions,
  );
  if (values === undefined) return;
  const { model } = loadAdapted(values.model as string, values.adapter as string);
  try {
    adapters.merge(model);
    // A language model saves through the same entry point (the decoder families write their own layouts).
    save(model as unknown as Parameters<typeof save>[0], values.out as string);
    for (const file of tokenizers.TOKENIZER_FILES) {
      const source = join(values.model as string, file);
      if (existsSync(source)) copyFileSync(source, join(values.out as string, file));
    }
    process.stdout.write(`wrote ${values.out}/config.json and model.safetensors\n`);
  } finally {
    model.dispose();
  }
}
