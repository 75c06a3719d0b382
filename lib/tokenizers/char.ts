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

/** The file name a CharTokenizer is saved under in a model folder (what `tokenizers.load` looks for). */
export const CHAR_TOKENIZER_FILE = 'char-tokenizer.json';
const SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] as const;

/**
 * One id per character (code point) for models trained from scratch on small alphabets (DNA, protein, toy tasks),
 * framed BERT-style as [CLS] text [SEP]. The special ids are fixed, so any saved vocabulary agrees on them.
 */
export class CharTokenizer implements Tokenizer {
  /** [PAD]. */
  readonly padTokenId = 0;
  /** [UNK], for characters not seen when the vocabulary was built. */
  readonly unknownId = 1;
  /** [CLS], opening every sequence. */
  readonly clsId = 2;
  /** [SEP], closing every sequence (and a pair's first text). */
  readonly sepId = 3;
  /** [MASK], for masked-language-model pretraining. */
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

  /**
   * Reads a file `save` wrote. Throws the file system's error when it cannot be read, a SyntaxError when it is not
   * JSON, and a TypeError when it is not a bidora character tokenizer.
   */
  static load(path: string): CharTokenizer {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as { type?: string; characters?: unknown };
    if (parsed.type !== 'bidora-char' || !Array.isArray(parsed.characters)) {
      throw new TypeError(`${path}: not a bidora character tokenizer`);
    }
    return new CharTokenizer(parsed.characters as string[]);
  }

  /** Writes the vocabulary as JSON to `path` (atomically: a reader never sees half a file). */
  save(path: string): void {
    writeFileAtomic(
      path,
      JSON.stringify({ type: 'bidora-char', specials: SPECIALS, characters: this.#characters }) + '\n',
    );
  }

  /** The five special tokens plus one id per known character. */
  get vocabSize(): number {
    return SPECIALS.length + this.#characters.length;
  }

  /** Ids of the characters (code points) of `text`, unknown ones as [UNK]. */
  tokenize(text: string): number[] {
    return Array.from(text, (character) => this.#ids.get(character) ?? this.unknownId);
  }

  /** What a language model's examples start with: nothing (the model learns from the first character on). */
  readonly startIds: readonly number[] = [];

  /** The text `ids` spell; special and out-of-range ids are dropped. */
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
