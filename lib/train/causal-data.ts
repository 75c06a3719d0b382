// Training data for language models: JSONL of { "text" } (loss on every token) or { "prompt", "completion" } (loss
// on the completion only), tokenized into examples whose labels are the ids themselves (the model shifts them, as
// transformers does) with -100 where no loss applies; padded by collate, or packed into blocks of equal length.
import { readFileSync } from 'node:fs';

import { type Example } from './data';
import { ExamplesFileError } from './files';

/** Labels equal to this are out of the loss, as in transformers. */
const IGNORED = -100;

/** A row trained on every token. */
export interface TextRow {
  /** The text, learned whole. */
  text: string;
  /** The line it came from (1-based), for errors about it. */
  line?: number;
}

/** A row trained on its completion only. */
export interface PromptRow {
  /** What the model is given: out of the loss. */
  prompt: string;
  /** What it learns to continue with (and the eos after it). */
  completion: string;
  /** The line it came from (1-based), for errors about it. */
  line?: number;
}

/** One row of a language-modelling file. */
export type CausalRow = TextRow | PromptRow;

/** Whether a row trains on its completion only. */
export function isPromptRow(row: CausalRow): row is PromptRow {
  return 'prompt' in row;
}

/**
 * The rows of a JSONL language-modelling file: each line an object with a string "text", or a string "prompt" and
 * a string "completion" (one kind or the other for the whole file). Blank lines are skipped; anything else wrong is
 * an ExamplesFileError naming the file and the line.
 */
export function parseCausalLines(file: string, content: string): CausalRow[] {
  const rows: CausalRow[] = [];
  let kind: 'text' | 'prompt' | undefined;
  content.split('\n').forEach((rawLine, index) => {
    const line = index + 1;
    const text = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    if (text.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new ExamplesFileError(file, line, `bad JSON: ${(error as Error).message}`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new ExamplesFileError(file, line, 'expected a JSON object with "text", or "prompt" and "completion"');
    }
    const record = value as Record<string, unknown>;
    const rowKind = 'prompt' in record || 'completion' in record ? 'prompt' : 'text' in record ? 'text' : undefined;
    if (rowKind === undefined) {
      throw new ExamplesFileError(file, line, 'expected "text", or "prompt" and "completion"');
    }
    if (kind !== undefined && rowKind !== kind) {
      throw new ExamplesFileError(
        file,
        line,
        `this line has ${rowKind === 'text' ? '"text"' : '"prompt"/"completion"'} but the lines before it ` +
          `${kind === 'text' ? '"text"' : '"prompt"/"completion"'}: one kind per file`,
      );
    }
    kind = rowKind;
    if (rowKind === 'text') {
      if (typeof record.text !== 'string') throw new ExamplesFileError(file, line, '"text" must be a string');
      if (record.text === '') throw new ExamplesFileError(file, line, '"text" is empty');
      rows.push({ text: record.text, line });
      return;
    }
    for (const key of ['prompt', 'completion']) {
      if (typeof record[key] !== 'string') {
        throw new ExamplesFileError(file, line, `"${key}" is missing or not a string`);
      }
    }
    rows.push({ prompt: record.prompt as string, completion: record.completion as string, line });
  });
  if (rows.length === 0) throw new ExamplesFileError(file, 1, 'no examples');
  return rows;
}

/** Reads a JSONL language-modelling file (see parseCausalLines). */
export function readCausalExamplesFile(path: string): CausalRow[] {
  let content: string;
  try {
    content = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ExamplesFileError(path, 1, `cannot read: ${(error as Error).message}`);
  }
  return parseCausalLines(path, content);
}

/** How text becomes ids for a language model. */
export interface CausalEncoding {
  /** Ids of a text, without special tokens. */
  tokenize(text: string): number[];
  /** Ids before every example (Llama's <s>; none for GPT-2), as the tokenizer puts them before a text. */
  prefix?: readonly number[];
  /** Appended after every text and every completion, so the model learns where to stop (the model's eos). */
  eosTokenId?: number;
}

/** How causalExamples cuts and names rows. */
export interface CausalExampleOptions {
  /** Cut longer examples to this many ids, keeping their start. */
  maxLength?: number;
  /** Named in errors (the data file). */
  source?: string;
}

/**
 * Tokenized examples: a text row is prefix + text + eos with the ids as labels (a loss on every token); a prompt row
 * is prefix + prompt + completion + eos with -100 over prefix and prompt (the loss on the completion and its eos).
 * Prompt and completion are tokenized apart, as generation sees them: the prompt alone, then the tokens after it.
 * An example whose labels would all be ignored (an empty completion cut by maxLength) is a RangeError naming its row.
 */
export function causalExamples(
  rows: readonly CausalRow[],
  encoding: CausalEncoding,
  options: CausalExampleOptions = {},
): Example[] {
  if (!Array.isArray(rows)) throw new TypeError('causalExamples: rows must be an array');
  if (encoding === null || typeof encoding !== 'object' || typeof encoding.tokenize !== 'function') {
    throw new TypeError('causalExamples: encoding must have tokenize(text)');
  }
  const { maxLength, source } = options;
  if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength < 2)) {
    throw new RangeError(`causalExamples: maxLength must be an integer of at least 2, got ${String(maxLength)}`);
  }
  const { eosTokenId } = encoding;
  if (eosTokenId !== undefined && (!Number.isInteger(eosTokenId) || eosTokenId < 0)) {
    throw new RangeError(`causalExamples: eosTokenId must be a non-negative integer, got ${String(eosTokenId)}`);
  }
  const prefix = [...(encoding.prefix ?? [])];
  const end = eosTokenId === undefined ? [] : [eosTokenId];
  return rows.map((row, index) => {
    const where = `${source === undefined ? 'example' : source}:${row.line ?? index + 1}`;
    let inputIds: number[];
    let label: number[];
    if (isPromptRow(row)) {
      const context = [...prefix, ...encoding.tokenize(row.prompt)];
      const target = [...encoding.tokenize(row.completion), ...end];
      inputIds = [...context, ...target];
      label = [...context.map(() => IGNORED), ...target];
    } else if (typeof row?.text === 'string') {
      inputIds = [...prefix, ...encoding.tokenize(row.text), ...end];
      label = [...inputIds];
    } else {
      throw new TypeError(`causalExamples: ${where}: expected { text } or { prompt, completion }`);
    }
    if (maxLength !== undefined && inputIds.length > maxLength) {
      inputIds = inputIds.slice(0, maxLength);
      label = label.slice(0, maxLength);
    }
    // The model predicts label t from the ids before t: position 0 never enters the loss.
    if (!label.slice(1).some((id) => id !== IGNORED)) {
      throw new RangeError(
        `causalExamples: ${where}: no token to learn` +
          (isPromptRow(row)
            ? ` (the prompt takes ${Math.min(inputIds.length, maxLength ?? Infinity)} of maxLength ${maxLength ?? '-'} ids` +
              `${end.length === 0 && row.completion === '' ? ', and the completion is empty with no eos' : ''})`
            : ' (a text needs at least two ids)'),
      );
    }
    return { inputIds, label };
  });
}

