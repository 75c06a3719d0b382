// Training data: seeded shuffles, the BiDoRA lower/upper split, resumable batch streams and padded collation.

import { Random } from '../random';

/** One tokenized training example. */
export interface Example {
  /** Token ids, special tokens included, as a tokenizer returns them: non-empty, integers in [0, vocabSize). */
  inputIds: number[];
  /** Defaults to 1 over every id. */
  attentionMask?: number[];
  /** Defaults to 0 over every id. */
  tokenTypeIds?: number[];
  /**
   * Per sequence: a class id, or a regression target; for multi-label classification one target (0 or 1) per class.
   * Per token (token classification): one class per input id, -100 where no label applies (special tokens, sub-word
   * continuations).
   */
  label: number | readonly number[];
}

/** A padded [batch, seq] id matrix, as tokenizers return and models take. */
export interface IdMatrix {
  /** The ids row by row, batch × seq of them. */
  data: Int32Array;
  /** [batch, seq]. */
  shape: [number, number];
}

/** Examples padded to one length and packed as a model's forward takes them. */
export interface CollatedBatch {
  /** [batch, seq] token ids, padded with the model's padding id to the longest example. */
  inputIds: IdMatrix;
  /** 1 over real tokens and 0 over padding, [batch, seq]. */
  attentionMask: IdMatrix;
  /** Absent for models without token types (DistilBERT: typeVocabSize 0). */
  tokenTypeIds?: IdMatrix;
  /**
   * One label per example (class ids as floats, or regression targets), numLabels targets per example (multi-label),
   * or for token classification one per token of the padded [batch, seq] matrix, row by row, -100 on padding. A
   * language model's are token ids, one per position (-100 on padding), as int32: a vocabulary may pass 2^24.
   */
  labels: Float32Array | Int32Array;
}

/** A Fisher-Yates shuffle into a new array; `items` is left as it was. */
export function shuffled<T>(items: readonly T[], random: Random): T[] {
  const result = [...items];
  for (let last = result.length - 1; last > 0; last--) {
    const pick = random.int(last + 1);
    [result[last], result[pick]] = [result[pick], result[last]];
  }
  return result;
}

/** The integer label of every item, or null when any item lacks one (then the split is not stratified). */
function integerLabels(items: readonly unknown[]): number[] | null {
  const labels: number[] = [];
  for (const item of items) {
    if (typeof item !== 'object' || item === null || !('label' in item)) return null;
    const label = (item as { label: unknown }).label;
    if (typeof label !== 'number' || !Number.isInteger(label)) return null;
    labels.push(label);
  }
  return labels;
}

/**
 * How many items of each class go to the upper split: floor(count × fraction), at least one and at most count − 1
 * for a class of two or more (so it appears on both sides), then one more to the classes with the largest remainders
 * (or one fewer from the smallest) until the total is round(n × fraction) or no class can move.
 */
function stratifiedUpperCounts(classSizes: number[], upperFraction: number, target: number): number[] {
  const fewest = classSizes.map((size) => (size >= 2 ? 1 : 0));
  const most = classSizes.map((size) => (size >= 2 ? size - 1 : size));
  const counts = classSizes.map((size, index) =>
    Math.min(most[index], Math.max(fewest[index], Math.floor(size * upperFraction))),
  );
  const remainders = classSizes.map((size, index) => size * upperFraction - counts[index]);
  // Ties keep class order, so the allocation depends on the labels only, never on the item order.
  const byRemainder = classSizes.map((_, index) => index).sort((a, b) => remainders[b] - remainders[a]);
  let total = counts.reduce((sum, count) => sum + count, 0);
  for (const index of byRemainder) {
    if (total >= target) break;
    if (counts[index] < most[index]) {
      counts[index]++;
      total++;
    }
  }
  for (const index of [...byRemainder].reverse()) {
    if (total <= target) break;
    if (counts[index] > fewest[index]) {
      counts[index]--;
      total--;
    }
  }
  return counts;
}

/**
 * Splits `items` into a lower set (trains the adapter weights) and an upper set (trains the magnitudes, in BiDoRA),
 * with round(n × upperFraction) items in the upper set. When every item has an integer `label` the split is
 * stratified: each class keeps its share on both sides, and a class of two or more items appears in both. Items
 * keep their original order within each side.
 */
