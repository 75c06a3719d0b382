// `bidora demo`: pretrain a small character-level encoder on one pronunciation task (cached), then adapt it to a
// harder one with few examples per class using head-only, LoRA, DoRA, BiDoRA (without and with the retraining phase)
// and full fine-tuning over paired seeds; print the comparison and write a report with validation curves and the
// ΔM-vs-ΔD picture.
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

import * as adapters from '../adapters/index';
import { ADAPTER_METHOD_NAMES, ADAPTER_METHODS, type AdapterMethod } from '../adapters/methods';
import { fromConfig, save } from '../models/index';
import { type EncoderTaskModel } from '../models/encoder';
import { CHAR_TOKENIZER_FILE, CharTokenizer } from '../tokenizers/char';
import { type BiLevelFitResult, BiLevelTrainer } from '../train/bilevel';
import { type Example, splitLowerUpper } from '../train/data';
import { evaluate } from '../train/evaluate';
import { type EvalRecord } from '../train/loop';
import { Random } from '../random';
import { mean, standardDeviation, wilcoxonSignedRank } from '../train/stats';
import { Trainer } from '../train/trainer';
import { commandOptions, numberOption, type OptionSpec } from './args';
import { lastVowel, loadWords, stressedVowel, type Word, wordHash } from './demo-data';
import { type DemoReport, writeDemoReport } from './reporting';
import { loadClassifier } from './task';

const demoOptions: Record<string, OptionSpec> = {
  quick: { type: 'boolean', description: 'a smaller run (under 2 minutes): fewer steps and examples' },
  out: { type: 'string', description: 'report folder', default: 'bidora-demo-report' },
  seeds: { type: 'string', description: 'paired seeds per method (at least 5 for the full demo)' },
  cache: {
    type: 'string',
    description: 'where the pretrained encoder and the fetched data are kept (BIDORA_CACHE or ~/.cache/bidora)',
  },
  log: { type: 'string', description: 'auto | bar | json | none', default: 'none' },
};

/** The row of BiDoRA with its retraining phase (BiLevelTrainer's `retrain`). */
const RETRAINED = 'bidora+retrain';

/** The adapter method a row trains with, if any. */
function adapterOf(method: Method): AdapterMethod | undefined {
  if (method === RETRAINED) return 'bidora';
  return method === 'head' || method === 'full' ? undefined : method;
}

/**
 * The table's rows in order: head-only and full fine-tuning around the adapter methods (adapters/methods.ts), BiDoRA
 * twice: as searched (direction and magnitudes trained together on their two splits) and with the paper's retraining
 * phase (the direction and head trained again from their start on the whole training set, the magnitudes fixed).
 */
export const METHODS = [
  'head',
  ...ADAPTER_METHOD_NAMES.flatMap((name) => (name === 'bidora' ? (['bidora', RETRAINED] as const) : [name])),
  'full',
] as const;
export type Method = 'head' | AdapterMethod | typeof RETRAINED | 'full';

export interface Plan {
  pretrainWords: number;
  pretrainSteps: number;
  trainExamples: number;
  validationExamples: number;
  testExamples: number;
  epochs: number;
  seeds: number;
  /** The candidates of each row's search; the retrained row takes BiDoRA's. */
  learningRates: Record<Exclude<Method, typeof RETRAINED>, number[]>;
}

export const FULL_PLAN: Plan = {
  pretrainWords: 24_000,
  pretrainSteps: 1500,
  trainExamples: 480,
  validationExamples: 600,
  testExamples: 2000,
  epochs: 10,
  seeds: 5,
  learningRates: {
    head: [1e-3, 3e-3, 1e-2],
    lora: [1e-3, 3e-3, 1e-2],
    dora: [1e-3, 3e-3, 1e-2],
    bidora: [1e-3, 3e-3, 1e-2],
    full: [1e-4, 3e-4, 1e-3],
  },
};

export const QUICK_PLAN: Plan = {
  ...FULL_PLAN,
  pretrainWords: 8000,
  pretrainSteps: 300,
  trainExamples: 240,
  validationExamples: 200,
  testExamples: 600,
  epochs: 5,
  seeds: 3,
  learningRates: { head: [3e-3], lora: [3e-3], dora: [3e-3], bidora: [3e-3], full: [3e-4] },
};

export const ENCODER = { hidden: 128, layers: 4, heads: 4, intermediate: 256, maxLength: 16 };
// Every linear layer of the encoder: the frozen features miss the target, so the encoder has to move, not just read.
export const ADAPTER = { r: 8, alpha: 16, targetModules: ['query', 'key', 'value', 'dense'] };

export function encode(tokenizer: CharTokenizer, words: readonly Word[], label: (word: Word) => number): Example[] {
  return words.map((word) => ({
    inputIds: [tokenizer.clsId, ...tokenizer.tokenize(word.word), tokenizer.sepId],
    label: label(word),
  }));
}

