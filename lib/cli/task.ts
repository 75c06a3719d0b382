// What the train, eval and merge commands share: checking a checkpoint folder, reading a data file into tokenized
// examples with a label vocabulary, and loading a classifier sized for the task.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { fromConfig, loadStateDict, parseConfig } from '../models/index';
import { type EncoderTaskModel } from '../models/encoder';
import { readSafetensors } from '../io/safetensors';
import * as tokenizers from '../tokenizers/index';
import { type Example } from '../train/data';
import { type ExampleRow, ExamplesFileError, labelVocabulary, readExamplesFile } from '../train/files';
import { UsageError } from './args';

export const LABELS_FILE = 'labels.json';

/** Checks that `dir` is a checkpoint folder with a config, weights and a tokenizer; errors name the missing file. */
export function checkModelFolder(dir: string, option = '--model'): void {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${option} ${dir}: no such folder`);
  for (const file of ['config.json', 'model.safetensors']) {
    if (!existsSync(join(dir, file))) throw new UsageError(`${option} ${dir}: ${file} is missing`);
  }
  if (!existsSync(join(dir, 'tokenizer.json')) && !existsSync(join(dir, tokenizers.CHAR_TOKENIZER_FILE))) {
    throw new UsageError(`${option} ${dir}: tokenizer.json is missing`);
  }
}

export interface TaskLabels {
  /** Class names in id order; null for regression. */
  labels: string[] | null;
}

/** Class ids (or regression targets) for labels as files spell them ("1", " 1 ", 1.0 all name class 1). */
function labelReader(task: TaskLabels): (label: string | number) => number {
  if (task.labels === null) return (label) => Number(label);
  return labelVocabulary(task.labels.map((label) => ({ label }))).toId;
}

/** Reads an examples file, failing on an empty file with the file's name. */
export function readRows(path: string, option: string): ExampleRow[] {
  if (!existsSync(path)) throw new UsageError(`${option} ${path}: no such file`);
  try {
    return readExamplesFile(path).rows;
  } catch (error) {
    if (error instanceof ExamplesFileError) throw new UsageError(`${option} ${error.message}`);
    throw error;
  }
}

/** The label set learned from the training rows. */
export function taskLabels(rows: readonly ExampleRow[]): TaskLabels {
  return { labels: labelVocabulary(rows).labels };
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
  return rows.map((row, index) => {
    let label: number;
    try {
      label = toId(row.label);
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
    const batch = tokenizer.encodeBatch([row.text], {
      pairs: row.textPair === undefined ? undefined : [row.textPair],
      maxLength,
    });
    const length = batch.attentionMask.data.reduce((total, value) => total + value, 0);
    return {
      inputIds: Array.from(batch.inputIds.data.subarray(0, length)),
      tokenTypeIds: Array.from(batch.tokenTypeIds.data.subarray(0, length)),
      label,
    };
  });
}

/**
 * The checkpoint's classifier, with num_labels (and id2label) set for `task`. A head whose size no longer fits is
 * freshly initialised, as transformers does with ignore_mismatched_sizes.
 */
export function loadClassifier(dir: string, task: TaskLabels, seed: number): EncoderTaskModel {
  const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const labels = task.labels;
  const config = parseConfig({
    ...raw,
    num_labels: labels === null ? 1 : labels.length,
    problem_type: labels === null ? 'regression' : 'single_label_classification',
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
