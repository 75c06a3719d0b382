// `bidora train`: fine-tune a Hugging Face BERT-family checkpoint on a JSONL/CSV file, or a GPT-2 / Llama / Qwen2
// language model on JSONL text, with LoRA, DoRA or BiDoRA, and write a PEFT adapter folder, the metrics and a report.
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

import * as adapters from '../adapters/index';
import { ADAPTER_METHOD_NAMES, ADAPTER_METHODS, type AdapterMethod } from '../adapters/methods';
import { native } from '../binding';
import { writeFileAtomic } from '../io/atomic';
import * as tokenizers from '../tokenizers/index';
import { BiLevelTrainer, DEFAULT_XI } from '../train/bilevel';
import { distributed } from '../train/distributed';
import { evaluate } from '../train/evaluate';
import { type Example } from '../train/data';
import { type FitResult } from '../train/loop';
import { type TrainableModel } from '../train/model';
import { Trainer } from '../train/trainer';
import { commandOptions, numberOption, type OptionSpec, type OptionValues, UsageError } from './args';
import { writeTrainingReport } from './reporting';
import {
  checkModelFolder,
  chooseTask,
  DEFAULT_MAX_LENGTH,
  LABELS_FILE,
  loadClassifier,
  readRows,
  taskLabels,
  toTaskExamples,
} from './task';

/** --xi: 1 or 'lower-lr', the two choices of the method's sources. */
function xiOption(value: string): 1 | 'lower-lr' {
  if (value === '1') return 1;
  if (value === 'lower-lr') return value;
  throw new UsageError(`--xi must be 1 or lower-lr, got ${JSON.stringify(value)}`);
}

export const trainOptions: Record<string, OptionSpec> = {
  model: {
    type: 'string',
    description: 'Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json)',
    required: true,
  },
  data: {
    type: 'string',
    description: 'training examples: .jsonl or .csv (text[, text_pair], label), or .jsonl of tokens + ner_tags',
    required: true,
  },
  task: {
    type: 'string',
    description:
      'sequence-classification | regression | multi-label | token-classification (default: from the data), or ' +
      'causal-lm (a GPT-2 / Llama / Qwen2 checkpoint and JSONL of "text", or "prompt" and "completion")',
    default: 'auto',
  },
  eval: { type: 'string', description: 'evaluation examples, same format' },
  out: { type: 'string', description: 'output folder: PEFT adapter, metrics.json, report', required: true },
  method: { type: 'string', description: 'lora | dora | bidora', default: 'dora' },
  r: { type: 'string', description: 'adapter rank', default: '8' },
  alpha: { type: 'string', description: 'lora_alpha (scale alpha / r)', default: '16' },
  dropout: { type: 'string', description: 'lora_dropout', default: '0' },
  target: {
    type: 'string',
    description: 'comma-separated module names to adapt (default query,value; causal-lm: c_attn or q_proj,v_proj)',
  },
  'modules-to-save': {
    type: 'string',
    description: 'comma-separated modules trained in full (default classifier; causal-lm: none)',
  },
  lr: { type: 'string', description: 'learning rate (lower level for bidora)', default: '1e-3' },
  'upper-lr': { type: 'string', description: 'bidora: learning rate of the magnitudes (default: --lr)' },
  'upper-fraction': {
    type: 'string',
    description: 'bidora: share of the training set for the magnitudes',
    default: '0.2',
  },
  gamma: { type: 'string', description: 'bidora: orthogonality regulariser weight', default: '1e-5' },
  xi: {
    type: 'string',
    description: "bidora: factor on the second-order term, 1 or 'lower-lr' (docs/bidora-map.md)",
    default: String(DEFAULT_XI),
  },
  'no-retrain': {
    type: 'boolean',
    description:
      "bidora: skip the paper's retraining phase (direction and head again from their start, magnitudes fixed)",
  },
  hypergradient: {
    type: 'string',
    description: 'bidora: finite-difference | first-order',
    default: 'finite-difference',
  },
  epochs: { type: 'string', description: 'passes over the training data', default: '3' },
  'max-steps': { type: 'string', description: 'steps to run (overrides --epochs)' },
  'batch-size': { type: 'string', description: 'examples per step', default: '16' },
  'max-length': {
    type: 'string',
    description: 'longest tokenized sequence (default 128, or the positions a language model has when fewer)',
  },
  packing: {
    type: 'boolean',
    description: 'causal-lm: concatenate the examples and cut them into blocks of --max-length (no padding)',
  },
  'weight-decay': { type: 'string', description: 'AdamW weight decay', default: '0.01' },
  'eval-every': { type: 'string', description: 'steps between evaluations (default once per epoch)' },
  seed: { type: 'string', description: 'seed of initialisation, data order and dropout', default: '0' },
  device: { type: 'string', description: 'cpu | cuda: where training runs (see devices())', default: 'cpu' },
  dtype: {
    type: 'string',
    description: 'float32 | bfloat16: the frozen base weights (bfloat16: half the memory, faster on AVX512-BF16)',
    default: 'float32',
  },
  log: { type: 'string', description: 'auto | bar | json | none', default: 'auto' },
};

