// Tokenizers: a WordPiece (BERT) and a byte-level BPE (RoBERTa) tokenizer.json written here, through the
// @huggingface/tokenizers package, with padding, truncation, pairs and masks; and the character tokenizer.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { tokenizers } from '../lib/index';
import { wordPieceTokenizerJson } from './fixtures/wordpiece';

const dir = mkdtempSync(join(tmpdir(), 'bidora-tokenizers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const wordPieceVocab = [
  '[PAD]',
  '[UNK]',
  '[CLS]',
  '[SEP]',
  '[MASK]',
  'hello',
  'world',
  'un',
  '##believ',
  '##able',
  '!',
];
const wordPiece = wordPieceTokenizerJson(wordPieceVocab);

describe('Hugging Face tokenizer.json', () => {
  it('WordPiece: lowercases, splits sub-words, adds [CLS]/[SEP], pads with a mask, and types a pair', () => {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(wordPiece));
    const tokenizer = tokenizers.load(dir);
    expect(tokenizer.vocabSize).toBe(11);
    expect(tokenizer.padTokenId).toBe(0);
    const batch = tokenizer.encodeBatch(['Hello WORLD!', 'unbelievable'], { pairs: ['world', 'hello hello'] });
    expect(batch.inputIds.shape).toEqual([2, 8]);
    expect(Array.from(batch.inputIds.data.slice(0, 8))).toEqual([2, 5, 6, 10, 3, 6, 3, 0]);
    expect(Array.from(batch.inputIds.data.slice(8))).toEqual([2, 7, 8, 9, 3, 5, 5, 3]);
    expect(Array.from(batch.tokenTypeIds.data.slice(0, 8))).toEqual([0, 0, 0, 0, 0, 1, 1, 0]);
    expect(Array.from(batch.attentionMask.data.slice(0, 8))).toEqual([1, 1, 1, 1, 1, 1, 1, 0]);
    const single = tokenizer.encodeBatch(['hello', 'hello world !'], { padding: 'longest' });
    expect(Array.from(single.inputIds.data)).toEqual([2, 5, 3, 0, 0, 2, 5, 6, 10, 3]);
    expect(Array.from(single.attentionMask.data)).toEqual([1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
  });

  it('truncates to maxLength keeping the special tokens, and pads to max_length on request', () => {
    const tokenizer = tokenizers.HuggingFaceTokenizer.fromFile(join(dir, 'tokenizer.json'));
    const batch = tokenizer.encodeBatch(['hello world hello world hello'], { maxLength: 4 });
    expect(Array.from(batch.inputIds.data)).toEqual([2, 5, 6, 3]);
    const pair = tokenizer.encodeBatch(['hello hello hello'], { pairs: ['world'], maxLength: 6 });
    expect(Array.from(pair.inputIds.data)).toEqual([2, 5, 5, 3, 6, 3]);
    const padded = tokenizer.encodeBatch(['hello'], { padding: 'max_length', maxLength: 6 });
    expect(Array.from(padded.inputIds.data)).toEqual([2, 5, 3, 0, 0, 0]);
    expect(() => tokenizer.encodeBatch(['a'], { pairs: [] })).toThrow(RangeError);
    expect(() => tokenizer.encodeBatch([3 as never])).toThrow(TypeError);
  });

  it('byte-level BPE (RoBERTa style) merges and wraps in <s> … </s>', () => {
    const vocab = {
      '<s>': 0,
      '<pad>': 1,
      '</s>': 2,
      '<unk>': 3,
      l: 4,
      o: 5,
      w: 6,
      Ġ: 7,
      lo: 8,
      low: 9,
      Ġlow: 10,
      e: 11,
      r: 12,
    };
    const bpe = {
      version: '1.0',
      added_tokens: ['<s>', '<pad>', '</s>', '<unk>'].map((content, id) => ({
        id,
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      })),
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: {
        type: 'RobertaProcessing',
        sep: ['</s>', 2],
        cls: ['<s>', 0],
        trim_offsets: true,
        add_prefix_space: false,
      },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: '<unk>',
        continuing_subword_prefix: '',
        end_of_word_suffix: '',
        fuse_unk: false,
        vocab,
        merges: ['l o', 'lo w', 'Ġ low'],
      },
    };
    const folder = mkdtempSync(join(dir, 'bpe-'));
    writeFileSync(join(folder, 'tokenizer.json'), JSON.stringify(bpe));
    writeFileSync(join(folder, 'tokenizer_config.json'), JSON.stringify({ pad_token: '<pad>' }));
    const tokenizer = tokenizers.load(folder);
    expect(tokenizer.padTokenId).toBe(1);
    const batch = tokenizer.encodeBatch(['low low', 'lower']);
    expect(batch.inputIds.shape).toEqual([2, 5]);
    expect(Array.from(batch.inputIds.data.slice(0, 5))).toEqual([0, 9, 10, 2, 1]);
    expect(Array.from(batch.inputIds.data.slice(5))).toEqual([0, 9, 11, 12, 2]);
    // Pre-split words: each after a space, as transformers' is_split_into_words does for byte-level BPE.
    expect(tokenizer.encodeWords(['low', 'low'])).toEqual({ ids: [0, 10, 10, 2], wordIds: [null, 0, 1, null] });
  });

  it('encodeWords: sub-tokens point at their word, special tokens at none, words dropped from the end to fit', () => {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(wordPiece));
    const tokenizer = tokenizers.load(dir);
    expect(tokenizer.encodeWords(['Hello', 'unbelievable', '!'])).toEqual({
      ids: [2, 5, 7, 8, 9, 10, 3],
      wordIds: [null, 0, 1, 1, 1, 2, null],
    });
    // maxLength 5 keeps [CLS], "hello", the first two pieces of "unbelievable", [SEP].
    expect(tokenizer.encodeWords(['hello', 'unbelievable', '!'], { maxLength: 5 })).toEqual({
      ids: [2, 5, 7, 8, 3],
      wordIds: [null, 0, 1, 1, null],
    });
    expect(() => tokenizer.encodeWords(['a'], { maxLength: 2 })).toThrow(/maxLength must be an integer of at least 3/);
    expect(() => tokenizer.encodeWords([1 as never])).toThrow(TypeError);
    const chars = tokenizers.CharTokenizer.fromTexts(['ab c']);
    expect(chars.encodeWords(['ab', 'c'])).toEqual({
      ids: [chars.clsId, ...chars.tokenize('ab c'), chars.sepId],
      wordIds: [null, 0, 0, null, 1, null],
    });
  });
});

