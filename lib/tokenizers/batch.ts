// What every tokenizer returns for a batch: padded [batch, seq] id matrices ready for a model's forward.

/**
 * A tokenized batch as three row-major [batch, seq] int32 matrices, every row padded to the same length: what a
 * model's forward takes.
 */
export interface EncodedBatch {
  /** Token ids, padding rows out with the tokenizer's `padTokenId`. */
  inputIds: {
    /** The ids, row after row. */
    data: Int32Array;
    /** [batch, seq]. */
    shape: [number, number];
  };
  /** 1 over real tokens, 0 over padding. */
  attentionMask: {
    /** The mask, row after row. */
    data: Int32Array;
    /** [batch, seq]. */
    shape: [number, number];
  };
  /** Segment ids: 0 for the first text, 1 for a pair's second where the tokenizer types pairs, 0 over padding. */
  tokenTypeIds: {
    /** The segment ids, row after row. */
    data: Int32Array;
    /** [batch, seq]. */
    shape: [number, number];
  };
}

/**
 * How `encodeBatch` frames, truncates and pads. A RangeError when `pairs` does not hold one text per text or
 * `maxLength` is not an integer of at least 2.
 */
export interface EncodeOptions {
  /** Second texts (sentence pairs), one per text. */
  pairs?: readonly string[];
  /** Longest sequence kept, special tokens included (default 512; EsmTokenizer's 1024, ESM's context). */
  maxLength?: number;
  /** 'longest' pads to the longest sequence in the batch (default); 'max_length' pads to maxLength. */
  padding?: 'longest' | 'max_length';
}

/** What models and training need of a tokenizer, whichever file it came from (see `tokenizers.load`). */
export interface Tokenizer {
  /** Ids run from 0 to vocabSize − 1: the embedding table needs at least this many rows. */
  readonly vocabSize: number;
  /** The id padding is filled with (masked out by the attention mask). */
  readonly padTokenId: number;
  /**
   * Texts (or sentence pairs) with the tokenizer's special tokens, truncated longest-first to `maxLength` and
   * padded into one batch. A TypeError unless `texts` is an array of strings.
   */
  encodeBatch(texts: readonly string[], options?: EncodeOptions): EncodedBatch;
  /**
   * A pre-split sequence of words (token classification), with the special tokens the tokenizer adds: `wordIds`
   * says which word each token comes from (null for special tokens), as transformers' `word_ids()`. Words that do not
   * fit in `maxLength` (default 512; EsmTokenizer's 1024) are dropped from the end.
   */
  encodeWords(words: readonly string[], options?: { maxLength?: number }): EncodedWords;
  /** Ids of a text without special tokens (what a language model's data and prompts are made of). */
  tokenize?(text: string): number[];
  /** The ids put before a single text (Llama's <s>): a language model's examples and prompts start with them. */
  readonly startIds?: readonly number[];
  /** The text of ids, special tokens left out. */
  decode?(ids: readonly number[]): string;
}

/** One pre-split sequence from `encodeWords`: token ids and the word each token belongs to, position by position. */
export interface EncodedWords {
  /** Token ids, special tokens included, unpadded. */
  ids: number[];
  /** Index into the words of each token's word; null for special tokens and separators (labelled -100 in training). */
  wordIds: (number | null)[];
}

/**
 * Assembles `prefix`, each word's tokens (with `separator` between words, belonging to none) and `suffix` within
 * `maxLength`, dropping words from the end (and cutting a word that alone does not fit).
 */
export function assembleWords(
  words: readonly string[],
  tokenize: (word: string) => number[],
  prefix: readonly number[],
  suffix: readonly number[],
  maxLength: number,
  separator: readonly number[] = [],
): EncodedWords {
  if (!Array.isArray(words) || words.some((word) => typeof word !== 'string')) {
    throw new TypeError('encodeWords: words must be an array of strings');
  }
  if (!Number.isInteger(maxLength) || maxLength < prefix.length + suffix.length + 1) {
    throw new RangeError(`encodeWords: maxLength must be an integer of at least ${prefix.length + suffix.length + 1}`);
  }
  const ids: number[] = [...prefix];
  const wordIds: (number | null)[] = prefix.map(() => null);
  const budget = maxLength - suffix.length;
  for (let index = 0; index < words.length && ids.length < budget; index++) {
    const between = index === 0 ? [] : separator;
    if (ids.length + between.length >= budget) break;
    ids.push(...between);
    wordIds.push(...between.map(() => null));
    const tokens = tokenize(words[index]).slice(0, budget - ids.length);
    ids.push(...tokens);
    wordIds.push(...tokens.map(() => index));
  }
  ids.push(...suffix);
  wordIds.push(...suffix.map(() => null));
  return { ids, wordIds };
}

