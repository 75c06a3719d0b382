// Examples files (JSONL and CSV with text, text_pair and label columns; JSONL of pre-split words with one tag per
// word for token classification) and the label vocabulary they define.
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';

/** One row of an examples file, before tokenization. */
export interface ExampleRow {
  /** The text to classify (the first of a pair). */
  text: string;
  /** The second text of a sentence pair. */
  textPair?: string;
  /**
   * As written in the file: CSV labels are always strings, JSONL labels may be numbers, or lists of class names
   * (multi-label classification: the classes that apply).
   */
  label: string | number | string[];
}

/** A malformed examples file: `file` and `line` (1-based) say where, the message says what. */
export class ExamplesFileError extends Error {
  constructor(
    /** The path of the file, as given. */
    readonly file: string,
    /** The 1-based line of the problem (where a multi-line CSV record starts). */
    readonly line: number,
    problem: string,
  ) {
    super(`${file}:${line}: ${problem}`);
    this.name = 'ExamplesFileError';
  }
}

function readJsonLines(file: string, content: string): ExampleRow[] {
  const rows: ExampleRow[] = [];
  content.split('\n').forEach((rawLine, index) => {
    const lineNumber = index + 1;
    const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw new ExamplesFileError(file, lineNumber, `bad JSON: ${(error as Error).message}`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new ExamplesFileError(file, lineNumber, 'expected a JSON object with "text" and "label"');
    }
    const record = value as Record<string, unknown>;
    if (typeof record.text !== 'string') {
      throw new ExamplesFileError(file, lineNumber, '"text" is missing or not a string');
    }
    const pair = record.text_pair;
    if (pair !== undefined && pair !== null && typeof pair !== 'string') {
      throw new ExamplesFileError(file, lineNumber, '"text_pair" must be a string');
    }
    const label = record.label;
    const isNameList = Array.isArray(label) && label.every((name) => typeof name === 'string');
    if (!(typeof label === 'string' || (typeof label === 'number' && Number.isFinite(label)) || isNameList)) {
      throw new ExamplesFileError(
        file,
        lineNumber,
        '"label" is missing or not a string, a finite number or a list of class names',
      );
    }
    const row: ExampleRow = { text: record.text, label: label as ExampleRow['label'] };
    rows.push(typeof pair === 'string' ? { ...row, textPair: pair } : row);
  });
  return rows;
}

interface CsvRecord {
  fields: string[];
  /** The line the record starts on (1-based): a quoted field may span several lines. */
  line: number;
}

/**
 * RFC 4180 records: fields split on commas, records on LF, CRLF or CR; a field that starts with a double quote runs
 * to the matching quote, holding commas, line breaks and doubled quotes ("" for "). Blank lines are skipped.
 */
function parseCsv(file: string, content: string): CsvRecord[] {
  const records: CsvRecord[] = [];
  let fields: string[] = [];
  let field = '';
  let line = 1;
  let recordLine = 1;
  let index = 0;
  // Whether the current field was quoted: an unquoted empty single field is a blank line, a quoted one is not.
  let quoted = false;
  const endRecord = (): void => {
    fields.push(field);
    if (fields.length > 1 || fields[0] !== '' || quoted) records.push({ fields, line: recordLine });
    fields = [];
    field = '';
    quoted = false;
  };
  while (index < content.length) {
    const character = content[index];
    if (character === '"' && field === '' && !quoted) {
      const openedOn = line;
      quoted = true;
      index++;
      for (;;) {
        if (index >= content.length) throw new ExamplesFileError(file, openedOn, 'unterminated quoted field');
        const inside = content[index];
        if (inside === '"') {
          if (content[index + 1] === '"') {
            field += '"';
            index += 2;
            continue;
          }
          index++;
          break;
        }
        if (inside === '\n' || (inside === '\r' && content[index + 1] !== '\n')) line++;
        field += inside;
        index++;
      }
      const after = content[index];
      if (after !== undefined && after !== ',' && after !== '\n' && after !== '\r') {
        throw new ExamplesFileError(file, line, `unexpected ${JSON.stringify(after)} after a closing quote`);
      }
      continue;
    }
    if (character === ',') {
      fields.push(field);
      field = '';
      quoted = false;
      index++;
    } else if (character === '\n' || character === '\r') {
      endRecord();
      index += character === '\r' && content[index + 1] === '\n' ? 2 : 1;
      line++;
      recordLine = line;
    } else {
      field += character;
      index++;
    }
  }
  if (field !== '' || fields.length > 0 || quoted) endRecord();
  return records;
}

