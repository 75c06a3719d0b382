// ESM's protein tokenizer (transformers' EsmTokenizer): a vocab.txt of tokens, one a line (the amino acids, one
// letter each, and <cls>, <pad>, <eos>, <unk>, <mask>, ...); a sequence is split into the longest vocabulary tokens
// that match, whitespace skipped, anything else <unk>, and framed as <cls> … <eos> (a pair: <cls> A <eos> B <eos>).
import { readFileSync } from 'node:fs';

import {
  assembleWords,
  encodeFramed,
  type EncodeOptions,
  type EncodedBatch,
  type EncodedWords,
  type Tokenizer,
} from './batch';

/** The vocabulary file of an ESM model folder. */
export const ESM_VOCAB_FILE = 'vocab.txt';

/**
 * ESM's protein tokenizer, as transformers' EsmTokenizer: amino-acid letters and special tokens from vocab.txt, the
 * longest match first. Pairs carry no token type ids (ESM has none). The constructor takes the vocabulary, one token
 * per id, and throws a TypeError for an empty or non-string list, a RangeError when <pad>, <cls>, <eos> or <unk> is
 * missing.
 */
export class EsmTokenizer implements Tokenizer {
  readonly #ids: Map<string, number>;
  /** Longest token first: "<mask>" must win over "<". */
  readonly #tokens: string[];
  /** <pad>. */
  readonly padTokenId: number;
  /** <cls>, opening every sequence. */
  readonly clsId: number;
  /** <eos>, closing every sequence (and a pair's first). */
  readonly eosId: number;
  /** <unk>: one for each run of characters outside the vocabulary. */
  readonly unknownId: number;

  constructor(vocabulary: readonly string[]) {
    if (
      !Array.isArray(vocabulary) ||
      vocabulary.length === 0 ||
      vocabulary.some((token) => typeof token !== 'string')
    ) {
      throw new TypeError('EsmTokenizer: vocabulary must be a non-empty list of tokens');
    }
    this.#ids = new Map(vocabulary.map((token, id) => [token, id]));
    this.#tokens = [...this.#ids.keys()].filter((token) => token !== '').sort((a, b) => b.length - a.length);
    const required = (token: string): number => {
      const id = this.#ids.get(token);
      if (id === undefined) throw new RangeError(`EsmTokenizer: the vocabulary has no ${token}`);
      return id;
    };
    this.padTokenId = required('<pad>');
    this.clsId = required('<cls>');
    this.eosId = required('<eos>');
    this.unknownId = required('<unk>');
  }

  /** Reads a vocab.txt, one token a line (ids are line numbers from 0); throws as the constructor does. */
  static load(path: string): EsmTokenizer {
    const lines = readFileSync(path, 'utf8').split(/\r?\n/);
    if (lines.at(-1) === '') lines.pop();
    return new EsmTokenizer(lines.map((line) => line.trim()));
  }

  /** The number of distinct tokens in the vocabulary. */
  get vocabSize(): number {
    return this.#ids.size;
  }

  /**
   * Token ids of a sequence, without <cls>/<eos>. As transformers splits it: on every vocabulary token, then the
   * rest on whitespace, each leftover word one <unk> (so a lowercase run "mkt" is one <unk>, not three).
   */
  tokenize(text: string): number[] {
    const ids: number[] = [];
    let position = 0;
    let inUnknown = false;
    while (position < text.length) {
      if (/\s/.test(text[position])) {
        inUnknown = false;
        position++;
        continue;
      }
      const token = this.#tokens.find((candidate) => text.startsWith(candidate, position));
      if (token === undefined) {
        if (!inUnknown) ids.push(this.unknownId);
        inUnknown = true;
        position++;
        continue;
      }
      inUnknown = false;
      ids.push(this.#ids.get(token)!);
      position += token.length;
    }
    return ids;
  }

  encodeWords(words: readonly string[], options: { maxLength?: number } = {}): EncodedWords {
    return assembleWords(words, (word) => this.tokenize(word), [this.clsId], [this.eosId], options.maxLength ?? 1024);
  }

  /** <cls> sequence <eos> (pair <eos>), truncated longest-first to maxLength, padded into a batch. */
  encodeBatch(texts: readonly string[], options: EncodeOptions = {}): EncodedBatch {
    const frame = { tokenize: (text: string) => this.tokenize(text), open: this.clsId, close: this.eosId };
    return encodeFramed(texts, options, { ...frame, padId: this.padTokenId, typedPairs: false }, 1024);
  }
}
