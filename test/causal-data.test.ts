// Language-modelling data: JSONL rows with errors at file:line, labels over the completion only, padded collation
// with -100 on padding, and packing into blocks.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { CharTokenizer } from '../lib/tokenizers/index';
import {
  causalExamples,
  collate,
  packExamples,
  parseCausalLines,
  readCausalExamplesFile,
  splitLowerUpper,
} from '../lib/train/index';

/** A tokenizer whose ids are easy to read by hand: each character's code point minus 96 (a → 1, b → 2, ...). */
const letters = { tokenize: (text: string) => [...text].map((character) => character.charCodeAt(0) - 96) };

describe('language-modelling files', () => {
  it('reads text rows and prompt/completion rows with their lines, skipping blank ones', () => {
    expect(parseCausalLines('f.jsonl', '{"text":"ab"}\n\n{"text":"c"}\r\n')).toEqual([
      { text: 'ab', line: 1 },
      { text: 'c', line: 3 },
    ]);
    expect(parseCausalLines('f.jsonl', '{"prompt":"a","completion":"b"}\n')).toEqual([
      { prompt: 'a', completion: 'b', line: 1 },
    ]);
  });

  it('names the file and line of every bad row', () => {
    const bad: [string, RegExp][] = [
      ['{"text":"a"}\n{"text":', /^f\.jsonl:2: bad JSON/],
      ['[1]', /^f\.jsonl:1: expected a JSON object/],
      ['{"label":1}', /^f\.jsonl:1: expected "text", or "prompt" and "completion"/],
      ['{"text":3}', /^f\.jsonl:1: "text" must be a string/],
      ['{"text":""}', /^f\.jsonl:1: "text" is empty/],
      ['{"prompt":"a"}', /^f\.jsonl:1: "completion" is missing or not a string/],
      ['{"prompt":"a","completion":null}', /^f\.jsonl:1: "completion" is missing/],
      ['{"text":"a"}\n{"prompt":"a","completion":"b"}', /^f\.jsonl:2: this line has "prompt"\/"completion" but/],
      ['\n\n', /^f\.jsonl:1: no examples/],
    ];
    for (const [content, message] of bad) expect(() => parseCausalLines('f.jsonl', content)).toThrow(message);
    const dir = mkdtempSync(join(tmpdir(), 'bidora-causal-'));
    writeFileSync(join(dir, 'train.jsonl'), '{"text":"ab"}\n{"text":1}\n');
    expect(() => readCausalExamplesFile(join(dir, 'train.jsonl'))).toThrow(`${join(dir, 'train.jsonl')}:2:`);
    expect(() => readCausalExamplesFile(join(dir, 'missing.jsonl'))).toThrow(/cannot read/);
  });
});