/** The pretrained encoder's folder: built once per plan and reused. */
export async function pretrainedEncoder(words: Word[], plan: Plan, cacheRoot: string, log: string): Promise<string> {
  const dir = join(cacheRoot, `demo-encoder-v3-${plan.pretrainWords}-${plan.pretrainSteps}`);
  if (existsSync(join(dir, 'model.safetensors')) && existsSync(join(dir, CHAR_TOKENIZER_FILE))) return dir;
  process.stderr.write(`pretraining the encoder (${plan.pretrainSteps} steps; cached in ${dir})\n`);
  const pool = words
    .filter((word) => wordHash(word.word, 'role') < 0.5 && lastVowel(word) !== undefined)
    .slice(0, plan.pretrainWords);
  const tokenizer = CharTokenizer.fromTexts(words.map((word) => word.word));
  const sounds = [...new Set(pool.map((word) => lastVowel(word)!))].sort();
  const model = fromConfig({
    architectures: ['BertForSequenceClassification'],
    model_type: 'bert',
    vocab_size: tokenizer.vocabSize,
    hidden_size: ENCODER.hidden,
    num_hidden_layers: ENCODER.layers,
    num_attention_heads: ENCODER.heads,
    intermediate_size: ENCODER.intermediate,
    max_position_embeddings: ENCODER.maxLength,
    num_labels: sounds.length,
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
  });
  const trainer = new Trainer({
    model,
    batchSize: 64,
    maxSteps: plan.pretrainSteps,
    seed: 1,
    log: log as 'none',
    optimizer: {
      lr: 1e-3,
      weightDecay: 0.01,
      schedule: { type: 'linear', warmupSteps: 100, totalSteps: plan.pretrainSteps },
    },
  });
  const soundIds = new Map(sounds.map((sound, index) => [sound, index]));
  await trainer.fit(encode(tokenizer, pool, (word) => soundIds.get(lastVowel(word)!)!));
  trainer.dispose();
  mkdirSync(dir, { recursive: true });
  tokenizer.save(join(dir, CHAR_TOKENIZER_FILE));
  save(model, dir);
  model.dispose();
  return dir;
}

interface RunResult {
  accuracy: number;
  msPerStep: number;
  trainable: number;
  evals: EvalRecord[];
  decomposition: { step: number; deltaMagnitude: number; deltaDirection: number }[];
}

/**
 * One adaptation run: the pretrained encoder with a fresh head, trained by `method` with learning rate `lr`. The
 * retrained row's run is the BiDoRA row's with the retraining phase after it (the same seed, data and learning rate),
 * so it yields that row too, as `search`: what the model scores when the search ends. Its retraining steps count on
 * from the search's last.
 */
