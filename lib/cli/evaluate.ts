// `bidora eval` and `bidora merge`: score a trained adapter on a data file, or fold it into a plain checkpoint.
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import * as adapters from '../adapters/index';
import { save } from '../models/index';
import { type EncoderTaskModel } from '../models/encoder';
import * as tokenizers from '../tokenizers/index';
import { evaluate } from '../train/evaluate';
import { commandOptions, numberOption, type OptionSpec, UsageError } from './args';
import { checkModelFolder, LABELS_FILE, loadClassifier, readRows, type TaskLabels, toTaskExamples } from './task';

const adapterOption: OptionSpec = {
  type: 'string',
  description: 'adapter folder written by bidora train (adapter_config.json, adapter_model.safetensors)',
  required: true,
};

function loadAdapted(modelDir: string, adapterDir: string): { model: EncoderTaskModel; task: TaskLabels } {
  checkModelFolder(modelDir);
  for (const file of [adapters.ADAPTER_CONFIG_FILE, adapters.ADAPTER_WEIGHTS_FILE, LABELS_FILE]) {
    if (!existsSync(join(adapterDir, file))) throw new UsageError(`--adapter ${adapterDir}: ${file} is missing`);
  }
  const task = JSON.parse(readFileSync(join(adapterDir, LABELS_FILE), 'utf8')) as TaskLabels;
  const model = loadClassifier(modelDir, task, task.seed ?? 0);
  adapters.load(model, adapterDir);
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
  const rows = readRows(values.data as string, '--data');
  const { model, task } = loadAdapted(values.model as string, values.adapter as string);
  try {
    const examples = toTaskExamples(
      rows,
      tokenizers.load(values.model as string),
      task,
      numberOption(values, 'max-length')!,
      values.data as string,
    );
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
    save(model, values.out as string);
    for (const file of tokenizers.TOKENIZER_FILES) {
      const source = join(values.model as string, file);
      if (existsSync(source)) copyFileSync(source, join(values.out as string, file));
    }
    process.stdout.write(`wrote ${values.out}/config.json and model.safetensors\n`);
  } finally {
    model.dispose();
  }
}
