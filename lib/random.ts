// Every random number bidora draws comes from here or from the native counter-based generator this module seeds:
// - deriveSeed(seed, name): a child seed from a root seed and a dotted name (a parameter, a dropout module, a data
//   stream), by hashing, as JAX's fold_in or NumPy's SeedSequence.spawn do: children of different names or roots are
//   unrelated, unlike seed + offset schemes where one model's layer-0 key equals another seed's layer-0 query;
// - SeedStream: a reproducible sequence of seeds (one per dropout mask), the hash of its root and a counter;
// - Random: xoshiro128** for data order and sampling in JavaScript, its whole state four 32-bit words so checkpoints
//   save it exactly;
// - freshSeed(): the seed of a call that names none, from the operating system's entropy (never Math.random).
//
// xoshiro128** (Blackman and Vigna, 2018) passes BigCrush, needs only 32-bit integer arithmetic (Math.imul and shifts
// stay exact in JavaScript numbers) and has a period of 2^128 − 1. Seeds are spread over the state by SplitMix32, so
// nearby seeds (0, 1, 2, ...) still start far apart and the state is never all zeros.
import { randomBytes } from 'node:crypto';

const TWO_TO_32 = 0x1_0000_0000;

function rotateLeft(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}

/** One SplitMix32 step: advances `seed` by the golden-ratio increment and returns the mixed word. */
function splitMix32(seed: { value: number }): number {
  seed.value = (seed.value + 0x9e3779b9) | 0;
  let mixed = seed.value;
  mixed = Math.imul(mixed ^ (mixed >>> 16), 0x85ebca6b);
  mixed = Math.imul(mixed ^ (mixed >>> 13), 0xc2b2ae35);
  return (mixed ^ (mixed >>> 16)) >>> 0;
}

/**
 * xoshiro128**: data order, shuffles and sampling on the JavaScript side. Same seed, same numbers on every machine;
 * `state()` and `fromState()` checkpoint it exactly.
 */
export class Random {
  // The four state words, kept as signed 32-bit integers (what Math.imul and `|` produce).
  #s0 = 0;
  #s1 = 0;
  #s2 = 0;
  #s3 = 0;

  /** A generator seeded from any safe integer (Date.now() included: the high bits are mixed in too). */
  constructor(seed = 0) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`Random: seed must be a safe integer, got ${seed}`);
    const low = { value: seed >>> 0 };
    const high = { value: Math.floor(seed / TWO_TO_32) >>> 0 };
    this.#s0 = splitMix32(low) | 0;
    this.#s1 = splitMix32(low) | 0;
    // The high word feeds the other half, so seeds that differ only above bit 31 still differ.
    this.#s2 = (splitMix32(low) ^ splitMix32(high)) | 0;
    this.#s3 = (splitMix32(low) ^ splitMix32(high)) | 0;
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s3 = 1;
  }

  /** The next 32 random bits, as an integer in [0, 2^32). */
  nextUint32(): number {
    const result = Math.imul(rotateLeft(Math.imul(this.#s1, 5), 7), 9);
    const shifted = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= shifted;
    this.#s3 = rotateLeft(this.#s3, 11);
    return result >>> 0;
  }

  /** A uniform number in [0, 1) with 53 random bits (two draws), so every double step is reachable. */
  next(): number {
    const high = this.nextUint32() >>> 5; // 27 bits
    const low = this.nextUint32() >>> 6; // 26 bits
    return (high * 0x400_0000 + low) / 2 ** 53;
  }

  /** A uniform integer in [0, n), without modulo bias (rejection of the incomplete last block). */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_TO_32) {
      throw new RangeError(`Random.int: n must be an integer in [1, 2^32], got ${n}`);
    }
    // Draws at or above `limit` would make the low residues more likely than the high ones.
    const limit = TWO_TO_32 - (TWO_TO_32 % n);
    for (;;) {
      const draw = this.nextUint32();
      if (draw < limit) return draw % n;
    }
  }

  /** A standard normal draw (Box-Muller; the second value of the pair is dropped so the state stays four words). */
  normal(): number {
    const radius = Math.sqrt(-2 * Math.log(1 - this.next())); // 1 − next() is in (0, 1], so the log is finite
    return radius * Math.cos(2 * Math.PI * this.next());
  }

  /** The four state words, each in [0, 2^32): plain numbers, ready for JSON. */
  state(): number[] {
    return [this.#s0 >>> 0, this.#s1 >>> 0, this.#s2 >>> 0, this.#s3 >>> 0];
  }

  /** A generator that continues exactly where the one that gave `state` was. */
  static fromState(state: readonly number[]): Random {
    if (
      !Array.isArray(state) ||
      state.length !== 4 ||
      state.some((word) => !Number.isInteger(word) || word < 0 || word >= TWO_TO_32)
    ) {
      throw new RangeError('Random.fromState: state must be four integers in [0, 2^32)');
    }
    if (state.every((word) => word === 0)) {
      throw new RangeError('Random.fromState: an all-zero state is a fixed point of xoshiro128**');
    }
    const random = new Random(0);
    [random.#s0, random.#s1, random.#s2, random.#s3] = state.map((word) => word | 0);
    return random;
  }
}

function checkSeed(seed: number, where: string): void {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`${where}: seed must be an integer in [0, 2^53), got ${seed}`);
  }
}