/**
 * Packs examples into blocks of `blockSize` ids, as transformers' run_clm groups texts: the examples' ids (each
 * already ending with eos) and labels are concatenated in order and cut into consecutive blocks; the tail shorter
 * than a block is dropped, unless everything makes less than one block (then the one short block is kept). Labels
 * keep their -100 (a prompt stays out of the loss); no padding remains, so no id is wasted.
 */
export function packExamples(examples: readonly Example[], blockSize: number): Example[] {
  if (!Array.isArray(examples) || examples.length === 0) {
    throw new RangeError('packExamples: examples must be a non-empty array');
  }
  if (!Number.isInteger(blockSize) || blockSize < 2) {
    throw new RangeError(`packExamples: blockSize must be an integer of at least 2, got ${String(blockSize)}`);
  }
  const ids: number[] = [];
  const labels: number[] = [];
  examples.forEach((example, index) => {
    const label = example.label;
    if (!Array.isArray(label) || label.length !== example.inputIds.length) {
      throw new RangeError(`packExamples: example ${index} needs one label per input id (a causal-LM example)`);
    }
    ids.push(...example.inputIds);
    labels.push(...(label as readonly number[]));
  });
  const blocks: Example[] = [];
  const whole = ids.length < blockSize ? ids.length : ids.length - (ids.length % blockSize);
  for (let start = 0; start < whole; start += blockSize) {
    const label = labels.slice(start, start + blockSize);
    // A block that is all prompt has nothing to learn: it would only add a NaN-prone empty mean to its batch.
    if (label.slice(1).some((id) => id !== IGNORED)) {
      blocks.push({ inputIds: ids.slice(start, start + blockSize), label });
    }
  }
  if (blocks.length === 0) throw new RangeError('packExamples: no block has a token to learn');
  return blocks;
}
