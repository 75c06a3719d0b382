// What the train, eval and merge commands share: checking a checkpoint folder, reading a data file into tokenized
// examples with a label vocabulary, and loading a classifier sized for the task.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { architectureName, fromConfig, type HuggingFaceConfig, loadStateDict, parseConfig } from '../models/index';
import { type EncoderTaskModel } from '../models/encoder';
import { readSafetensors } from '../io/safetensors';
import * as tokenizers from '../tokenizers/index';
import { type Example } from '../train/data';
import {
  type ExampleRow,
  ExamplesFileError,
  isTokenExamplesFile,
  labelVocabulary,
  readExamplesFile,
  readTokenExamplesFile,
  tagVocabulary,
  type TokenRow,
} from '../train/files';
import { UsageError } from './args';

export const LABELS_FILE = 'labels.json';

/** The longest tokenized example when --max-length is not given (a language model's positions, when fewer). */
export const DEFAULT_MAX_LENGTH = 128;

/** Checks that `dir` is a checkpoint folder with a config, weights and a tokenizer; errors name the missing file. */
export function checkModelFolder(dir: string, option = '--model'): void {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${option} ${dir}: no such folder`);
  for (const file of ['config.json', 'model.safetensors']) {
    if (!existsSync(join(dir, file))) throw new UsageError(`${option} ${dir}: ${file} is missing`);
  }
  const tokenizerFiles = ['tokenizer.json', tokenizers.ESM_VOCAB_FILE, tokenizers.CHAR_TOKENIZER_FILE];
  if (!tokenizerFiles.some((file) => existsSync(join(dir, file)))) {
    throw new UsageError(`${option} ${dir}: tokenizer.json is missing (or ESM's vocab.txt)`);
  }
}

/** The tasks the command line trains: one class or value per example, or one class per word. */
export const TASKS = ['sequence-classification', 'regression', 'multi-label', 'token-classification'] as const;
export type TaskKind = (typeof TASKS)[number];

export interface TaskLabels {
  /** Class names in id order; null for regression. */
  labels: string[] | null;
  /** Written to labels.json by train; adapters trained before it existed are sequence tasks. */
  task?: TaskKind;
  /**
   * The seed training built the model with: eval and merge rebuild it so, and parameters the checkpoint lacks (a
   * pooler a masked-LM checkpoint omits) get the values training had.
   */
  seed?: number;
}

/** The rows of a data file: text rows (JSONL or CSV) or, for token classification, words with a tag each. */
export type TaskRows = { kind: 'text'; rows: ExampleRow[] } | { kind: 'tokens'; rows: TokenRow[] };

/** Rows whose labels are lists of class names (multi-label), or undefined when any label is a single value. */
function nameLists(rows: readonly ExampleRow[]): readonly { label: string[] }[] | undefined {
  return rows.every((row) => Array.isArray(row.label)) ? (rows as readonly { label: string[] }[]) : undefined;
}

/** Rows with one label each, for the single-label tasks; lists of names are refused, naming the file's row. */
function singleLabels(rows: readonly ExampleRow[]): readonly { label: string | number }[] {
  const listed = rows.findIndex((row) => Array.isArray(row.label));
  if (listed >= 0) {
    throw new UsageError(`example ${listed + 1} has a list of labels: that is --task multi-label, for every row`);
  }
  return rows as readonly { label: string | number }[];
}

/**
 * The task `--task` names, or what the data implies (words with tags: per token; lists of names: multi-label;
 * numeric labels: regression).
 */
export function chooseTask(option: unknown, rows: TaskRows): TaskKind {
  if (option === undefined || option === 'auto') {
    if (rows.kind === 'tokens') return 'token-classification';
    if (nameLists(rows.rows)) return 'multi-label';
    return labelVocabulary(singleLabels(rows.rows)).labels === null ? 'regression' : 'sequence-classification';
  }
  if (!(TASKS as readonly unknown[]).includes(option)) {
    throw new UsageError(`--task must be ${TASKS.join(', ')} or auto; got ${String(option)}`);
  }
  const task = option as TaskKind;
  if ((task === 'token-classification') !== (rows.kind === 'tokens')) {
    throw new UsageError(
      task === 'token-classification'
        ? '--task token-classification needs JSONL rows with "tokens" and "ner_tags" (or "labels", "tags")'
        : `--task ${task} needs rows with "text" and "label"; the data has "tokens" (token classification)`,
    );
  }
  return task;
}