/** A 32-bit avalanche: every input bit flips each output bit with probability about 1/2. */
function avalanche(word: number): number {
  word = Math.imul(word ^ (word >>> 16), 0x7feb352d);
  word = Math.imul(word ^ (word >>> 15), 0x846ca68b);
  return (word ^ (word >>> 16)) >>> 0;
}

/**
 * Hashes a root seed and a sequence of 32-bit words into a seed in [0, 2^53). Two lanes absorb every word with
 * different odd multipliers and feed each other at the end, so the 53 bits are all mixed from all of the input.
 */
function hashSeed(seed: number, words: Iterable<number>): number {
  let low = avalanche((seed >>> 0) ^ 0x9e3779b9);
  let high = avalanche(Math.floor(seed / 2 ** 32) ^ 0x632be5ab);
  let count = 0;
  for (const word of words) {
    low = Math.imul(rotateLeft(low ^ word, 13), 0x9e3779b1) + 0x7f4a7c15;
    high = Math.imul(rotateLeft(high ^ word, 17), 0x85ebca77) + 0x165667b1;
    count++;
  }
  // The length goes in too, so a name is never a prefix-collision of a longer one.
  low = avalanche(low ^ count ^ avalanche(high));
  high = avalanche(high ^ Math.imul(count, 0x27d4eb2f) ^ low);
  return (high >>> 11) * 2 ** 32 + low;
}

function* codeUnits(text: string): Generator<number> {
  for (let index = 0; index < text.length; index++) yield text.charCodeAt(index);
}

/**
 * The seed of `name` (a dotted parameter or module name, such as `bert.encoder.layer.0.attention.self.query.weight`)
 * under the root `seed`: the same pair gives the same seed everywhere, different names or roots give unrelated ones.
 */
export function deriveSeed(seed: number, name: string): number {
  checkSeed(seed, 'deriveSeed');
  if (typeof name !== 'string') throw new TypeError(`deriveSeed: name must be a string, got ${typeof name}`);
  return hashSeed(seed, codeUnits(name));
}

/** A seed from the operating system's entropy, for calls that name none. */
export function freshSeed(): number {
  const bytes = randomBytes(8);
  return (bytes.readUInt32LE(4) >>> 11) * 2 ** 32 + bytes.readUInt32LE(0);
}

/**
 * Seeds under one root and a dotted path: `scope.child('encoder').seed('weight')` is
 * `deriveSeed(root, 'encoder.weight')`. Models hand a scope down as they build their layers, so every parameter is
 * seeded by its own name.
 */
export class SeedScope {
  constructor(
    /** The root seed every seed of the scope derives from: a safe integer ≥ 0 (else a RangeError). */
    readonly root: number,
    /** This scope's dotted name ('' at the root), prefixed to every name asked of it. */
    readonly path = '',
  ) {
    checkSeed(root, 'SeedScope');
  }

  /** The scope one level down: `name` appended to this scope's path, the same root. */
  child(name: string): SeedScope {
    return new SeedScope(this.root, this.#join(name));
  }

  /** The seed of `name` under this scope's path. */
  seed(name: string): number {
    return deriveSeed(this.root, this.#join(name));
  }

  #join(name: string): string {
    return this.path === '' ? name : `${this.path}.${name}`;
  }
}

/**
 * A reproducible stream of seeds, one per dropout mask: the n-th is the hash of the root seed and n, so the stream
 * restarts exactly from its position (`state`), which checkpoints save.
 */
export class SeedStream {
  readonly #root: number;
  #position = 0;

  constructor(seed: number) {
    checkSeed(seed, 'SeedStream');
    this.#root = seed;
  }

  /** The next seed of the stream (a safe integer ≥ 0, to pass as a dropout mask's seed). */
  next(): number {
    const position = this.#position++;
    return hashSeed(this.#root, [position >>> 0, Math.floor(position / 2 ** 32)]);
  }

  /** How many seeds the stream has given: checkpoints save it, and setting it back replays the same masks. */
  get state(): number {
    return this.#position;
  }

  /** Rewinds or advances the stream to `position`; a RangeError unless it is a non-negative safe integer. */
  set state(position: number) {
    if (!Number.isSafeInteger(position) || position < 0) {
      throw new RangeError(`SeedStream: state must be a non-negative integer, got ${position}`);
    }
    this.#position = position;
  }
}