function readCsv(file: string, content: string): ExampleRow[] {
  const records = parseCsv(file, content);
  if (records.length === 0) throw new ExamplesFileError(file, 1, 'no header row');
  const [header, ...body] = records;
  const columns = header.fields.map((name) => name.trim());
  const column = (name: string): number => columns.indexOf(name);
  const textColumn = column('text');
  const pairColumn = column('text_pair');
  const labelColumn = column('label');
  for (const [name, position] of [
    ['text', textColumn],
    ['label', labelColumn],
  ] as const) {
    if (position < 0) {
      throw new ExamplesFileError(file, header.line, `missing column "${name}" (header: ${columns.join(', ')})`);
    }
  }
  return body.map(({ fields, line }) => {
    if (fields.length !== columns.length) {
      throw new ExamplesFileError(file, line, `expected ${columns.length} fields, found ${fields.length}`);
    }
    const label = fields[labelColumn];
    if (label === '') throw new ExamplesFileError(file, line, 'empty "label"');
    const text = fields[textColumn];
    // An empty text_pair cell is how CSV writes "no pair".
    const pair = pairColumn >= 0 ? fields[pairColumn] : '';
    return pair === '' ? { text, label } : { text, textPair: pair, label };
  });
}

/**
 * Reads labelled examples from a `.jsonl` file (one object a line: `text`, optional `text_pair`, `label`) or a `.csv`
 * file (a header row naming `text`, optional `text_pair`, and `label`). Throws ExamplesFileError naming the file and
 * line of the first problem.
 */
export function readExamplesFile(path: string): {
  /** The rows in file order, at least one. */
  rows: ExampleRow[];
} {
  const extension = extname(path).toLowerCase();
  if (extension !== '.jsonl' && extension !== '.csv') {
    throw new RangeError(`readExamplesFile: ${path}: expected a .jsonl or .csv file`);
  }
  let content = readFileSync(path, 'utf8');
  if (content.startsWith('\uFEFF')) content = content.slice(1); // spreadsheet programs write a byte-order mark
  const rows = extension === '.jsonl' ? readJsonLines(path, content) : readCsv(path, content);
  if (rows.length === 0) throw new ExamplesFileError(path, 1, 'no examples');
  return { rows };
}

/** More distinct integer labels than this are read as a regression target, not as classes. */
export const MAX_INTEGER_CLASSES = 20;

/** How labels map to class ids (or regression targets), from `labelVocabulary`. */
export interface LabelVocabulary {
  /** Class names, sorted (numerically when they are all numbers); null for regression. */
  labels: string[] | null;
  /** The class id of a label, or for regression its target value. Throws RangeError on an unknown label. */
  toId(label: string | number): number;
}

const NUMBER_PATTERN = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** The label as a number when it is one, or a string that spells one ("3", " 0.5", "1e-3"); else null. */
function numericValue(label: string | number): number | null {
  if (typeof label === 'number') return Number.isFinite(label) ? label : null;
  const trimmed = label.trim();
  if (!NUMBER_PATTERN.test(trimmed)) return null;
  const value = Number(trimmed);
  return Number.isFinite(value) ? value : null;
}

/**
 * The label set of `rows`. Every label numeric with a non-integer among them, or more than MAX_INTEGER_CLASSES
 * distinct values: regression (labels null, toId gives the value). Otherwise classification, ids in sorted order so
 * the same data always gives the same ids.
 */
export function labelVocabulary(rows: readonly { label: string | number }[]): LabelVocabulary {
  if (rows.length === 0) throw new RangeError('labelVocabulary: rows must not be empty');
  const values = rows.map((row) => numericValue(row.label));
  if (values.every((value) => value !== null)) {
    const numbers = values as number[];
    const distinct = [...new Set(numbers)].sort((a, b) => a - b);
    const unknown = (label: string | number): RangeError =>
      new RangeError(`labelVocabulary: unknown label ${JSON.stringify(label)}`);
    if (numbers.some((value) => !Number.isInteger(value)) || distinct.length > MAX_INTEGER_CLASSES) {
      return {
        labels: null,
        toId(label) {
          const value = numericValue(label);
          if (value === null) throw unknown(label);
          return value;
        },
      };
    }
    const ids = new Map(distinct.map((value, id) => [value, id]));
    return {
      labels: distinct.map(String),
      toId(label) {
        const id = ids.get(numericValue(label) ?? Number.NaN);
        if (id === undefined) throw unknown(label);
        return id;
      },
    };
  }
  // Code-unit order, not localeCompare: the ids must not depend on the machine's locale.
  const labels = [...new Set(rows.map((row) => String(row.label)))].sort();
  const ids = new Map(labels.map((label, id) => [label, id]));
  return {
    labels,
    toId(label) {
      const id = ids.get(String(label));
      if (id === undefined) throw new RangeError(`labelVocabulary: unknown label ${JSON.stringify(label)}`);
      return id;
    },
  };
}