export function splitLowerUpper<T>(
  items: readonly T[],
  upperFraction = 0.2,
  seed = 0,
): {
  /** The rest: what A, B and the head train on. */
  lower: T[];
  /** round(n × upperFraction) items (at least one): what the magnitudes train on. */
  upper: T[];
} {
  if (!(upperFraction > 0 && upperFraction < 1)) {
    throw new RangeError(`splitLowerUpper: upperFraction must be in (0, 1), got ${upperFraction}`);
  }
  if (items.length < 2) {
    throw new RangeError(`splitLowerUpper: need at least 2 items for two non-empty splits, got ${items.length}`);
  }
  const random = new Random(seed);
  const target = Math.min(items.length - 1, Math.max(1, Math.round(items.length * upperFraction)));
  const inUpper = new Uint8Array(items.length);
  const labels = integerLabels(items);
  if (labels === null) {
    const order = shuffled(
      items.map((_, index) => index),
      random,
    );
    for (const index of order.slice(0, target)) inUpper[index] = 1;
  } else {
    const members = new Map<number, number[]>();
    labels.forEach((label, index) => {
      const list = members.get(label);
      if (list) list.push(index);
      else members.set(label, [index]);
    });
    const classes = [...members.keys()].sort((a, b) => a - b);
    const sizes = classes.map((label) => members.get(label)!.length);
    const counts = stratifiedUpperCounts(sizes, upperFraction, target);
    classes.forEach((label, classIndex) => {
      for (const index of shuffled(members.get(label)!, random).slice(0, counts[classIndex])) inUpper[index] = 1;
    });
  }
  const lower = items.filter((_, index) => inUpper[index] === 0);
  const upper = items.filter((_, index) => inUpper[index] === 1);
  if (lower.length === 0 || upper.length === 0) {
    throw new RangeError(
      `splitLowerUpper: the split of ${items.length} items at ${upperFraction} leaves a side empty ` +
        `(lower ${lower.length}, upper ${upper.length})`,
    );
  }
  return { lower, upper };
}

/** Where a BatchStream is: plain numbers, ready for JSON in a checkpoint. */
export interface BatchStreamState {
  /** Epochs started before the current one. */
  epoch: number;
  /** Items of the current epoch already handed out. */
  position: number;
  /** The generator as it was just before it shuffled the current epoch. */
  random: number[];
  /** How many items the stream was over, so a state is not restored onto other data. */
  itemCount: number;
}

/**
 * Endless epochs over `items` in batches of `batchSize`, reshuffled each epoch with a seeded generator. The last
 * batch of an epoch holds what is left (it may be smaller); the next batch starts the next epoch.
 */
export class BatchStream<T> {
  readonly #items: readonly T[];
  /** Items per batch (the last of an epoch may hold fewer). */
  readonly batchSize: number;
  #random: Random;
  #epoch = 0;
  #position = 0;
  #epochStart: number[] = [];
  #order: number[] = [];

  constructor(items: readonly T[], batchSize: number, seed = 0) {
    if (items.length === 0) throw new RangeError('BatchStream: items must not be empty');
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new RangeError(`BatchStream: batchSize must be a positive integer, got ${batchSize}`);
    }
    this.#items = items;
    this.batchSize = batchSize;
    this.#random = new Random(seed);
    this.#shuffleEpoch();
  }

  /** The epoch the next batch comes from (0 first), counting an exhausted epoch until a batch of the next is drawn. */
  get epoch(): number {
    return this.#epoch;
  }

  /** ceil(items / batchSize). */
  get batchesPerEpoch(): number {
    return Math.ceil(this.#items.length / this.batchSize);
  }

  /** The next batch, starting (and shuffling) a new epoch when the current one is used up. */
  next(): T[] {
    if (this.#position >= this.#order.length) {
      this.#epoch++;
      this.#position = 0;
      this.#shuffleEpoch();
    }
    const indices = this.#order.slice(this.#position, this.#position + this.batchSize);
    this.#position += indices.length;
    return indices.map((index) => this.#items[index]);
  }

  /** Where the stream is, for a checkpoint; {@link BatchStream.restore} continues from it. */
  state(): BatchStreamState {
    return {
      epoch: this.#epoch,
      position: this.#position,
      random: [...this.#epochStart],
      itemCount: this.#items.length,
    };
  }

  /** Continues from `state`: the batches that follow are those the stream that gave it would have given next. */
  restore(state: BatchStreamState): void {
    if (state.itemCount !== this.#items.length) {
      throw new RangeError(
        `BatchStream.restore: the state is for ${state.itemCount} items, this stream has ${this.#items.length}`,
      );
    }
    if (!Number.isInteger(state.epoch) || state.epoch < 0) {
      throw new RangeError(`BatchStream.restore: epoch must be a non-negative integer, got ${state.epoch}`);
    }
    if (!Number.isInteger(state.position) || state.position < 0 || state.position > this.#items.length) {
      throw new RangeError(
        `BatchStream.restore: position must be in [0, ${this.#items.length}], got ${state.position}`,
      );
    }
    // Replaying the epoch's shuffle from the saved generator rebuilds its order without storing it.
    this.#random = Random.fromState(state.random);
    this.#shuffleEpoch();
    this.#epoch = state.epoch;
    this.#position = state.position;
  }

  #shuffleEpoch(): void {
    this.#epochStart = this.#random.state();
    this.#order = shuffled(
      this.#items.map((_, index) => index),
      this.#random,
    );
  }
}