export async function trainCommand(argv: string[]): Promise<void> {
  const values = commandOptions(
    'train',
    'Fine-tune a BERT-family encoder (BERT, RoBERTa, XLM-R, CamemBERT, DistilBERT) or, with --task causal-lm, a ' +
      'GPT-2, Llama or Qwen2 language model, with LoRA, DoRA or BiDoRA.',
    argv,
    trainOptions,
  );
  if (values === undefined) return;
  const method = values.method as string;
  if (!(ADAPTER_METHOD_NAMES as readonly string[]).includes(method)) {
    throw new UsageError(`--method must be ${ADAPTER_METHOD_NAMES.join(', ')}; got ${method}`);
  }
  xiOption(values.xi as string); // checked before any work
  const device = values.device as string;
  if (!native.devices().includes(device)) {
    throw new UsageError(
      `--device ${device} is not available here: this machine runs on ${native.devices().join(' or ')}` +
        (device === 'cuda' ? ' (a CUDA build of bidora and a GPU of compute capability 8.0 or newer are needed)' : ''),
    );
  }
  if (values.dtype !== 'float32' && values.dtype !== 'bfloat16') {
    throw new UsageError(`--dtype must be float32 or bfloat16; got ${values.dtype as string}`);
  }
  const modelDir = values.model as string;
  checkModelFolder(modelDir);
  const maxLength = numberOption(values, 'max-length');
  const seed = numberOption(values, 'seed')!;
  if (values.task === 'causal-lm') {
    const { prepareCausalTraining } = await import('./causal');
    return runTraining(values, prepareCausalTraining(values, modelDir, maxLength, seed));
  }
  if (values.packing) throw new UsageError('--packing applies to --task causal-lm only');
  const trainRows = readRows(values.data as string, '--data');
  const evalRows = values.eval === undefined ? undefined : readRows(values.eval as string, '--eval');
  const task = taskLabels(trainRows, chooseTask(values.task, trainRows));
  const tokenizer = tokenizers.load(modelDir);
  const length = maxLength ?? DEFAULT_MAX_LENGTH;
  const train = toTaskExamples(trainRows, tokenizer, task, length, values.data as string);
  const evalExamples = evalRows && toTaskExamples(evalRows, tokenizer, task, length, values.eval as string);
  const model = loadClassifier(modelDir, task, seed);
  await runTraining(values, {
    model,
    train,
    evalExamples,
    labels: { ...task, seed },
    targets: 'query,value',
    modulesToSave: 'classifier',
  });
}

/** What one run trains: the model, its examples, and what labels.json records for eval and merge. */
export interface TrainingJob {
  model: TrainableModel;
  train: Example[];
  evalExamples: Example[] | undefined;
  /** Written to labels.json beside the adapter. */
  labels: Record<string, unknown> & { task?: string };
  /** --target and --modules-to-save when not given. */
  targets: string;
  modulesToSave: string;
  /** Scores beyond evaluate's on the trained model (a language model's generations against its completions). */
  extraScores?: (model: TrainableModel) => Promise<Record<string, number>>;
}

