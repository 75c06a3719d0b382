// A character-level tokenizer for models trained from scratch: one id per character seen in the training text,
// with [PAD], [UNK], [CLS], [SEP] and [MASK] first, saved as a small JSON file.
import { readFileSync } from 'node:fs';

import { writeFileAtomic } from '../io/atomic';
import {
  assembleWords,
  encodeFramed,
  type EncodeOptions,
  type EncodedBatch,
  type EncodedWords,
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

  /** What a language model's examples start with: nothing (the model learns from the first character on). */
  readonly startIds: readonly number[] = [];

  /** The text of `ids`; special tokens and unknown ids spell nothing. */
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
    const frame = { tokenize: (text: string) => this.tokenize(text), open: this.clsId, close: this.sepId };
    return encodeFramed(texts, options, { ...frame, padId: this.padTokenId, typedPairs: true }, 512);
  }
}