describe("XLM-RoBERTa's Unigram (SentencePiece) tokenizer.json", () => {
  it('picks the most probable segmentation, frames <s> … </s>, and splits pre-split words each after ▁', () => {
    const unigram = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: ['<s>', '<pad>', '</s>', '<unk>'].map((content, id) => ({
        id,
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      })),
      normalizer: null,
      pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
      post_processor: {
        type: 'TemplateProcessing',
        single: [
          { SpecialToken: { id: '<s>', type_id: 0 } },
          { Sequence: { id: 'A', type_id: 0 } },
          { SpecialToken: { id: '</s>', type_id: 0 } },
        ],
        pair: [
          { SpecialToken: { id: '<s>', type_id: 0 } },
          { Sequence: { id: 'A', type_id: 0 } },
          { SpecialToken: { id: '</s>', type_id: 0 } },
          { SpecialToken: { id: '</s>', type_id: 0 } },
          { Sequence: { id: 'B', type_id: 0 } },
          { SpecialToken: { id: '</s>', type_id: 0 } },
        ],
        special_tokens: {
          '<s>': { id: '<s>', ids: [0], tokens: ['<s>'] },
          '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] },
        },
      },
      decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
      model: {
        type: 'Unigram',
        unk_id: 3,
        byte_fallback: false,
        // "▁wor" + "ld" (log-probability −6) beats "▁world" (−7): the Viterbi path, not the longest match.
        vocab: [
          ['<s>', 0],
          ['<pad>', 0],
          ['</s>', 0],
          ['<unk>', 0],
          ['▁hello', -2],
          ['▁wor', -3],
          ['ld', -3],
          ['▁world', -7],
          ['▁', -4],
          ...'helowrd'.split('').map((letter) => [letter, -6]),
        ],
      },
    };
    const folder = mkdtempSync(join(dir, 'unigram-'));
    writeFileSync(join(folder, 'tokenizer.json'), JSON.stringify(unigram));
    writeFileSync(join(folder, 'tokenizer_config.json'), JSON.stringify({ pad_token: '<pad>' }));
    const tokenizer = tokenizers.load(folder);
    expect(tokenizer.padTokenId).toBe(1);
    expect(Array.from(tokenizer.encodeBatch(['hello world']).inputIds.data)).toEqual([0, 4, 5, 6, 2]);
    expect(tokenizer.encodeWords(['hello', 'world'])).toEqual({ ids: [0, 4, 5, 6, 2], wordIds: [null, 0, 1, 1, null] });
  });
});