async function adapt(
  encoderDir: string,
  classes: string[],
  method: Method,
  lr: number,
  seed: number,
  train: Example[],
  evaluation: { validation: Example[]; test?: Example[] },
  plan: Plan,
): Promise<RunResult & { search?: RunResult }> {
  const model: EncoderTaskModel = loadClassifier(encoderDir, { labels: classes }, seed);
  const adapterMethod = adapterOf(method);
  const finalExamples = evaluation.test ?? evaluation.validation;
  try {
    if (method === 'head') {
      for (const [name, tensor] of model.namedParameters()) tensor.requiresGrad = name.startsWith('classifier.');
    } else if (adapterMethod !== undefined) {
      adapters.apply(model, { method: adapterMethod, ...ADAPTER, modulesToSave: ['classifier'], seed });
    }
    const trainable = model.parameterCount({ trainableOnly: true });
    const batchSize = 16;
    const maxSteps = Math.ceil(train.length / batchSize) * plan.epochs;
    // One entry per evaluation, in the order the evaluations come (the search's, then the retraining's).
    const analyses: { deltaMagnitude: number; deltaDirection: number }[][] = [];
    let searchEnd: { ms: number; accuracy: number; evaluationMs: number } | undefined;
    const started = performance.now();
    const onEval = (record: EvalRecord) => {
      if (adapterMethod !== undefined) analyses.push(adapters.analyze(model).layers);
      // The search's last evaluation, before the retraining puts the direction back to its start.
      if (method === RETRAINED && searchEnd === undefined && record.step === maxSteps) {
        const ms = performance.now() - started;
        const accuracy = evaluate(model, finalExamples).metrics.accuracy;
        searchEnd = { ms, accuracy, evaluationMs: performance.now() - started - ms };
      }
    };
    const common = { model, batchSize, maxSteps, seed, log: 'none' as const, onEval, restoreBest: false };
    const optimizer = { lr, weightDecay: 0.01 };
    let result: BiLevelFitResult;
    const fitOptions = { evalExamples: evaluation.validation, evalEvery: Math.max(1, Math.floor(maxSteps / 6)) };
    if (adapterMethod !== undefined && ADAPTER_METHODS[adapterMethod].bilevel) {
      const trainer = new BiLevelTrainer({
        ...common,
        lowerOptimizer: optimizer,
        // BiLevelTrainer's defaults otherwise (docs/bidora-map.md): the magnitudes at the same learning rate, its xi,
        // and for the retrained row the retraining phase, as many steps as the search (the other rows' count).
        ...(method === RETRAINED ? {} : { retrain: false }),
      });
      result = await trainer.fit(train, fitOptions);
      trainer.dispose();
    } else {
      const trainer = new Trainer({ ...common, optimizer });
      result = await trainer.fit(train, fitOptions);
      trainer.dispose();
    }
    const steps = result.steps + (result.retrain?.steps ?? 0);
    const msPerStep = (performance.now() - started - (searchEnd?.evaluationMs ?? 0)) / steps;
    const allEvals = [
      ...result.evals,
      ...(result.retrain?.evals ?? []).map((record) => ({ ...record, step: result.steps + record.step })),
    ];
    const pointsOf = (from: number, to: number) =>
      analyses.slice(from, to).flatMap((layers, index) =>
        layers.map(({ deltaMagnitude, deltaDirection }) => ({
          step: allEvals[from + index].step,
          deltaMagnitude,
          deltaDirection,
        })),
      );
    const final = evaluate(model, finalExamples);
    if (searchEnd === undefined) {
      const decomposition = pointsOf(0, analyses.length);
      return { accuracy: final.metrics.accuracy, msPerStep, trainable, evals: allEvals, decomposition };
    }
    // The retrained row's curve starts at the end of the search and its ΔM-vs-ΔD points are the retraining's: the
    // search is the BiDoRA row's.
    const searched = result.evals.length;
    return {
      accuracy: final.metrics.accuracy,
      msPerStep,
      trainable,
      evals: allEvals.slice(searched - 1),
      decomposition: pointsOf(searched, analyses.length),
      search: {
        accuracy: searchEnd.accuracy,
        msPerStep: searchEnd.ms / result.steps,
        trainable,
        evals: result.evals,
        decomposition: pointsOf(0, searched),
      },
    };
  } finally {
    model.dispose();
  }
}

/**
 * The target task: the stressed vowel, from words the encoder never saw. A fixed test set, a fixed validation set,
 * and per seed a training sample of `plan.trainExamples` words drawn from the rest.
 */
export function demoSplits(
  words: Word[],
  plan: Plan,
  encoderDir: string,
): { classes: string[]; test: Example[]; validation: Example[]; sampleFor: (seed: number) => Example[] } {
  const labelled = words
    .filter((word) => wordHash(word.word, 'role') >= 0.5 && stressedVowel(word) !== undefined)
    .sort((a, b) => wordHash(a.word, 'order') - wordHash(b.word, 'order'));
  const classes = [...new Set(labelled.map((word) => stressedVowel(word)!))].sort();
  const classIds = new Map(classes.map((label, index) => [label, index]));
  const tokenizer = CharTokenizer.load(join(encoderDir, CHAR_TOKENIZER_FILE));
  const toExamples = (list: Word[]) => encode(tokenizer, list, (word) => classIds.get(stressedVowel(word)!)!);
  const test = toExamples(labelled.slice(0, plan.testExamples));
  const validation = toExamples(labelled.slice(plan.testExamples, plan.testExamples + plan.validationExamples));
  const candidates = toExamples(labelled.slice(plan.testExamples + plan.validationExamples));
  const sampleFor = (seed: number) => {
    const random = new Random(1000 + seed);
    const chosen = new Set<number>();
    while (chosen.size < plan.trainExamples) chosen.add(random.int(candidates.length));
    return [...chosen].map((index) => candidates[index]);
  };

  return { classes, test, validation, sampleFor };
}

