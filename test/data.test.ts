// Training data: the seeded generator (against the reference algorithm's outputs), shuffles, the stratified
// lower/upper split, resumable batch streams, collation, example files (CSV and JSONL) and label vocabularies.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { ops, Tensor, tidy } from '../lib/index';
import { BatchStream, collate, type Example, shuffled, splitLowerUpper } from '../lib/train/data';
import { ExamplesFileError, labelVocabulary, readExamplesFile } from '../lib/train/files';
import { Random } from '../lib/random';

const dir = mkdtempSync(join(tmpdir(), 'bidora-data-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeFile(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

const range = (count: number): number[] => Array.from({ length: count }, (_, index) => index);

describe('Random', () => {
  it('is xoshiro128**: the reference C code from state {1, 2, 3, 4} gives these words', () => {
    const random = Random.fromState([1, 2, 3, 4]);
    const words = range(6).map(() => random.nextUint32());
    expect(words).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
    expect(random.state()).toEqual([1110993931, 286554632, 2431677446, 2165318166]);
  });

  it('state() and fromState() continue the sequence exactly, through JSON too', () => {
    const random = new Random(2024);
    for (let i = 0; i < 37; i++) random.normal();
    const saved = JSON.parse(JSON.stringify(random.state())) as number[];
    const expected = range(50).map(() => [random.next(), random.int(1000), random.normal()]);
    const restored = Random.fromState(saved);
    expect(range(50).map(() => [restored.next(), restored.int(1000), restored.normal()])).toEqual(expected);
  });

  it('seeds: equal seeds agree, nearby and large seeds differ', () => {
    const firstWords = (seed: number): number[] => {
      const random = new Random(seed);
      return range(4).map(() => random.nextUint32());
    };
    expect(firstWords(7)).toEqual(firstWords(7));
    expect(firstWords(7)).not.toEqual(firstWords(8));
    expect(firstWords(2 ** 40)).not.toEqual(firstWords(2 ** 41));
    expect(firstWords(-1)).not.toEqual(firstWords(0));
    expect(() => new Random(0.5)).toThrow(RangeError);
  });

  it('next() is in [0, 1), int(n) is in range and even, normal() has mean 0 and variance 1', () => {
    const random = new Random(99);
    const draws = range(20000).map(() => random.next());
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...draws)).toBeLessThan(1);
    const buckets = new Array<number>(10).fill(0);
    for (let i = 0; i < 20000; i++) buckets[random.int(10)]++;
    // χ² with 9 degrees of freedom: 27.9 is its 0.999 quantile.
    const chiSquare = buckets.reduce((sum, count) => sum + (count - 2000) ** 2 / 2000, 0);
    expect(chiSquare).toBeLessThan(27.9);
    const normals = range(20000).map(() => random.normal());
    const average = normals.reduce((sum, value) => sum + value, 0) / normals.length;
    const variance = normals.reduce((sum, value) => sum + (value - average) ** 2, 0) / (normals.length - 1);
    expect(Math.abs(average)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.04);
    expect(() => random.int(0)).toThrow(RangeError);
    expect(() => random.int(2.5)).toThrow(RangeError);
  });

  it('fromState rejects malformed and all-zero states', () => {
    expect(() => Random.fromState([1, 2, 3])).toThrow(RangeError);
    expect(() => Random.fromState([1, 2, 3, 2 ** 32])).toThrow(RangeError);
    expect(() => Random.fromState([1, 2, -3, 4])).toThrow(RangeError);
    expect(() => Random.fromState([0, 0, 0, 0])).toThrow(/all-zero/);
  });
});