/** Class ids (or regression targets) for labels as files spell them ("1", " 1 ", 1.0 all name class 1). */
function labelReader(task: TaskLabels): (label: string | number) => number {
  if (task.labels === null) return (label) => Number(label);
  const vocabulary = labelVocabulary(task.labels.map((label) => ({ label })));
  if (vocabulary.labels !== null) return vocabulary.toId;
  // More integer classes than labelVocabulary reads as classes (--task sequence-classification): by their order.
  const ids = new Map(task.labels.map((label, id) => [Number(label), id]));
  return (label) => ids.get(Number(label)) ?? Number.NaN;
}

/** Reads an examples file (text rows, or words with tags), failing on an empty file with the file's name. */
export function readRows(path: string, option: string): TaskRows {
  if (!existsSync(path)) throw new UsageError(`${option} ${path}: no such file`);
  try {
    return isTokenExamplesFile(path)
      ? { kind: 'tokens', rows: readTokenExamplesFile(path).rows }
      : { kind: 'text', rows: readExamplesFile(path).rows };
  } catch (error) {
    if (error instanceof ExamplesFileError) throw new UsageError(`${option} ${error.message}`);
    throw error;
  }
}

/** The label set learned from the training rows for `task`. */
export function taskLabels(rows: TaskRows, task: TaskKind): TaskLabels {
  if (rows.kind === 'tokens') return { labels: tagVocabulary(rows.rows), task };
  if (task === 'regression') return { labels: null, task };
  if (task === 'multi-label') {
    const lists = nameLists(rows.rows);
    if (lists === undefined) throw new UsageError('--task multi-label needs every "label" to be a list of class names');
    return { labels: [...new Set(lists.flatMap((row) => row.label))].sort(), task };
  }
  const { labels } = labelVocabulary(singleLabels(rows.rows));
  // Integer labels past the class limit read as regression unless the task says classes.
  const distinct = [...new Set(rows.rows.map((row) => Number(row.label)))].sort((a, b) => a - b);
  return { labels: labels ?? distinct.map(String), task };
}

/** Tokenized examples of either kind of rows. */
export function toTaskExamples(
  data: TaskRows,
  tokenizer: tokenizers.Tokenizer,
  task: TaskLabels,
  maxLength: number,
  file: string,
): Example[] {
  if ((task.task === 'token-classification') !== (data.kind === 'tokens')) {
    throw new UsageError(`${file}: the adapter was trained for ${task.task ?? 'sequence classification'}`);
  }
  return data.kind === 'tokens'
    ? toTokenExamples(data.rows, tokenizer, task, maxLength, file)
    : toExamples(data.rows, tokenizer, task, maxLength, file);
}

/**
 * Words tokenized with their tags aligned as transformers' token-classification scripts do: the first sub-token of
 * each word carries the word's tag, its other sub-tokens and the special tokens -100 (left out of loss and metrics).
 */
export function toTokenExamples(
  rows: readonly TokenRow[],
  tokenizer: tokenizers.Tokenizer,
  task: TaskLabels,
  maxLength: number,
  file: string,
): Example[] {
  const ids = new Map((task.labels ?? []).map((label, id) => [label, id]));
  return rows.map((row, index) => {
    const tags = row.tags.map((tag) => {
      const id = ids.get(String(tag));
      if (id === undefined) {
        throw new UsageError(
          `${file}: example ${index + 1} has the tag ${JSON.stringify(tag)}, which the training data does not have ` +
            `(tags: ${(task.labels ?? []).join(', ')})`,
        );
      }
      return id;
    });
    const encoded = tokenizer.encodeWords(row.tokens, { maxLength });
    const label = encoded.wordIds.map((word, position) =>
      word === null || encoded.wordIds[position - 1] === word ? -100 : tags[word],
    );
    return { inputIds: encoded.ids, label };
  });
}

