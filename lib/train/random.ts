// A seeded random generator (xoshiro128**) whose whole state is four 32-bit words, so checkpoints can save it exactly.
//
// xoshiro128** (Blackman and Vigna, 2018) passes BigCrush, needs only 32-bit integer arithmetic (Math.imul and shifts
// stay exact in JavaScript numbers) and has a period of 2^128 − 1. Seeds are spread over the state by SplitMix32, so
// nearby seeds (0, 1, 2, ...) still start far apart and the state is never all zeros.

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