describe('shuffled', () => {
  it('returns a seeded permutation in a new array', () => {
    const items = range(50).map((index) => `item ${index}`);
    const copy = [...items];
    const once = shuffled(items, new Random(5));
    expect(items).toEqual(copy);
    expect(once).not.toBe(items);
    expect([...once].sort()).toEqual([...items].sort());
    expect(once).not.toEqual(items);
    expect(shuffled(items, new Random(5))).toEqual(once);
    expect(shuffled(items, new Random(6))).not.toEqual(once);
    expect(shuffled([], new Random(1))).toEqual([]);
  });

  it('puts every item in every position about equally often', () => {
    const random = new Random(8);
    const counts = range(4).map(() => new Array<number>(4).fill(0));
    for (let trial = 0; trial < 8000; trial++) shuffled(range(4), random).forEach((item, at) => counts[item][at]++);
    for (const row of counts) for (const count of row) expect(Math.abs(count - 2000)).toBeLessThan(200);
  });
});

describe('splitLowerUpper', () => {
  const classSizes = [50, 30, 7, 2, 1];
  const labelled = classSizes.flatMap((size, label) =>
    range(size).map((index) => ({ id: `${label}.${index}`, label })),
  );

  it('is disjoint, complete and 80/20 by default', () => {
    const { lower, upper } = splitLowerUpper(labelled);
    expect(upper.length).toBe(Math.round(labelled.length * 0.2));
    expect(lower.length + upper.length).toBe(labelled.length);
    const ids = new Set([...lower, ...upper].map((item) => item.id));
    expect(ids.size).toBe(labelled.length);
  });

  it('is stratified: each class of two or more is on both sides, in proportion', () => {
    const { lower, upper } = splitLowerUpper(labelled, 0.2, 3);
    const count = (items: typeof labelled, label: number): number => items.filter((i) => i.label === label).length;
    expect(count(upper, 0)).toBe(10);
    expect(count(upper, 1)).toBe(6);
    for (const label of [0, 1, 2, 3]) {
      expect(count(lower, label)).toBeGreaterThan(0);
      expect(count(upper, label)).toBeGreaterThan(0);
    }
    // A class of one can only be on one side.
    expect(count(lower, 4) + count(upper, 4)).toBe(1);
  });

  it('is seeded, keeps the original order within each side, and moves with the seed', () => {
    const first = splitLowerUpper(labelled, 0.25, 1);
    expect(splitLowerUpper(labelled, 0.25, 1)).toEqual(first);
    expect(splitLowerUpper(labelled, 0.25, 2).upper).not.toEqual(first.upper);
    const position = new Map(labelled.map((item, index) => [item, index]));
    for (const side of [first.lower, first.upper]) {
      const positions = side.map((item) => position.get(item)!);
      expect(positions).toEqual([...positions].sort((a, b) => a - b));
    }
  });

  it('splits unlabelled items by count alone', () => {
    const items = range(23).map((index) => `text ${index}`);
    const { lower, upper } = splitLowerUpper(items, 0.3, 9);
    expect(upper.length).toBe(7);
    expect(new Set([...lower, ...upper]).size).toBe(23);
    // Fractional labels are not classes: not stratified, still split by count.
    const regression = range(10).map((index) => ({ label: index / 10 }));
    expect(splitLowerUpper(regression, 0.2).upper.length).toBe(2);
  });

  it('keeps both sides non-empty for tiny sets, and rejects impossible splits', () => {
    const pair = splitLowerUpper(['a', 'b'], 0.01);
    expect([pair.lower.length, pair.upper.length]).toEqual([1, 1]);
    const singletons = splitLowerUpper(
      range(5).map((label) => ({ label })),
      0.2,
    );
    expect([singletons.lower.length, singletons.upper.length]).toEqual([4, 1]);
    expect(() => splitLowerUpper(['only'], 0.5)).toThrow(RangeError);
    for (const fraction of [0, 1, -0.1, 1.5, Number.NaN]) {
      expect(() => splitLowerUpper(range(10), fraction)).toThrow(/upperFraction/);
    }
  });
});