export interface Encoded {
  ids: number[];
  typeIds: number[];
}

/** Pads encoded sequences into one batch (attention mask 0 over padding). */
export function padBatch(sequences: readonly Encoded[], padId: number, length: number): EncodedBatch {
  const batch = sequences.length;
  const inputIds = new Int32Array(batch * length).fill(padId);
  const attentionMask = new Int32Array(batch * length);
  const tokenTypeIds = new Int32Array(batch * length);
  sequences.forEach((sequence, row) => {
    sequence.ids.forEach((id, column) => {
      inputIds[row * length + column] = id;
      attentionMask[row * length + column] = 1;
      tokenTypeIds[row * length + column] = sequence.typeIds[column] ?? 0;
    });
  });
  const shape: [number, number] = [batch, length];
  return {
    inputIds: { data: inputIds, shape },
    attentionMask: { data: attentionMask, shape },
    tokenTypeIds: { data: tokenTypeIds, shape },
  };
}

export function checkTexts(texts: readonly string[], options: EncodeOptions): void {
  if (!Array.isArray(texts) || texts.some((text) => typeof text !== 'string')) {
    throw new TypeError('encodeBatch: texts must be an array of strings');
  }
  if (options.pairs !== undefined && (!Array.isArray(options.pairs) || options.pairs.length !== texts.length)) {
    throw new RangeError(`encodeBatch: pairs must have one text per text (${texts.length})`);
  }
  const maxLength = options.maxLength ?? 512;
  if (!Number.isInteger(maxLength) || maxLength < 2) {
    throw new RangeError(`encodeBatch: maxLength must be an integer of at least 2, got ${maxLength}`);
  }
}

/**
 * Drops the last token of the longer text until both fit in `budget` tokens (transformers' longest_first
 * truncation; the first text loses on a tie).
 */
export function truncateLongestFirst(
  first: number[],
  second: number[] | undefined,
  budget: number,
): [number[], number[] | undefined] {
  while (first.length + (second?.length ?? 0) > Math.max(budget, 0) && first.length + (second?.length ?? 0) > 0) {
    if (second !== undefined && second.length > first.length) second = second.slice(0, -1);
    else first = first.slice(0, -1);
  }
  return [first, second];
}

/**
 * Texts (and pairs) as `open` A `close` (B `close`), truncated longest-first to maxLength and padded: the framing of
 * tokenizers whose special tokens are fixed (bidora's character tokenizer, ESM's). `typedPairs`: the second text and
 * its closing token get type id 1, as BERT's; otherwise every type id is 0.
 */
export function encodeFramed(
  texts: readonly string[],
  options: EncodeOptions,
  frame: { tokenize: (text: string) => number[]; open: number; close: number; padId: number; typedPairs: boolean },
  defaultMaxLength: number,
): EncodedBatch {
  checkTexts(texts, options);
  const maxLength = options.maxLength ?? defaultMaxLength;
  const sequences: Encoded[] = texts.map((text, index) => {
    const pair = options.pairs?.[index];
    const [first, second] = truncateLongestFirst(
      frame.tokenize(text),
      pair === undefined ? undefined : frame.tokenize(pair),
      maxLength - (pair === undefined ? 2 : 3),
    );
    const ids = [frame.open, ...first, frame.close, ...(second === undefined ? [] : [...second, frame.close])];
    const typeIds = ids.map((_, position) => (frame.typedPairs && position > first.length + 1 ? 1 : 0));
    return { ids, typeIds };
  });
  const longest = Math.max(1, ...sequences.map((sequence) => sequence.ids.length));
  return padBatch(sequences, frame.padId, options.padding === 'max_length' ? maxLength : longest);
}