/** One row of a token-classification file: words and one tag per word. */
export interface TokenRow {
  /** The words, pre-split, at least one. */
  tokens: string[];
  /** As written in the file: a tag name ("B-PER") or a class id (Hugging Face datasets' ClassLabel integers). */
  tags: (string | number)[];
}

/** The columns Hugging Face datasets use for the per-word labels, in the order they are looked for. */
const TAG_COLUMNS = ['ner_tags', 'labels', 'tags', 'pos_tags'] as const;

/** Whether `path` holds token-classification rows: a .jsonl file whose first row has a "tokens" list. */
export function isTokenExamplesFile(path: string): boolean {
  if (extname(path).toLowerCase() !== '.jsonl') return false;
  const first = readFileSync(path, 'utf8')
    .replace(/^\uFEFF/, '')
    .split('\n')
    .find((line) => line.trim() !== '');
  try {
    const value: unknown = first === undefined ? undefined : JSON.parse(first);
    return typeof value === 'object' && value !== null && Array.isArray((value as { tokens?: unknown }).tokens);
  } catch {
    return false;
  }
}

/**
 * Reads token-classification rows from a .jsonl file laid out as Hugging Face datasets are: "tokens" (the words)
 * and one of "ner_tags", "labels", "tags" or "pos_tags" (one tag per word). Throws ExamplesFileError naming the file
 * and line of the first problem.
 */
export function readTokenExamplesFile(path: string): {
  /** The rows in file order. */
  rows: TokenRow[];
} {
  if (extname(path).toLowerCase() !== '.jsonl') {
    throw new RangeError(`readTokenExamplesFile: ${path}: expected a .jsonl file`);
  }
  const rows: TokenRow[] = [];
  readFileSync(path, 'utf8')
    .replace(/^\uFEFF/, '')
    .split('\n')
    .forEach((rawLine, index) => {
      const line = rawLine.trim();
      if (line === '') return;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (error) {
        throw new ExamplesFileError(path, index + 1, `bad JSON: ${(error as Error).message}`);
      }
      const record = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
      const tokens = record.tokens;
      if (!Array.isArray(tokens) || tokens.length === 0 || !tokens.every((token) => typeof token === 'string')) {
        throw new ExamplesFileError(path, index + 1, '"tokens" must be a non-empty list of strings');
      }
      const column = TAG_COLUMNS.find((name) => record[name] !== undefined);
      if (column === undefined) {
        throw new ExamplesFileError(path, index + 1, `no tags: expected one of ${TAG_COLUMNS.join(', ')}`);
      }
      const tags = record[column];
      const isTag = (tag: unknown) => typeof tag === 'string' || (typeof tag === 'number' && Number.isInteger(tag));
      if (!Array.isArray(tags) || tags.length !== tokens.length || !tags.every(isTag)) {
        throw new ExamplesFileError(
          path,
          index + 1,
          `"${column}" must be ${tokens.length} tags (strings or integers), one per token`,
        );
      }
      rows.push({ tokens: tokens as string[], tags: tags as (string | number)[] });
    });
  if (rows.length === 0) throw new ExamplesFileError(path, 1, 'no examples');
  return { rows };
}

/**
 * The tag set of token rows, sorted (numerically when every tag is an integer, as ClassLabel ids are) so the same
 * data always gives the same ids.
 */
export function tagVocabulary(rows: readonly TokenRow[]): string[] {
  const tags = [...new Set(rows.flatMap((row) => row.tags.map(String)))];
  const numeric = rows.every((row) => row.tags.every((tag) => typeof tag === 'number'));
  return numeric ? tags.sort((a, b) => Number(a) - Number(b)) : tags.sort();
}