describe('BatchStream', () => {
  const items = range(10).map((index) => `example ${index}`);

  it('hands out each epoch as a permutation in batches, the last one partial, reshuffled each epoch', () => {
    const stream = new BatchStream(items, 4, 1);
    expect(stream.batchesPerEpoch).toBe(3);
    const epochs = range(3).map(() => {
      const batches = range(3).map(() => stream.next());
      expect(batches.map((batch) => batch.length)).toEqual([4, 4, 2]);
      const all = batches.flat();
      expect([...all].sort()).toEqual([...items].sort());
      return all;
    });
    expect(epochs[1]).not.toEqual(epochs[0]);
    expect(epochs[2]).not.toEqual(epochs[1]);
    expect(stream.epoch).toBe(2);
  });

  it('restore() at any point reproduces the batches that follow, through JSON', () => {
    const reference = new BatchStream(items, 3, 42);
    const sequence = range(30).map(() => reference.next());
    for (const stop of [0, 1, 3, 4, 8, 13]) {
      const original = new BatchStream(items, 3, 42);
      for (let i = 0; i < stop; i++) original.next();
      const saved = JSON.parse(JSON.stringify(original.state()));
      const resumed = new BatchStream(items, 3, 999); // the seed is overridden by the state
      resumed.restore(saved);
      expect(resumed.epoch).toBe(original.epoch);
      expect(range(30 - stop).map(() => resumed.next())).toEqual(sequence.slice(stop));
    }
  });

  it('is seeded, and refuses bad arguments and foreign states', () => {
    const first = (seed: number): string[][] => {
      const stream = new BatchStream(items, 5, seed);
      return [stream.next(), stream.next()];
    };
    expect(first(3)).toEqual(first(3));
    expect(first(3)).not.toEqual(first(4));
    expect(() => new BatchStream([], 2)).toThrow(RangeError);
    expect(() => new BatchStream(items, 0)).toThrow(RangeError);
    const state = new BatchStream(items, 2).state();
    expect(() => new BatchStream(items.slice(1), 2).restore(state)).toThrow(/10 items/);
    expect(() => new BatchStream(items, 2).restore({ ...state, position: 11 })).toThrow(/position/);
    expect(() => new BatchStream(items, 2).restore({ ...state, random: [0, 0, 0, 0] })).toThrow(RangeError);
  });
});

