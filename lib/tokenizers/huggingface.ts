// Hugging Face `tokenizer.json` (WordPiece, BPE, ...) through the pure-JavaScript @huggingface/tokenizers package,
// with batch padding and truncation as transformers' tokenizers do it.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import {
  assembleWords,
  checkTexts,
  type EncodeOptions,
  type EncodedBatch,
  type Encoded,
  type EncodedWords,
  padBatch,
  type Tokenizer,
  truncateLongestFirst,
} from './batch';

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new Error(`tokenizer: cannot read ${path}: ${(error as Error).message}`);
  }
}

/**
 * A Hugging Face tokenizer.json (WordPiece for BERT, byte-level BPE for RoBERTa, ...) run by the pure-JavaScript
 * @huggingface/tokenizers package, truncating and padding as transformers does. The constructor takes the parsed
 * tokenizer.json and tokenizer_config.json; `fromFile` reads them.
 */
export class HuggingFaceTokenizer implements Tokenizer {
  /** The model vocabulary's size, grown to cover added tokens. */
  readonly vocabSize: number;
  /** From tokenizer.json's padding, else the config's pad_token, else [PAD] or <pad>, else 0. */
  readonly padTokenId: number;
  readonly #tokenizer: HfTokenizer;
  readonly #specialCount: { single: number; pair: number };
  /** The special tokens around a single sequence ([CLS] … [SEP], <s> … </s>), for pre-split words. */
  readonly #around: { prefix: number[]; suffix: number[] };
  /** Byte-level BPE (GPT-2, RoBERTa) reads a word after a space differently: split words get one, as transformers. */
  readonly #spaceBeforeWords: boolean;

  constructor(tokenizerJson: Record<string, unknown>, tokenizerConfig: Record<string, unknown> = {}) {
    this.#tokenizer = new HfTokenizer(tokenizerJson, tokenizerConfig);
    const model = tokenizerJson.model as { vocab?: Record<string, number> | unknown[] } | undefined;
    const vocab = model?.vocab;
    const added = (tokenizerJson.added_tokens as { id: number }[] | undefined) ?? [];
    const baseSize = Array.isArray(vocab) ? vocab.length : vocab ? Object.keys(vocab).length : 0;
    this.vocabSize = Math.max(baseSize, ...added.map((token) => token.id + 1));
    const padToken = (tokenizerConfig.pad_token as string | undefined) ?? '[PAD]';
    const padding = tokenizerJson.padding as { pad_id?: number } | null | undefined;
    this.padTokenId =
      padding?.pad_id ?? this.#tokenizer.token_to_id(padToken) ?? this.#tokenizer.token_to_id('<pad>') ?? 0;
    // How many special tokens the post-processor adds, so truncation leaves room for them.
    // (A non-empty probe text: an empty pair is dropped as if there were none.)
    const probe = 'a';
    const probeTokens = this.#tokenizer.encode(probe, { add_special_tokens: false }).ids.length;
    const single = this.#tokenizer.encode(probe, { add_special_tokens: true }).ids.length - probeTokens;
    const pair =
      this.#tokenizer.encode(probe, { text_pair: probe, add_special_tokens: true }).ids.length - 2 * probeTokens;
    this.#specialCount = { single, pair };
    const probeIds = this.#tokenizer.encode(probe, { add_special_tokens: false }).ids;
    const withSpecials = this.#tokenizer.encode(probe, { add_special_tokens: true }).ids;
    const at = withSpecials.findIndex((_, index) =>
      probeIds.every((id, offset) => withSpecials[index + offset] === id),
    );
    this.#around = { prefix: withSpecials.slice(0, at), suffix: withSpecials.slice(at + probeIds.length) };
    this.#spaceBeforeWords = JSON.stringify(tokenizerJson.pre_tokenizer ?? null).includes('"ByteLevel"');
  }

  encodeWords(words: readonly string[], options: { maxLength?: number } = {}): EncodedWords {
    return assembleWords(
      words,
      (word) => this.tokenize(this.#spaceBeforeWords ? ` ${word}` : word),
      this.#around.prefix,
      this.#around.suffix,
      options.maxLength ?? 512,
    );
  }

  /** From a folder holding tokenizer.json (and optionally tokenizer_config.json), or from the file itself. */
  static fromFile(path: string): HuggingFaceTokenizer {
    const folder = existsSync(path) && statSync(path).isDirectory();
    const file = folder ? join(path, 'tokenizer.json') : path;
    const configFile = join(folder ? path : join(path, '..'), 'tokenizer_config.json');
    return new HuggingFaceTokenizer(readJson(file), existsSync(configFile) ? readJson(configFile) : {});
  }

  /**
   * The ids the tokenizer puts before a single text (Llama's <s>, BERT's [CLS]; none for GPT-2): what a language
   * model's examples and prompts start with, as transformers' tokenizer(text) gives them.
   */
  get startIds(): readonly number[] {
    return this.#around.prefix;
  }

  /** The text of `ids`, special tokens left out unless `skipSpecialTokens` is false. */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    return this.#tokenizer.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? true });
  }

  /** Token ids without special tokens. */
  tokenize(text: string): number[] {
    return this.#tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  #encode(text: string, pair: string | undefined): Encoded {
    const encoded = this.#tokenizer.encode(text, {
      text_pair: pair ?? null,
      add_special_tokens: true,
      return_token_type_ids: true,
    });
    return { ids: encoded.ids, typeIds: encoded.token_type_ids };
  }

  #encodeOne(text: string, pair: string | undefined, maxLength: number): Encoded {
    const whole = this.#encode(text, pair);
    if (whole.ids.length <= maxLength) return whole;
    // Truncate the tokens longest-first (transformers' default), then let the tokenizer's own post-processor add
    // [CLS]/[SEP] or <s>/</s> and the type ids to the shortened texts.
    const [first, second] = truncateLongestFirst(
      this.tokenize(text),
      pair === undefined ? undefined : this.tokenize(pair),
      maxLength - (pair === undefined ? this.#specialCount.single : this.#specialCount.pair),
    );
    const decode = (ids: number[]) => this.#tokenizer.decode(ids, { skip_special_tokens: false });
    const shortened = this.#encode(decode(first), second === undefined ? undefined : decode(second));
    if (shortened.ids.length <= maxLength) return shortened;
    // Decoding does not always round-trip (normalisers): cut hard, keeping the closing special token.
    const keep = maxLength - 1;
    return {
      ids: [...shortened.ids.slice(0, keep), shortened.ids.at(-1)!],
      typeIds: [...shortened.typeIds.slice(0, keep), shortened.typeIds.at(-1)!],
    };
  }

  encodeBatch(texts: readonly string[], options: EncodeOptions = {}): EncodedBatch {
    checkTexts(texts, options);
    const maxLength = options.maxLength ?? 512;
    const sequences: Encoded[] = texts.map((text, index) => this.#encodeOne(text, options.pairs?.[index], maxLength));
    const longest = Math.max(1, ...sequences.map((sequence) => sequence.ids.length));
    return padBatch(sequences, this.padTokenId, options.padding === 'max_length' ? maxLength : longest);
  }
}