/** Tokenized examples; a label outside `task` is an error naming the file and the label. */
export function toExamples(
  rows: readonly ExampleRow[],
  tokenizer: tokenizers.Tokenizer,
  task: TaskLabels,
  maxLength: number,
  file: string,
): Example[] {
  const toId = labelReader(task);
  const classIds = new Map((task.labels ?? []).map((name, id) => [name, id]));
  return rows.map((row, index) => {
    if (task.task === 'multi-label') {
      const names = Array.isArray(row.label) ? row.label : [];
      const unknown = names.find((name) => !classIds.has(name));
      if (!Array.isArray(row.label) || unknown !== undefined) {
        throw new UsageError(
          `${file}: example ${index + 1} has the label ${JSON.stringify(row.label)}; expected a list of the training ` +
            `data's classes (${(task.labels ?? []).join(', ')})`,
        );
      }
      const label = (task.labels ?? []).map((name) => (names.includes(name) ? 1 : 0));
      return { ...encodeRow(tokenizer, row, maxLength), label };
    }
    let label: number;
    try {
      label = Array.isArray(row.label) ? NaN : toId(row.label);
    } catch {
      label = NaN;
    }
    if (!Number.isFinite(label)) {
      throw new UsageError(
        task.labels === null
          ? `${file}: example ${index + 1} has a non-numeric label ${JSON.stringify(row.label)}`
          : `${file}: example ${index + 1} has the label ${JSON.stringify(row.label)}, which the training data does ` +
              `not have (labels: ${task.labels.join(', ')})`,
      );
    }
    return { ...encodeRow(tokenizer, row, maxLength), label };
  });
}

/** One row's text (and pair) tokenized, without padding. */
function encodeRow(
  tokenizer: tokenizers.Tokenizer,
  row: ExampleRow,
  maxLength: number,
): { inputIds: number[]; tokenTypeIds: number[] } {
  const batch = tokenizer.encodeBatch([row.text], {
    pairs: row.textPair === undefined ? undefined : [row.textPair],
    maxLength,
  });
  const length = batch.attentionMask.data.reduce((total, value) => total + value, 0);
  return {
    inputIds: Array.from(batch.inputIds.data.subarray(0, length)),
    tokenTypeIds: Array.from(batch.tokenTypeIds.data.subarray(0, length)),
  };
}

/**
 * The checkpoint's classifier, with num_labels (and id2label) set for `task`. A head whose size no longer fits is
 * freshly initialised, as transformers does with ignore_mismatched_sizes.
 */
export function loadClassifier(dir: string, task: TaskLabels, seed: number): EncoderTaskModel {
  const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const labels = task.labels;
  const parsed = parseConfig(raw);
  if (parsed.task === 'causal-lm') {
    throw new TypeError(
      `${dir} holds a ${parsed.architecture}, a causal language model, not an encoder to classify with`,
    );
  }
  const family = parsed.modelType;
  const perToken = task.task === 'token-classification';
  const config = parseConfig({
    ...(raw as HuggingFaceConfig),
    architectures: [architectureName(family, perToken ? 'token-classification' : 'sequence-classification')],
    num_labels: labels === null ? 1 : labels.length,
    problem_type:
      labels === null
        ? 'regression'
        : task.task === 'multi-label'
          ? 'multi_label_classification'
          : 'single_label_classification',
    id2label: labels === null ? undefined : Object.fromEntries(labels.map((label, id) => [String(id), String(label)])),
    label2id: labels === null ? undefined : Object.fromEntries(labels.map((label, id) => [String(label), id])),
  });
  const model = fromConfig(config, { seed });
  const { tensors } = readSafetensors(join(dir, 'model.safetensors'), {
    only: (_name, info) => ['F32', 'F16', 'BF16', 'F64'].includes(info.dtype),
  });
  const own = new Map(model.namedParameters());
  // Tensors whose shape changed with the label count (the classifier) keep their fresh initialisation.
  for (const [name, tensor] of tensors) {
    const target = own.get(name) ?? own.get(`${model.basePrefix}.${name}`);
    if (target !== undefined && target.shape.join() !== tensor.shape.join() && /classifier|out_proj/.test(name)) {
      tensor.dispose();
      tensors.delete(name);
    }
  }
  try {
    loadStateDict(model, tensors);
  } catch (error) {
    for (const tensor of tensors.values()) tensor.dispose();
    model.dispose();
    throw error;
  }
  return model;
}