describe('collate', () => {
  const examples: Example[] = [
    { inputIds: [101, 7, 8, 102], label: 1 },
    { inputIds: [101, 9, 102], tokenTypeIds: [0, 1, 1], attentionMask: [1, 1, 0], label: 0 },
    { inputIds: [101, 5, 6, 4, 3, 102], label: 2 },
  ];

  it('pads to the longest example with pad ids, mask 0 and type 0', () => {
    const batch = collate(examples, 77);
    expect(batch.inputIds.shape).toEqual([3, 6]);
    expect(batch.attentionMask.shape).toEqual([3, 6]);
    expect(batch.tokenTypeIds!.shape).toEqual([3, 6]);
    expect(Array.from(batch.inputIds.data)).toEqual([
      ...[101, 7, 8, 102, 77, 77],
      ...[101, 9, 102, 77, 77, 77],
      ...[101, 5, 6, 4, 3, 102],
    ]);
    expect(Array.from(batch.attentionMask.data)).toEqual([
      ...[1, 1, 1, 1, 0, 0],
      ...[1, 1, 0, 0, 0, 0],
      ...[1, 1, 1, 1, 1, 1],
    ]);
    expect(Array.from(batch.tokenTypeIds!.data)).toEqual([
      ...[0, 0, 0, 0, 0, 0],
      ...[0, 1, 1, 0, 0, 0],
      ...[0, 0, 0, 0, 0, 0],
    ]);
    expect(batch.labels).toBeInstanceOf(Float32Array);
    expect(Array.from(batch.labels)).toEqual([1, 0, 2]);
  });

  it('cuts to maxLength, keeps regression targets, and rejects malformed examples', () => {
    const batch = collate(examples, 0, { maxLength: 4 });
    expect(batch.inputIds.shape).toEqual([3, 4]);
    expect(Array.from(batch.inputIds.data.subarray(8, 12))).toEqual([101, 5, 6, 4]);
    expect(collate(examples, 0, { maxLength: 100 }).inputIds.shape).toEqual([3, 6]);
    expect(collate([{ inputIds: [1, 2], label: 0.25 }], 0).labels[0]).toBe(0.25);
    expect(() => collate([], 0)).toThrow(RangeError);
    expect(() => collate([{ inputIds: [], label: 0 }], 0)).toThrow(/inputIds/);
    expect(() => collate([{ inputIds: [1, 2], attentionMask: [1], label: 0 }], 0)).toThrow(/attentionMask/);
    expect(() => collate([{ inputIds: [1, 2.5], label: 0 }], 0)).toThrow(/integers/);
    expect(() => collate([{ inputIds: [1], label: Number.NaN }], 0)).toThrow(/label/);
    expect(() => collate(examples, 0, { maxLength: 0 })).toThrow(/maxLength/);
  });

  it("a model without token types (typeVocabSize 0) ignores a pair's token types, as its tokenizers return none", () => {
    const batch = collate([{ inputIds: [2, 5, 3, 6, 3], tokenTypeIds: [0, 0, 0, 1, 1], label: 1 }], 0, {
      vocabSize: 10,
      typeVocabSize: 0,
      numLabels: 2,
    });
    expect(batch.tokenTypeIds).toBeUndefined();
    expect(Array.from(batch.inputIds.data)).toEqual([2, 5, 3, 6, 3]);
  });

  it('refuses ids that int32 storage would wrap, naming the example, the field and the position', () => {
    const wrapping = [2 ** 32 + 7, 2 ** 31, -1, 2 ** 53];
    for (const id of wrapping) {
      const batch = [examples[0], { inputIds: [101, id, 102], label: 0 }];
      expect(() => collate(batch, 0), String(id)).toThrow(RangeError);
      expect(() => collate(batch, 0), String(id)).toThrow(
        new RegExp(`^collate: example 1 inputIds\\[1\\] is ${id}; expected integers in \\[0, 2\\^31\\)`),
      );
    }
    expect(() => collate([{ inputIds: [1, 2], tokenTypeIds: [0, 2 ** 32], label: 0 }], 0)).toThrow(
      /example 0 tokenTypeIds\[1\] is 4294967296/,
    );
    expect(() => collate([{ inputIds: [1, 2], attentionMask: [1, 2 ** 32 + 1], label: 0 }], 0)).toThrow(
      /example 0 attentionMask\[1\] is 4294967297; expected integers in \[0, 2\) \(attention masks are 0 or 1\)/,
    );
    expect(() => collate(examples, 2 ** 32)).toThrow(/padTokenId must be an integer in \[0, 2\^31\)/);
  });

  it('checks ids, token types and labels against the model config when given (the trainers pass it)', () => {
    const limits = { vocabSize: 200, typeVocabSize: 2, numLabels: 3 };
    expect(Array.from(collate(examples, 0, limits).labels)).toEqual([1, 0, 2]);
    const tooLarge = [{ inputIds: [101, 200], label: 0 }];
    expect(() => collate(tooLarge, 0, limits)).toThrow(
      /^collate: example 0 inputIds\[1\] is 200; expected integers in \[0, 200\) \(vocabSize\)/,
    );
    expect(() => collate(examples, 200, limits)).toThrow(/padTokenId must be an integer in \[0, 200\) \(vocabSize\)/);
    expect(() => collate([{ inputIds: [1, 2], tokenTypeIds: [0, 2], label: 0 }], 0, limits)).toThrow(
      /tokenTypeIds\[1\] is 2; expected integers in \[0, 2\) \(typeVocabSize\)/,
    );
    for (const label of [3, 2 ** 32, -1, 0.5]) {
      expect(() => collate([examples[0], examples[1], { inputIds: [1], label }], 0, limits), String(label)).toThrow(
        new RegExp(`^collate: example 2 label is ${label}; expected an integer class in \\[0, 3\\) \\(numLabels\\)`),
      );
    }
    // -100 is ignored by the loss, as in transformers.
    expect(collate([{ inputIds: [1], label: -100 }], 0, limits).labels[0]).toBe(-100);
    // Regression (numLabels 1, or problemType) takes any finite target; classification needs numLabels.
    expect(collate([{ inputIds: [1], label: 2 ** 32 }], 0, { numLabels: 1 }).labels[0]).toBe(2 ** 32);
    expect(collate([{ inputIds: [1], label: -2.5 }], 0, { numLabels: 4, problemType: 'regression' }).labels[0]).toBe(
      -2.5,
    );
    expect(() => collate([{ inputIds: [1], label: Infinity }], 0, { numLabels: 1 })).toThrow(/finite/);
    expect(() => collate(examples, 0, { problemType: 'single_label_classification' })).toThrow(/needs numLabels/);
    expect(() => collate(examples, 0, { vocabSize: 0 })).toThrow(/vocabSize must be an integer from 1 to 2\^31/);
    expect(() => collate(examples, 0, { numLabels: 2.5 })).toThrow(/numLabels/);
  });

  it('the embedding and cross-entropy kernels refuse out-of-range ids and labels instead of reading past the end', () => {
    tidy(() => {
      const table = Tensor.randn([5, 3], { seed: 1 });
      expect(() => ops.embedding(table, new Int32Array([0, 5]))).toThrow(RangeError);
      expect(() => ops.embedding(table, new Int32Array([0, 5]))).toThrow(/ids\[1\] is 5, outside \[0, 5\)/);
      expect(() => ops.embedding(table, new Int32Array([-1]))).toThrow(/ids\[0\] is -1/);
      const logits = Tensor.randn([2, 3], { seed: 2 });
      expect(() => ops.crossEntropy(logits, new Int32Array([0, 3]))).toThrow(/labels\[1\] is 3, outside \[0, 3\)/);
      expect(() => ops.crossEntropy(logits, new Int32Array([-2, 0]))).toThrow(RangeError);
      expect(ops.crossEntropy(logits, new Int32Array([-100, 2])).item()).toBeGreaterThan(0);
    });
  });
});