/** Attaches the adapters, fits, and writes the adapter folder, labels.json, the tokenizer, metrics and the report. */
async function runTraining(values: OptionValues, job: TrainingJob): Promise<void> {
  const method = values.method as AdapterMethod;
  const modelDir = values.model as string;
  const seed = numberOption(values, 'seed')!;
  const { train, evalExamples } = job;
  const model = job.model.to(values.dtype as 'float32' | 'bfloat16').to(values.device as 'cpu' | 'cuda');
  const outDir = values.out as string;
  try {
    adapters.apply(model, {
      method,
      r: numberOption(values, 'r')!,
      alpha: numberOption(values, 'alpha'),
      dropout: numberOption(values, 'dropout'),
      targetModules: String(values.target ?? job.targets)
        .split(',')
        .filter(Boolean),
      modulesToSave: String(values['modules-to-save'] ?? job.modulesToSave)
        .split(',')
        .filter(Boolean),
      seed,
    });
    // Under mpirun every rank trains its share of each batch (train.distributed()); rank 0 alone speaks and writes.
    const { rank } = distributed();
    const { line } = adapters.trainableParameters(model);
    if (rank === 0) process.stderr.write(`${line}\n`);
    const common = {
      model,
      batchSize: numberOption(values, 'batch-size'),
      epochs: numberOption(values, 'epochs'),
      maxSteps: numberOption(values, 'max-steps'),
      seed,
      log: values.log as 'auto',
    };
    const optimizer = { lr: numberOption(values, 'lr'), weightDecay: numberOption(values, 'weight-decay') };
    const fitOptions = { evalExamples, evalEvery: numberOption(values, 'eval-every') };
    let result: FitResult;
    if (ADAPTER_METHODS[method].bilevel) {
      const trainer = new BiLevelTrainer({
        ...common,
        lowerOptimizer: optimizer,
        upperOptimizer: { lr: numberOption(values, 'upper-lr') ?? optimizer.lr, weightDecay: 0 },
        upperFraction: numberOption(values, 'upper-fraction'),
        gamma: numberOption(values, 'gamma'),
        hypergradient: values.hypergradient as 'first-order',
        xi: xiOption(values.xi as string),
        retrain: values['no-retrain'] !== true,
      });
      result = await trainer.fit(train, fitOptions);
      trainer.dispose();
    } else {
      const trainer = new Trainer({ ...common, optimizer });
      result = await trainer.fit(train, fitOptions);
      trainer.dispose();
    }
    if (rank !== 0) return;
    // Saving, the final evaluation and the decomposition analysis run on the CPU, whatever trained.
    model.to('cpu');
    adapters.save(model, outDir, { baseModelNameOrPath: modelDir });
    writeFileAtomic(join(outDir, LABELS_FILE), JSON.stringify(job.labels, null, 2) + '\n');
    for (const file of tokenizers.TOKENIZER_FILES) {
      if (existsSync(join(modelDir, file))) copyFileSync(join(modelDir, file), join(outDir, file));
    }
    const evaluation = evalExamples ? evaluate(model, evalExamples) : evaluate(model, train);
    const final = { ...evaluation, metrics: { ...evaluation.metrics, ...(await job.extraScores?.(model)) } };
    const analysis = adapters.analyze(model);
    const metrics = {
      method,
      task: job.labels.task,
      labels: job.labels.labels,
      trainable: adapters.trainableParameters(model),
      steps: result.steps,
      evaluatedOn: evalExamples ? values.eval : values.data,
      final: { loss: final.loss, ...final.metrics },
      best: result.best,
      history: result.history,
      evals: result.evals,
      decomposition: analysis,
    };
    writeTrainingReport(outDir, metrics);
    process.stdout.write(
      `${method}: ${result.steps} steps; ${evalExamples ? 'eval' : 'train'} ` +
        Object.entries(final.metrics)
          .map(([name, value]) => `${name} ${value.toFixed(4)}`)
          .join(', ') +
        `\nwrote ${outDir}/adapter_config.json, adapter_model.safetensors, metrics.json, report.html\n`,
    );
  } finally {
    model.dispose();
  }
}