/** Labels equal to this leave their example out of a classification loss, as in transformers. */
const IGNORED_LABEL = -100;

/** Ids are stored as int32: anything at or above this would wrap to another id. */
const INT32_LIMIT = 2 ** 31;

/**
 * What collate checks ids and labels against. The names are those of the model's config (`EncoderModelConfig`), so
 * a trainer may pass `model.config` itself. Without a field, only what int32 storage needs is checked.
 */
export interface CollateLimits {
  /** Every input id (and padTokenId) must be an integer in [0, vocabSize). */
  vocabSize?: number;
  /** Every token type id must be an integer in [0, typeVocabSize). */
  typeVocabSize?: number;
  /**
   * Classification with this many classes: each label must be an integer in [0, numLabels), or -100 (ignored).
   * numLabels 1 means regression, as in transformers, unless problemType says otherwise.
   */
  numLabels?: number;
  /**
   * 'regression' takes any finite label; 'single_label_classification' needs numLabels; 'multi_label_classification'
   * takes numLabels targets in [0, 1] per example.
   */
  problemType?: 'single_label_classification' | 'regression' | 'multi_label_classification';
  /**
   * 'token-classification': every label is an array with one class per input id. 'causal-lm': one label per input
   * id too, each a token id in [0, vocabSize) or -100 (the model shifts them), and no token types. Default: one
   * label per example.
   */
  task?: 'sequence-classification' | 'token-classification' | 'causal-lm' | 'base';
}

export interface CollateOptions extends CollateLimits {
  /** Cut longer examples to this many ids (they lose their tail). */
  maxLength?: number;
}

/** A limit from the options: an integer up to 2^31 (from `least`), or undefined (then int32's). */
function limitOption(
  options: CollateOptions,
  key: 'vocabSize' | 'typeVocabSize' | 'numLabels',
  least = 1,
): number | undefined {
  const value = options[key];
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || value < least || value > INT32_LIMIT) {
    throw new RangeError(`collate: ${key} must be an integer from ${least} to 2^31, got ${String(value)}`);
  }
  return value;
}

/** How collate checks one batch, settled once from its options. */
interface IdRules {
  /** Exclusive upper bound of input ids, and the option that set it ('int32' when none did). */
  ids: [number, string];
  tokenTypes: [number, string];
  /** The number of classes, or undefined for finite (regression or unknown) labels. */
  classes: number | undefined;
  /** The option the classes come from, for errors: numLabels, or a language model's vocabSize. */
  classesName: string;
  /** One label per input id instead of one per example. */
  perToken: boolean;
  /** Multi-label: this many targets in [0, 1] per example. */
  targetsPerExample: number | undefined;
}