describe('readExamplesFile', () => {
  it('reads CSV with quoted commas, doubled quotes, newlines in quotes, CRLF, a BOM and an empty pair', () => {
    const path = writeFile(
      'quoted.csv',
      '\uFEFFlabel,text,text_pair\r\n' +
        'pos,"Hello, world","She said ""hi"""\r\n' +
        'neg,"two\r\nlines",\r\n' +
        '3,plain,"a\nb"\r\n' +
        '\r\n',
    );
    expect(readExamplesFile(path).rows).toEqual([
      { text: 'Hello, world', textPair: 'She said "hi"', label: 'pos' },
      { text: 'two\r\nlines', label: 'neg' },
      { text: 'plain', textPair: 'a\nb', label: '3' },
    ]);
    const noPairColumn = writeFile('plain.csv', 'text,label\nfine,1\n"",0');
    expect(readExamplesFile(noPairColumn).rows).toEqual([
      { text: 'fine', label: '1' },
      { text: '', label: '0' },
    ]);
  });

  it('CSV errors name the file, the line and the problem', () => {
    const missing = writeFile('missing.csv', 'text,score\nhello,1\n');
    expect(() => readExamplesFile(missing)).toThrow(`${missing}:1: missing column "label"`);
    // The bad record is on line 5, not 4: the quoted field that starts on line 2 spans two lines.
    const ragged = writeFile('ragged.csv', 'text,label\n"one\ntwo",a\nfine,b\nextra,c,d\n');
    expect(() => readExamplesFile(ragged)).toThrow(`${ragged}:5: expected 2 fields, found 3`);
    const unterminated = writeFile('open.csv', 'text,label\nok,1\n"never closed,2\nmore,3\n');
    let error: unknown;
    try {
      readExamplesFile(unterminated);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ExamplesFileError);
    expect(error).toMatchObject({ file: unterminated, line: 3 });
    expect((error as Error).message).toMatch(/unterminated quoted field/);
    const stray = writeFile('stray.csv', 'text,label\n"quoted"x,1\n');
    expect(() => readExamplesFile(stray)).toThrow(`${stray}:2: unexpected "x" after a closing quote`);
    const emptyLabel = writeFile('empty-label.csv', 'text,label\nhello,\n');
    expect(() => readExamplesFile(emptyLabel)).toThrow(`${emptyLabel}:2: empty "label"`);
    expect(() => readExamplesFile(writeFile('header-only.csv', 'text,label\n'))).toThrow(/no examples/);
  });

  it('reads JSONL, skipping blank lines, with CRLF, pairs and numeric labels', () => {
    const path = writeFile(
      'good.jsonl',
      '{"text": "a", "label": 1}\r\n\n{"text": "b", "text_pair": "c", "label": "neg"}\n  \n{"text": "d", "label": 0.5}',
    );
    expect(readExamplesFile(path).rows).toEqual([
      { text: 'a', label: 1 },
      { text: 'b', textPair: 'c', label: 'neg' },
      { text: 'd', label: 0.5 },
    ]);
  });

  it('JSONL errors name the line', () => {
    const cases: [string, string][] = [
      ['{"text": "a", "label": 1}\n\n{"text": "b", "label": 2\n', ':3: bad JSON'],
      ['{"label": 1}\n', ':1: "text" is missing'],
      ['{"text": "a", "label": 1}\n{"text": "b"}\n', ':2: "label" is missing'],
      ['{"text": "a", "label": true}\n', ':1: "label" is missing or not a string'],
      ['{"text": "a", "text_pair": 3, "label": 1}\n', ':1: "text_pair" must be a string'],
      ['[1, 2]\n', ':1: expected a JSON object'],
    ];
    cases.forEach(([content, problem], index) => {
      const path = writeFile(`bad-${index}.jsonl`, content);
      expect(() => readExamplesFile(path)).toThrow(`${path}${problem}`);
    });
    expect(() => readExamplesFile(writeFile('data.txt', 'text,label\n'))).toThrow(/\.jsonl or \.csv/);
  });
});

