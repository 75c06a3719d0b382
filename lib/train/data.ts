// Training data: seeded shuffles, the BiDoRA lower/upper split, resumable batch streams and padded collation.

import { Random } from './random';

/** One tokenized training example. */
export interface Example {
  inputIds: number[];
  /** Defaults to 1 over every id. */
  attentionMask?: number[];
  /** Defaults to 0 over every id. */
  tokenTypeIds?: number[];
  /** A class id, or a regression target. */
  label: number;
}

/** A padded [batch, seq] id matrix, as tokenizers return and models take. */
export interface IdMatrix {
  data: Int32Array;
  shape: [number, number];
}

export interface CollatedBatch {
  inputIds: IdMatrix;
  attentionMask: IdMatrix;
  tokenTypeIds: IdMatrix;
  /** One label per example: class ids as floats, or regression targets. */
  labels: Float32Array;
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
export function splitLowerUpper<T>(items: readonly T[], upperFraction = 0.2, seed = 0): { lower: T[]; upper: T[] } {
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

  get batchesPerEpoch(): number {
    return Math.ceil(this.#items.length / this.batchSize);
  }

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

function checkIdRow(name: string, row: unknown, length: number, exampleIndex: number): void {
  if (!Array.isArray(row) || row.length !== length || row.some((id) => !Number.isInteger(id))) {
    throw new RangeError(`collate: example ${exampleIndex} ${name} must be ${length} integers, one per input id`);
  }
}

function checkExample(example: Example, index: number): void {
  if (!Array.isArray(example.inputIds) || example.inputIds.length === 0) {
    throw new RangeError(`collate: example ${index} inputIds must be a non-empty array`);
  }
  const length = example.inputIds.length;
  checkIdRow('inputIds', example.inputIds, length, index);
  if (example.attentionMask !== undefined) checkIdRow('attentionMask', example.attentionMask, length, index);
  if (example.tokenTypeIds !== undefined) checkIdRow('tokenTypeIds', example.tokenTypeIds, length, index);
  if (typeof example.label !== 'number' || !Number.isFinite(example.label)) {
    throw new RangeError(`collate: example ${index} label must be a finite number, got ${example.label}`);
  }
}

/**
 * Pads examples into one batch, to the longest example (cut to `maxLength` when given: longer examples lose their
 * tail). Padding has id `padTokenId`, attention mask 0 and token type 0.
 */
export function collate(
  examples: readonly Example[],
  padTokenId: number,
  options: { maxLength?: number } = {},
): CollatedBatch {
  if (examples.length === 0) throw new RangeError('collate: examples must not be empty');
  if (!Number.isInteger(padTokenId)) throw new RangeError(`collate: padTokenId must be an integer, got ${padTokenId}`);
  const { maxLength } = options;
  if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength < 1)) {
    throw new RangeError(`collate: maxLength must be a positive integer, got ${maxLength}`);
  }
  examples.forEach(checkExample);
  const longest = Math.max(...examples.map((example) => example.inputIds.length));
  const length = maxLength === undefined ? longest : Math.min(longest, maxLength);
  const batch = examples.length;
  const inputIds = new Int32Array(batch * length).fill(padTokenId);
  const attentionMask = new Int32Array(batch * length);
  const tokenTypeIds = new Int32Array(batch * length);
  const labels = new Float32Array(batch);
  examples.forEach((example, row) => {
    const kept = Math.min(example.inputIds.length, length);
    const offset = row * length;
    for (let column = 0; column < kept; column++) {
      inputIds[offset + column] = example.inputIds[column];
      attentionMask[offset + column] = example.attentionMask?.[column] ?? 1;
      tokenTypeIds[offset + column] = example.tokenTypeIds?.[column] ?? 0;
    }
    labels[row] = example.label;
  });
  return {
    inputIds: { data: inputIds, shape: [batch, length] },
    attentionMask: { data: attentionMask, shape: [batch, length] },
    tokenTypeIds: { data: tokenTypeIds, shape: [batch, length] },
    labels,
  };
}