describe("ESM's protein tokenizer (vocab.txt)", () => {
  // ESM-2's vocabulary: the special tokens, the amino acids and the rare ones, one a line.
  const vocab = [
    '<cls>',
    '<pad>',
    '<eos>',
    '<unk>',
    ...'LAGVSERTIDPKQNFYMHWCXBUZO'.split(''),
    '.',
    '-',
    '<null_1>',
    '<mask>',
  ];

  it('splits a sequence into residues in <cls> … <eos>, <mask> whole, unknowns as <unk>, and loads from a folder', () => {
    const folder = mkdtempSync(join(dir, 'esm-'));
    writeFileSync(join(folder, 'vocab.txt'), vocab.join('\n') + '\n');
    writeFileSync(join(folder, 'config.json'), JSON.stringify({ model_type: 'esm' }));
    const tokenizer = tokenizers.load(folder) as tokenizers.EsmTokenizer;
    expect(tokenizer).toBeInstanceOf(tokenizers.EsmTokenizer);
    expect([tokenizer.vocabSize, tokenizer.padTokenId, tokenizer.clsId, tokenizer.eosId]).toEqual([33, 1, 0, 2]);
    const id = (token: string) => vocab.indexOf(token);
    expect(tokenizer.tokenize('MK<mask>T a')).toEqual([id('M'), id('K'), id('<mask>'), id('T'), id('<unk>')]);
    // A run of unknown characters is one word, one <unk>, as transformers splits it; a space ends the run.
    expect(tokenizer.tokenize('mkt A jj k')).toEqual([id('<unk>'), id('A'), id('<unk>'), id('<unk>')]);
    const batch = tokenizer.encodeBatch(['MKT', 'MK'], { pairs: ['A', 'AG'] });
    expect(Array.from(batch.inputIds.data)).toEqual([
      0,
      id('M'),
      id('K'),
      id('T'),
      2,
      id('A'),
      2,
      0,
      id('M'),
      id('K'),
      2,
      id('A'),
      id('G'),
      2,
    ]);
    expect(tokenizer.encodeWords(['M', 'KT'])).toEqual({
      ids: [0, id('M'), id('K'), id('T'), 2],
      wordIds: [null, 0, 1, 1, null],
    });
    expect(() => new tokenizers.EsmTokenizer(['A', 'B'])).toThrow(/EsmTokenizer: the vocabulary has no <pad>/);
  });
});

describe('the character tokenizer', () => {
  it('builds a vocabulary from texts, encodes pairs with [CLS]/[SEP], and saves and loads', () => {
    const tokenizer = tokenizers.CharTokenizer.fromTexts(['abc', 'cab!']);
    expect(tokenizer.vocabSize).toBe(5 + 4);
    const batch = tokenizer.encodeBatch(['ab', 'c?'], { pairs: ['c', 'a'] });
    const [a, b, c] = tokenizer.tokenize('abc');
    expect(Array.from(batch.inputIds.data.slice(0, 6))).toEqual([2, a, b, 3, c, 3]);
    expect(Array.from(batch.inputIds.data.slice(6))).toEqual([2, c, 1, 3, a, 3]);
    expect(Array.from(batch.tokenTypeIds.data.slice(0, 6))).toEqual([0, 0, 0, 0, 1, 1]);
    expect(tokenizer.decode(tokenizer.tokenize('cab'))).toBe('cab');
    const folder = mkdtempSync(join(dir, 'char-'));
    tokenizer.save(join(folder, tokenizers.CHAR_TOKENIZER_FILE));
    const loaded = tokenizers.load(folder);
    expect(loaded.encodeBatch(['cab']).inputIds.data).toEqual(tokenizer.encodeBatch(['cab']).inputIds.data);
  });
});