describe('labelVocabulary', () => {
  const rows = (labels: (string | number)[]): { label: string | number }[] => labels.map((label) => ({ label }));

  it('sorts string classes and maps them to ids', () => {
    const vocabulary = labelVocabulary(rows(['pos', 'neg', 'neutral', 'neg']));
    expect(vocabulary.labels).toEqual(['neg', 'neutral', 'pos']);
    expect(vocabulary.toId('pos')).toBe(2);
    expect(() => vocabulary.toId('other')).toThrow(/unknown label/);
  });

  it('sorts integer classes numerically, whether written as numbers or strings', () => {
    const vocabulary = labelVocabulary(rows(['10', '2', 2, '0', ' 1 ']));
    expect(vocabulary.labels).toEqual(['0', '1', '2', '10']);
    expect(vocabulary.toId(10)).toBe(3);
    expect(vocabulary.toId('2')).toBe(2);
    expect(() => vocabulary.toId(3)).toThrow(RangeError);
  });

  it('reads non-integers, or more than 20 distinct integers, as regression', () => {
    const scores = labelVocabulary(rows(['0.5', 4, '3.25', '1e-1']));
    expect(scores.labels).toBeNull();
    expect(scores.toId('3.25')).toBe(3.25);
    expect(() => scores.toId('high')).toThrow(RangeError);
    expect(labelVocabulary(rows(range(21))).labels).toBeNull();
    expect(labelVocabulary(rows(range(20))).labels).toHaveLength(20);
  });

  it('treats a mix of words and numbers as classes', () => {
    const vocabulary = labelVocabulary(rows(['yes', 1, 'no']));
    expect(vocabulary.labels).toEqual(['1', 'no', 'yes']);
    expect(vocabulary.toId(1)).toBe(0);
    expect(() => labelVocabulary([])).toThrow(RangeError);
  });
});