function idRules(options: CollateOptions): IdRules {
  const vocabSize = limitOption(options, 'vocabSize');
  const causal = options.task === 'causal-lm';
  // 0: the model has no token types (DistilBERT, decoders); batches then carry none.
  const typeVocabSize = causal ? 0 : limitOption(options, 'typeVocabSize', 0);
  if (causal) {
    // A language model's classes are its vocabulary: each label is the id of the token to predict.
    return {
      ids: vocabSize === undefined ? [INT32_LIMIT, 'int32'] : [vocabSize, 'vocabSize'],
      tokenTypes: [0, 'typeVocabSize'],
      classes: vocabSize ?? INT32_LIMIT,
      classesName: vocabSize === undefined ? 'int32' : 'vocabSize',
      perToken: true,
      targetsPerExample: undefined,
    };
  }
  const numLabels = limitOption(options, 'numLabels');
  const { problemType } = options;
  const problemTypes = ['regression', 'single_label_classification', 'multi_label_classification'];
  if (problemType !== undefined && !problemTypes.includes(problemType)) {
    throw new RangeError(
      `collate: problemType must be ${problemTypes.map((name) => `'${name}'`).join(', ')}, got ${String(problemType)}`,
    );
  }
  if (problemType !== undefined && problemType !== 'regression' && numLabels === undefined) {
    throw new RangeError(`collate: problemType '${problemType}' needs numLabels`);
  }
  const regression = problemType === 'regression' || (problemType === undefined && numLabels === 1);
  return {
    ids: vocabSize === undefined ? [INT32_LIMIT, 'int32'] : [vocabSize, 'vocabSize'],
    tokenTypes: typeVocabSize === undefined ? [INT32_LIMIT, 'int32'] : [typeVocabSize, 'typeVocabSize'],
    classes: regression ? undefined : numLabels,
    classesName: 'numLabels',
    perToken: options.task === 'token-classification',
    targetsPerExample: problemType === 'multi_label_classification' ? numLabels : undefined,
  };
}

function describeValue(value: unknown): string {
  return typeof value === 'number' ? String(value) : typeof value;
}

/** Each entry of `row` is an integer in [0, limit): stored as int32, anything else would wrap or truncate. */
function checkIdRow(
  field: string,
  row: unknown,
  length: number,
  exampleIndex: number,
  [limit, limitName]: [number, string],
): void {
  if (!Array.isArray(row) || row.length !== length) {
    throw new RangeError(`collate: example ${exampleIndex} ${field} must be ${length} integers, one per input id`);
  }
  for (let position = 0; position < length; position++) {
    const id: unknown = row[position];
    if (typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < limit) continue;
    const range = limitName === 'int32' ? `[0, 2^31)` : `[0, ${limit}) (${limitName})`;
    throw new RangeError(
      `collate: example ${exampleIndex} ${field}[${position}] is ${describeValue(id)}; ` +
        `expected integers in ${range}`,
    );
  }
}

function checkLabel(label: unknown, index: number, field: string, { classes, classesName }: IdRules): void {
  if (typeof label !== 'number' || !Number.isFinite(label)) {
    throw new RangeError(`collate: example ${index} ${field} must be a finite number, got ${describeValue(label)}`);
  }
  if (classes === undefined || label === IGNORED_LABEL) return;
  if (!Number.isInteger(label) || label < 0 || label >= classes) {
    throw new RangeError(
      `collate: example ${index} ${field} is ${label}; expected an integer class in [0, ${classes}) (${classesName}) ` +
        `or ${IGNORED_LABEL} (ignored)`,
    );
  }
}

const ATTENTION_MASK_VALUES: [number, string] = [2, 'attention masks are 0 or 1'];