export async function demoCommand(argv: string[]): Promise<void> {
  const values = commandOptions(
    'demo',
    'Compare adapter methods on a small pronunciation task, end to end.',
    argv,
    demoOptions,
  );
  if (values === undefined) return;
  const plan: Plan = { ...(values.quick ? QUICK_PLAN : FULL_PLAN) };
  plan.seeds = numberOption(values, 'seeds') ?? plan.seeds;
  const cacheRoot =
    (values.cache as string | undefined) ?? process.env.BIDORA_CACHE ?? join(homedir(), '.cache', 'bidora');
  const started = performance.now();
  const words = loadWords(cacheRoot);
  const encoderDir = await pretrainedEncoder(words, plan, cacheRoot, values.log as string);

  const { classes, test, validation, sampleFor } = demoSplits(words, plan, encoderDir);

  // Learning rates are chosen on a split of the first seed's training sample only, never on the test set.
  const chosenLr = {} as Record<Method, number>;
  const selection = splitLowerUpper(sampleFor(0), 0.25, 7);
  for (const method of METHODS) {
    // The retrained row is the BiDoRA row's run with the retraining phase after it: one learning rate for both, so
    // the two rows differ in that phase alone.
    if (method === RETRAINED) continue;
    let best = { lr: plan.learningRates[method][0], accuracy: -1 };
    for (const lr of plan.learningRates[method]) {
      if (plan.learningRates[method].length === 1) break;
      const run = await adapt(
        encoderDir,
        classes,
        method,
        lr,
        0,
        selection.lower,
        { validation: selection.upper },
        plan,
      );
      process.stderr.write(`lr search: ${method} lr ${lr}: held-out accuracy ${run.accuracy.toFixed(3)}\n`);
      if (run.accuracy > best.accuracy) best = { lr, accuracy: run.accuracy };
    }
    chosenLr[method] = best.lr;
  }
  chosenLr[RETRAINED] = chosenLr.bidora;

  const runs = {} as Record<Method, RunResult[]>;
  for (const method of METHODS) runs[method] = [];
  // The BiDoRA row comes out of the retrained row's run (its search), so it is not run on its own.
  const trained = METHODS.filter((method) => method !== 'bidora');
  const total = plan.seeds * trained.length;
  let done = 0;
  for (let seed = 0; seed < plan.seeds; seed++) {
    const train = sampleFor(seed);
    for (const method of trained) {
      const run = await adapt(encoderDir, classes, method, chosenLr[method], seed, train, { validation, test }, plan);
      if (run.search !== undefined) runs.bidora.push(run.search);
      const { search, ...row } = run;
      runs[method].push(row);
      done++;
      const accuracies = `${search === undefined ? '' : `${search.accuracy.toFixed(3)} searched, `}${run.accuracy.toFixed(3)}`;
      process.stderr.write(
        `\r[${'#'.repeat(Math.round((24 * done) / total)).padEnd(24, '.')}] ${done}/${total} ${method} seed ${seed}: ` +
          `test accuracy ${accuracies}\u001b[K`,
      );
    }
  }
  process.stderr.write('\n');

  // Paired over seeds: what each BiDoRA row gains on DoRA, and what adapting the encoder gains on the head alone.
  const comparisons = (
    [
      ['bidora', 'dora'],
      [RETRAINED, 'dora'],
      ['dora', 'head'],
    ] as const
  ).map(([method, baseline]) => {
    const differences = runs[method].map((run, index) => run.accuracy - runs[baseline][index].accuracy);
    return { method, baseline, differences, wilcoxon: wilcoxonSignedRank(differences) };
  });
  const rows = METHODS.map((method) => {
    const accuracies = runs[method].map((run) => run.accuracy);
    return {
      method,
      lr: chosenLr[method],
      accuracyMean: mean(accuracies),
      accuracyStd: standardDeviation(accuracies),
      trainable: runs[method][0].trainable,
      msPerStep: mean(runs[method].map((run) => run.msPerStep)),
    };
  });
  const width = Math.max(...METHODS.map((method) => method.length));
  const table = [
    `${'method'.padEnd(width)}   accuracy (mean ± std over ${plan.seeds} seeds)   trainable params   ms/step   lr`,
    ...rows.map(
      (row) =>
        `${row.method.padEnd(width)} ${(100 * row.accuracyMean).toFixed(1).padStart(6)} ± ${(100 * row.accuracyStd).toFixed(1).padEnd(29)}` +
        `${row.trainable.toLocaleString('en-US').padStart(16)}   ${row.msPerStep.toFixed(1).padStart(7)}   ${row.lr}`,
    ),
    ...comparisons.map(
      ({ method, baseline, differences, wilcoxon }) =>
        `${method} − ${baseline} per seed (points): ${differences.map((value) => (100 * value).toFixed(1)).join(', ')}; ` +
        `mean ${(100 * mean(differences)).toFixed(1)}, Wilcoxon signed-rank p = ${wilcoxon.pValue.toFixed(3)} (n = ${wilcoxon.n})`,
    ),
  ].join('\n');
  process.stdout.write(`${table}\n`);

  const report: DemoReport = {
    plan,
    encoder: ENCODER,
    adapter: ADAPTER,
    classes,
    rows,
    comparisons,
    runs: Object.fromEntries(METHODS.map((method) => [method, runs[method]])),
    seconds: (performance.now() - started) / 1000,
    table,
  };
  const files = writeDemoReport(values.out as string, report);
  process.stdout.write(`report: ${files.join(', ')} (in ${values.out})\n`);
}
