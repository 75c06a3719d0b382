// Tokenizers: Hugging Face tokenizer.json files, and a character-level tokenizer for models trained from scratch.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { CHAR_TOKENIZER_FILE, CharTokenizer } from './char';
import { HuggingFaceTokenizer } from './huggingface';
import { type Tokenizer } from './batch';

export { type EncodedBatch, type EncodeOptions, type Tokenizer } from './batch';
export { CHAR_TOKENIZER_FILE, CharTokenizer } from './char';
export { HuggingFaceTokenizer } from './huggingface';

/** The tokenizer a model folder holds: tokenizer.json (Hugging Face) or char-tokenizer.json (bidora's own). */
export function load(dir: string): Tokenizer {
  if (existsSync(join(dir, 'tokenizer.json'))) return HuggingFaceTokenizer.fromFile(dir);
  if (existsSync(join(dir, CHAR_TOKENIZER_FILE))) return CharTokenizer.load(join(dir, CHAR_TOKENIZER_FILE));
  throw new Error(`tokenizers.load: ${dir} has neither tokenizer.json nor ${CHAR_TOKENIZER_FILE}`);
}
