// The data preparation of examples/names-pronunciation.mjs: first names are kept out of pretraining, the names split
// into test and adaptation pool once and the same way every run, each seed's adaptation set is a function of the seed
// alone and never holds a test name, and a pronunciation is one token per phoneme; and the example's --quick mode
// end to end (it uses the package as built in dist/: run `npm run build:ts` first), pretraining once then from the cache.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CharTokenizer } from '../lib/tokenizers/index';

interface Entry {
  word: string;
  phonemes: string[];
}
interface Alphabet {
  phonemes: string[];
  spell(phonemes: string[]): string;
  read(text: string): string;
}
interface NamesData {
  DATA_PACKAGES: string[];
  loadEntries(): { words: Entry[]; names: Entry[]; firstNames: Set<string> };
  phonemeAlphabet(entries: Entry[]): Alphabet;
  rows(entries: Entry[], alphabet: Alphabet): { prompt: string; completion: string }[];
  splitNames(names: Entry[], testSize: number): { test: Entry[]; pool: Entry[] };
  adaptationSet(pool: Entry[], size: number, seed: number): Entry[];
  selectionSplit(adaptation: Entry[]): { fit: Entry[]; score: Entry[] };
}

const root = join(__dirname, '..');
let data: NamesData;
let entries: ReturnType<NamesData['loadEntries']>;
beforeAll(async () => {
  // A path, not a specifier, so the type checker does not look for the example's declarations.
  data = (await import(pathToFileURL(join(root, 'examples', 'names-pronunciation-data.mjs')).href)) as NamesData;
  entries = data.loadEntries();
});

const spellings = (list: Entry[]) => list.map((entry) => entry.word);

describe('names example: data preparation', () => {
  it('pins its data packages as devDependencies (exact versions)', () => {
    const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      devDependencies: Record<string, string>;
    };
    for (const name of data.DATA_PACKAGES) expect(manifest.devDependencies[name], name).toBe('0.2.3');
  });

  it('keeps every first name out of the pretraining words, and every name has its dictionary pronunciation', () => {
    const { words, names, firstNames } = entries;
    expect(words.length).toBeGreaterThan(100_000);
    expect(names.length).toBeGreaterThan(5000);
    expect(firstNames.size).toBeGreaterThan(8000);
    expect(words.filter((entry) => firstNames.has(entry.word))).toEqual([]);
    expect(names.every((entry) => firstNames.has(entry.word))).toBe(true);
    const word = new Set(spellings(words));
    expect(spellings(names).filter((name) => word.has(name))).toEqual([]);
    const mary = names.find((entry) => entry.word === 'mary');
    expect(mary?.phonemes).toEqual(['M', 'EH1', 'R', 'IY0']);
    expect(word.has('table')).toBe(true);
    expect(word.has('jackson')).toBe(false);
  });

  it('splits the names the same way every run and whatever their order, test and pool disjoint', () => {
    const { names } = entries;
    const first = data.splitNames(names, 1000);
    const again = data.splitNames([...names].reverse(), 1000);
    expect(spellings(again.test)).toEqual(spellings(first.test));
    expect(spellings(again.pool)).toEqual(spellings(first.pool));
    expect(first.test.length).toBe(1000);
    expect(first.test.length + first.pool.length).toBe(names.length);
    const test = new Set(spellings(first.test));
    expect(first.pool.filter((entry) => test.has(entry.word))).toEqual([]);
  });

  it('draws each seed its own adaptation set from the pool alone, the same on every call', () => {
    const { test, pool } = data.splitNames(entries.names, 1000);
    const testNames = new Set(spellings(test));
    const sets = [0, 1, 2].map((seed) => spellings(data.adaptationSet(pool, 300, seed)));
    sets.forEach((set, seed) => {
      expect(spellings(data.adaptationSet(pool, 300, seed))).toEqual(set);
      expect(new Set(set).size).toBe(300);
      expect(set.filter((name) => testNames.has(name))).toEqual([]);
    });
    expect(sets[1]).not.toEqual(sets[0]);
    expect(sets[2]).not.toEqual(sets[1]);
    const { fit, score } = data.selectionSplit(data.adaptationSet(pool, 300, 0));
    expect([...spellings(fit), ...spellings(score)]).toEqual(sets[0]);
    expect(fit.length).toBe(225);
  });

  it('writes a pronunciation as one token per phoneme and reads it back', () => {
    const alphabet = data.phonemeAlphabet([...entries.words, ...entries.names]);
    expect(alphabet.phonemes.length).toBeGreaterThan(60); // 39 phonemes, vowels with three stresses
    const tokenizer = CharTokenizer.fromTexts(['abcdefghijklmnopqrstuvwxyz=', alphabet.spell(alphabet.phonemes)]);
    const jackson = ['JH', 'AE1', 'K', 'S', 'AH0', 'N'];
    const [row] = data.rows([{ word: 'jackson', phonemes: jackson }], alphabet);
    expect(row.prompt).toBe('jackson=');
    const ids = tokenizer.tokenize(row.completion);
    expect(ids.length).toBe(jackson.length);
    expect(ids.every((id) => id !== tokenizer.unknownId)).toBe(true);
    expect(alphabet.read(tokenizer.decode(ids))).toBe('JH AE1 K S AH0 N');
    expect(tokenizer.tokenize(row.prompt).every((id) => id !== tokenizer.unknownId)).toBe(true);
  });
});

describe('names example: --quick end to end', () => {
  const cache = mkdtempSync(join(tmpdir(), 'bidora-names-'));
  afterAll(() => rmSync(cache, { recursive: true, force: true }));
  const run = () =>
    spawnSync(process.execPath, [join(root, 'examples', 'names-pronunciation.mjs'), '--quick', '--cache', cache], {
      encoding: 'utf8',
    });

  it('pretrains, adapts by each method over paired seeds and reports the paired tests; a rerun uses the cache', () => {
    const first = run();
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/pretrained 30 steps of 64 words/);
    for (const method of ['no adaptation', 'lora', 'dora', 'bidora']) {
      expect(first.stdout).toMatch(new RegExp(`^${method} +`, 'm'));
    }
    expect(first.stdout.match(/^seed \d (lora|dora|bidora) +exact match [\d.]+% +PER [\d.]+%/gm)).toHaveLength(6);
    expect(first.stdout).toMatch(/^dora − lora PER \(points\): .*Wilcoxon signed-rank p = /m);
    expect(first.stdout).toMatch(/^bidora − dora exact match \(points\): /m);
    const second = run();
    expect(second.status, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/pretrained decoder from the cache/);
    // The same cached decoder and the same seeds: the same figures.
    const figures = (output: string) => output.split('\n').filter((line) => line.startsWith('seed '));
    expect(figures(second.stdout).map((line) => line.replace(/\(.*$/, ''))).toEqual(
      figures(first.stdout).map((line) => line.replace(/\(.*$/, '')),
    );
  });
});
