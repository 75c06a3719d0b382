// Tokenizers: Hugging Face tokenizer.json files, ESM's protein vocab.txt, and a character-level tokenizer for models
// trained from scratch.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { CHAR_TOKENIZER_FILE, CharTokenizer } from './char';
import { ESM_VOCAB_FILE, EsmTokenizer } from './esm';
import { HuggingFaceTokenizer } from './huggingface';
import { type Tokenizer } from './batch';

export { type EncodedBatch, type EncodedWords, type EncodeOptions, type Tokenizer } from './batch';
export { CHAR_TOKENIZER_FILE, CharTokenizer } from './char';
export { ESM_VOCAB_FILE, EsmTokenizer } from './esm';

/** Every file a tokenizer may be read from: what a command copies beside an adapter or a merged model. */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', ESM_VOCAB_FILE, CHAR_TOKENIZER_FILE];
export { HuggingFaceTokenizer } from './huggingface';

/**
 * The tokenizer a model folder holds: tokenizer.json (Hugging Face), ESM's vocab.txt (when the folder's config or
 * tokenizer_config names ESM), or char-tokenizer.json (bidora's own).
 */
export function load(dir: string): Tokenizer {
  if (existsSync(join(dir, 'tokenizer.json'))) return HuggingFaceTokenizer.fromFile(dir);
  if (existsSync(join(dir, ESM_VOCAB_FILE)) && isEsmFolder(dir)) return EsmTokenizer.load(join(dir, ESM_VOCAB_FILE));
  if (existsSync(join(dir, CHAR_TOKENIZER_FILE))) return CharTokenizer.load(join(dir, CHAR_TOKENIZER_FILE));
  throw new Error(`tokenizers.load: ${dir} has no tokenizer.json, ESM vocab.txt or ${CHAR_TOKENIZER_FILE}`);
}

/** Whether the folder's config.json says model_type esm, or its tokenizer_config.json EsmTokenizer. */
function isEsmFolder(dir: string): boolean {
  const read = (file: string): Record<string, unknown> => {
    try {
      return JSON.parse(readFileSync(join(dir, file), 'utf8')) as Record<string, unknown>;
    } catch {
      return {};
    }
  };
  return read('config.json').model_type === 'esm' || read('tokenizer_config.json').tokenizer_class === 'EsmTokenizer';
}
