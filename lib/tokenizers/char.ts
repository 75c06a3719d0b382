// A character-level tokenizer for models trained from scratch: one id per character seen in the training text,
// with [PAD], [UNK], [CLS], [SEP] and [MASK] first, saved as a small JSON file.
import { readFileSync } from 'node:fs';

import { writeFileAtomic } from '../io/atomic';
import {
  assembleWords,
  checkTexts,
  type EncodeOptions,
  type EncodedBatch,
  type Encoded,
  type EncodedWords,
  padBatch,
  type Tokenizer,
} from './batch';

export const CHAR_TOKENIZER_FILE = 'char-tokenizer.json';
const SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] as const;

export class CharTokenizer implements Tokenizer {
  readonly padTokenId = 0;
  readonly unknownId = 1;
  readonly clsId = 2;
  readonly sepId = 3;
  readonly maskId = 4;
  readonly #ids: Map<string, number>;
  readonly #characters: string[];

  private constructor(characters: readonly string[]) {
    this.#characters = [...characters];
    this.#ids = new Map(this.#characters.map((character, index) => [character, index + SPECIALS.length]));
  }

  /** A vocabulary of every character in `texts` (in order of first appearance, sorted for stability). */
  static fromTexts(texts: Iterable<string>, options: { lowercase?: boolean } = {}): CharTokenizer {
    const seen = new Set<string>();
    for (const text of texts)
      for (const character of options.lowercase ? text.toLowerCase() : text) seen.add(character);
    return new CharTokenizer([...seen].sort());
  }

  static load(path: string): CharTokenizer {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as { type?: string; characters?: unknown };
    if (parsed.type !== 'bidora-char' || !Array.isArray(parsed.characters)) {
      throw new TypeError(`${path}: not a bidora character tokenizer`);
    }
    return new CharTokenizer(parsed.characters as string[]);
  }

  save(path: string): void {
    writeFileAtomic(
      path,
      JSON.stringify({ type: 'bidora-char', specials: SPECIALS, characters: this.#characters }) + '\n',
    );
  }

  get vocabSize(): number {
    return SPECIALS.length + this.#characters.length;
  }

  /** Ids of the characters (code points) of `text`, unknown ones as [UNK]. */
  tokenize(text: string): number[] {
    return Array.from(text, (character) => this.#ids.get(character) ?? this.unknownId);
  }

  decode(ids: readonly number[]): string {
    return ids
      .filter((id) => id >= SPECIALS.length)
      .map((id) => this.#characters[id - SPECIALS.length] ?? '')
      .join('');
  }

  /** [CLS] words [SEP], the words as the text they spell: a space (belonging to no word) between them. */
  encodeWords(words: readonly string[], options: { maxLength?: number } = {}): EncodedWords {
    return assembleWords(
      words,
      (word) => this.tokenize(word),
      [this.clsId],
      [this.sepId],
      options.maxLength ?? 512,
      this.tokenize(' '),
    );
  }

  /** [CLS] text [SEP] (pair [SEP]), truncated longest-first to maxLength, padded into a batch. */
  encodeBatch(texts: readonly string[], options: EncodeOptions = {}): EncodedBatch {
    checkTexts(texts, options);
    const maxLength = options.maxLength ?? 512;
    const sequences: Encoded[] = texts.map((text, index) => {
      let first = this.tokenize(text);
      const pairText = options.pairs?.[index];
      let second = pairText === undefined ? undefined : this.tokenize(pairText);
      const budget = maxLength - (second === undefined ? 2 : 3);
      while (first.length + (second?.length ?? 0) > budget) {
        if (second !== undefined && second.length > first.length) second = second.slice(0, -1);
        else first = first.slice(0, -1);
      }
      const ids = [this.clsId, ...first, this.sepId, ...(second === undefined ? [] : [...second, this.sepId])];
      const typeIds = ids.map((_, position) => (position <= first.length + 1 ? 0 : 1));
      return { ids, typeIds };
    });
    const longest = Math.max(1, ...sequences.map((sequence) => sequence.ids.length));
    return padBatch(sequences, this.padTokenId, options.padding === 'max_length' ? maxLength : longest);
  }
}