describe('causal examples', () => {
  it('a text row learns every token; a prompt row its completion and eos only', () => {
    const [text, prompted] = causalExamples([{ text: 'abc' }, { prompt: 'ab', completion: 'cd' }], {
      ...letters,
      prefix: [30],
      eosTokenId: 31,
    });
    expect(text).toEqual({ inputIds: [30, 1, 2, 3, 31], label: [30, 1, 2, 3, 31] });
    expect(prompted).toEqual({ inputIds: [30, 1, 2, 3, 4, 31], label: [-100, -100, -100, 3, 4, 31] });
  });

  it('cuts to maxLength from the end, and refuses a row left with nothing to learn, naming it', () => {
    const [cut] = causalExamples(
      [{ prompt: 'ab', completion: 'cdef' }],
      { ...letters, eosTokenId: 31 },
      { maxLength: 4 },
    );
    expect(cut).toEqual({ inputIds: [1, 2, 3, 4], label: [-100, -100, 3, 4] });
    expect(() =>
      causalExamples([{ prompt: 'abcd', completion: 'e', line: 7 }], letters, { maxLength: 3, source: 'd.jsonl' }),
    ).toThrow(/^causalExamples: d\.jsonl:7: no token to learn \(the prompt takes 3 of maxLength 3/);
    expect(() => causalExamples([{ text: 'a' }], letters)).toThrow(/example:1: no token to learn.*two ids/);
    expect(() => causalExamples([{ prompt: 'a', completion: '' }], letters)).toThrow(/completion is empty with no eos/);
    expect(() => causalExamples([{ text: 'ab' }], letters, { maxLength: 1 })).toThrow(/maxLength/);
    expect(() => causalExamples([{ text: 'ab' }], { ...letters, eosTokenId: -1 })).toThrow(/eosTokenId/);
    expect(() => causalExamples([{ text: 'ab' }], {} as never)).toThrow(TypeError);
  });

  it('works with the character tokenizer', () => {
    const tokenizer = CharTokenizer.fromTexts(['hello']);
    const [example] = causalExamples([{ prompt: 'he', completion: 'llo' }], {
      tokenize: (text) => tokenizer.tokenize(text),
      eosTokenId: tokenizer.sepId,
    });
    expect(tokenizer.decode(example.inputIds)).toBe('hello');
    expect((example.label as number[]).slice(0, 2)).toEqual([-100, -100]);
    expect((example.label as number[]).at(-1)).toBe(tokenizer.sepId);
  });

  it('collates right-padded batches: pad ids, mask 0, labels -100 on padding, no token types', () => {
    const examples = causalExamples([{ text: 'abc' }, { prompt: 'a', completion: 'b' }], { ...letters, eosTokenId: 9 });
    const batch = collate(examples, 0, { task: 'causal-lm', vocabSize: 10 });
    expect(batch.inputIds.shape).toEqual([2, 4]);
    expect([...batch.inputIds.data]).toEqual([1, 2, 3, 9, 1, 2, 9, 0]);
    expect([...batch.attentionMask.data]).toEqual([1, 1, 1, 1, 1, 1, 1, 0]);
    expect([...batch.labels]).toEqual([1, 2, 3, 9, -100, 2, 9, -100]);
    expect(batch.tokenTypeIds).toBeUndefined();
    expect(() => collate([{ inputIds: [1, 2], label: [1, 12] }], 0, { task: 'causal-lm', vocabSize: 10 })).toThrow(
      /label\[1\] is 12; expected an integer class in \[0, 10\) \(vocabSize\)/,
    );
    expect(() => collate([{ inputIds: [1, 2], label: 1 }], 0, { task: 'causal-lm', vocabSize: 10 })).toThrow(
      /one per input id \(a language model\)/,
    );
  });

  it('packs into full blocks, dropping the tail, keeping prompt labels out, skipping all-prompt blocks', () => {
    const examples = causalExamples([{ text: 'abc' }, { prompt: 'de', completion: 'f' }, { text: 'gh' }], {
      ...letters,
      eosTokenId: 0,
    });
    // ids: a b c 0 | d e f 0 | g h 0 → blocks of 4: [1 2 3 0] [4 5 6 0]; the tail [7 8 0] is dropped.
    const blocks = packExamples(examples, 4);
    expect(blocks).toEqual([
      { inputIds: [1, 2, 3, 0], label: [1, 2, 3, 0] },
      { inputIds: [4, 5, 6, 0], label: [-100, -100, 6, 0] },
    ]);
    expect(packExamples(examples.slice(0, 1), 8)).toEqual([{ inputIds: [1, 2, 3, 0], label: [1, 2, 3, 0] }]);
    const promptHeavy = causalExamples([{ prompt: 'abcde', completion: 'f' }], letters);
    expect(packExamples(promptHeavy, 3)).toEqual([{ inputIds: [4, 5, 6], label: [-100, -100, 6] }]);
    expect(() => packExamples(examples, 1)).toThrow(/blockSize/);
    expect(() => packExamples([{ inputIds: [1], label: 0 }], 2)).toThrow(/one label per input id/);
  });

  it('splits per example for BiDoRA (per-token labels are not stratified)', () => {
    const examples = causalExamples(
      Array.from({ length: 10 }, (_, index) => ({ text: 'ab'.repeat(index + 1) })),
      letters,
    );
    const { lower, upper } = splitLowerUpper(examples, 0.2, 3);
    expect(lower.length + upper.length).toBe(10);
    expect(upper.length).toBe(2);
    expect(new Set([...lower, ...upper]).size).toBe(10);
  });
});