function checkExample(example: Example, index: number, rules: IdRules): void {
  if (example === null || typeof example !== 'object') {
    throw new TypeError(
      `collate: example ${index} must be an object, got ${example === null ? 'null' : typeof example}`,
    );
  }
  if (!Array.isArray(example.inputIds) || example.inputIds.length === 0) {
    throw new RangeError(`collate: example ${index} inputIds must be a non-empty array`);
  }
  const length = example.inputIds.length;
  checkIdRow('inputIds', example.inputIds, length, index, rules.ids);
  if (example.attentionMask !== undefined) {
    checkIdRow('attentionMask', example.attentionMask, length, index, ATTENTION_MASK_VALUES);
  }
  // A model without token types (DistilBERT, ESM) ignores them, as transformers' tokenizers for it return none: a
  // BERT-style tokenizer.json still types a pair's second text 1.
  if (example.tokenTypeIds !== undefined && rules.tokenTypes[0] !== 0) {
    checkIdRow('tokenTypeIds', example.tokenTypeIds, length, index, rules.tokenTypes);
  }
  if (rules.targetsPerExample !== undefined) {
    const targets = example.label;
    if (!Array.isArray(targets) || targets.length !== rules.targetsPerExample) {
      throw new RangeError(
        `collate: example ${index} label must be ${rules.targetsPerExample} targets, one per class (multi-label)`,
      );
    }
    targets.forEach((target: unknown, position) => {
      if (typeof target !== 'number' || !(target >= 0 && target <= 1)) {
        throw new RangeError(
          `collate: example ${index} label[${position}] is ${describeValue(target)}; expected a target in [0, 1]`,
        );
      }
    });
    return;
  }
  if (!rules.perToken) {
    checkLabel(example.label, index, 'label', rules);
    return;
  }
  const labels = example.label;
  if (!Array.isArray(labels) || labels.length !== length) {
    throw new RangeError(
      `collate: example ${index} label must be ${length} labels, one per input id ` +
        `(${rules.classesName === 'numLabels' ? 'token classification' : 'a language model'})`,
    );
  }
  labels.forEach((label: unknown, position) => checkLabel(label, index, `label[${position}]`, rules));
}

/**
 * Pads examples into one batch, to the longest example (cut to `maxLength` when given: longer examples lose their
 * tail). Padding has id `padTokenId`, attention mask 0 and token type 0. Ids, token types and labels outside their
 * range are a RangeError naming the example and the field, never stored wrapped: ids must be integers in
 * [0, vocabSize) (in [0, 2^31) without it), labels classes in [0, numLabels) or -100 for classification, finite
 * numbers for regression (or when numLabels is not given). Trainers pass their model's config as the limits.
 */
export function collate(examples: readonly Example[], padTokenId: number, options: CollateOptions = {}): CollatedBatch {
  if (!Array.isArray(examples)) throw new TypeError('collate: examples must be an array of examples');
  if (examples.length === 0) throw new RangeError('collate: examples must not be empty');
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`collate: options must be an object, got ${options === null ? 'null' : typeof options}`);
  }
  const rules = idRules(options);
  if (!Number.isInteger(padTokenId) || padTokenId < 0 || padTokenId >= rules.ids[0]) {
    const range =
      rules.ids[1] === 'int32' ? 'an integer in [0, 2^31)' : `an integer in [0, ${rules.ids[0]}) (vocabSize)`;
    throw new RangeError(`collate: padTokenId must be ${range}, got ${padTokenId}`);
  }
  const { maxLength } = options;
  if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength < 1)) {
    throw new RangeError(`collate: maxLength must be a positive integer, got ${maxLength}`);
  }
  examples.forEach((example, index) => checkExample(example, index, rules));
  const longest = Math.max(...examples.map((example) => example.inputIds.length));
  const length = maxLength === undefined ? longest : Math.min(longest, maxLength);
  const batch = examples.length;
  const inputIds = new Int32Array(batch * length).fill(padTokenId);
  const attentionMask = new Int32Array(batch * length);
  const tokenTypeIds = new Int32Array(batch * length);
  const targets = rules.targetsPerExample;
  const labels = rules.perToken
    ? (options.task === 'causal-lm' ? new Int32Array(batch * length) : new Float32Array(batch * length)).fill(
        IGNORED_LABEL,
      )
    : new Float32Array(batch * (targets ?? 1));
  examples.forEach((example, row) => {
    const kept = Math.min(example.inputIds.length, length);
    const offset = row * length;
    for (let column = 0; column < kept; column++) {
      inputIds[offset + column] = example.inputIds[column];
      attentionMask[offset + column] = example.attentionMask?.[column] ?? 1;
      tokenTypeIds[offset + column] = example.tokenTypeIds?.[column] ?? 0;
      if (rules.perToken) labels[offset + column] = (example.label as readonly number[])[column];
    }
    if (targets !== undefined) labels.set(example.label as readonly number[], row * targets);
    else if (!rules.perToken) labels[row] = example.label as number;
  });
  return {
    inputIds: { data: inputIds, shape: [batch, length] },
    attentionMask: { data: attentionMask, shape: [batch, length] },
    ...(rules.tokenTypes[0] === 0 ? {} : { tokenTypeIds: { data: tokenTypeIds, shape: [batch, length] } }),
    labels,
  };
}
