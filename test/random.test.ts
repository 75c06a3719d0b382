// The one source of randomness: seeds derived by hashing (root seed, dotted name), seed streams that replay from
// their position, models whose parameters are seeded by their names (no two seeds share a weight), and no
// Math.random in library code.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { adapters, deriveSeed, freshSeed, models, SeedScope, SeedStream } from '../lib/index';
import { tinyBertConfig } from './fixtures/tiny-bert';

/** How many of the 53 bits differ between two seeds. */
function bitsApart(a: number, b: number): number {
  let count = 0;
  for (let bit = 0; bit < 53; bit++) {
    if (Math.floor(a / 2 ** bit) % 2 !== Math.floor(b / 2 ** bit) % 2) count++;
  }
  return count;
}

describe('deriveSeed', () => {
  it('is a function of (seed, name) alone, in [0, 2^53), and names or roots a step apart give unrelated seeds', () => {
    expect(deriveSeed(0, 'bert.encoder.layer.0.attention.self.query.weight')).toBe(
      deriveSeed(0, 'bert.encoder.layer.0.attention.self.query.weight'),
    );
    const seen = new Set<number>();
    const distances: number[] = [];
    for (let root = 0; root < 64; root++) {
      for (const name of ['query.weight', 'key.weight', 'value.weight', 'layer.1', 'layer.10', '', 'a', 'b']) {
        const seed = deriveSeed(root, name);
        expect(Number.isSafeInteger(seed) && seed >= 0).toBe(true);
        seen.add(seed);
        distances.push(bitsApart(seed, deriveSeed(root + 1, name)));
      }
    }
    expect(seen.size).toBe(64 * 8);
    // Avalanche: a root one apart flips about half of the 53 bits on average.
    const mean = distances.reduce((sum, distance) => sum + distance, 0) / distances.length;
    expect(mean).toBeGreaterThan(22);
    expect(mean).toBeLessThan(31);
    expect(deriveSeed(2 ** 40 + 5, 'x')).not.toBe(deriveSeed(5, 'x'));
    expect(() => deriveSeed(-1, 'x')).toThrow(/deriveSeed: seed must be an integer in \[0, 2\^53\)/);
    expect(() => deriveSeed(0.5, 'x')).toThrow(RangeError);
  });

  it('SeedScope joins dotted paths: scope.child(a).seed(b) is deriveSeed(root, "a.b")', () => {
    const scope = new SeedScope(7).child('bert').child('encoder');
    expect(scope.seed('layer.0')).toBe(deriveSeed(7, 'bert.encoder.layer.0'));
    expect(new SeedScope(7).seed('classifier.weight')).toBe(deriveSeed(7, 'classifier.weight'));
  });

  it('SeedStream gives distinct seeds and replays them from a saved position', () => {
    const stream = new SeedStream(3);
    const first = Array.from({ length: 100 }, () => stream.next());
    expect(new Set(first).size).toBe(100);
    const replay = new SeedStream(3);
    replay.state = 40;
    expect(replay.next()).toBe(first[40]);
    expect(new SeedStream(4).next()).not.toBe(first[0]);
    expect(() => (replay.state = -1)).toThrow(RangeError);
  });

  it('freshSeed draws from the system entropy: distinct, in range', () => {
    const seeds = Array.from({ length: 32 }, freshSeed);
    expect(new Set(seeds).size).toBe(32);
    expect(seeds.every((seed) => Number.isSafeInteger(seed) && seed >= 0)).toBe(true);
  });
});

describe('models seeded by parameter names', () => {
  /** The randomly initialised tensors (weights and embeddings) of a model built with `seed`, by name. */
  function randomTensors(seed: number): Map<string, Float32Array> {
    const model = models.fromConfig(tinyBertConfig(), { seed });
    adapters.apply(model, { method: 'dora', r: 2, targetModules: ['query', 'key', 'value'], seed });
    const tensors = new Map(
      model
        .namedParameters()
        .filter(([name]) => /(weight|embeddings\.weight|loraA)$/.test(name) && !name.includes('LayerNorm'))
        .map(([name, tensor]) => [name, tensor.toFloat32Array()]),
    );
    model.dispose();
    return tensors;
  }

  it('seeds 0 and 1 share no parameter values; one seed gives the same bits', () => {
    const zero = randomTensors(0);
    const one = randomTensors(1);
    expect([...randomTensors(0)]).toEqual([...zero]);
    const all = [
      ...[...zero].map(([name, values]) => [`0:${name}`, values] as const),
      ...[...one].map(([n, v]) => [`1:${n}`, v] as const),
    ];
    // No tensor starts like another, within a model or across the two (the old seed + offset scheme made seed 1's
    // layer-0 query equal to seed 0's layer-0 key).
    const starts = new Map<string, string>();
    for (const [name, values] of all) {
      const key = Array.from(values.subarray(0, 16)).join(',');
      expect(starts.get(key), `${name} starts as ${starts.get(key)} does`).toBeUndefined();
      starts.set(key, name);
    }
    // And no value at all is shared between the same parameter of the two seeds.
    for (const [name, values] of zero) {
      const other = new Set(one.get(name));
      expect(
        values.some((value) => other.has(value)),
        name,
      ).toBe(false);
    }
  });
});

describe('library code', () => {
  it('never calls Math.random (every draw is seeded, or drawn from the system entropy by freshSeed)', () => {
    const offenders: string[] = [];
    const visit = (dir: string): void => {
      for (const entry of readdirSync(dir)) {
        const path = join(dir, entry);
        if (statSync(path).isDirectory()) visit(path);
        else if (path.endsWith('.ts') && /Math\.random\s*\(/.test(readFileSync(path, 'utf8'))) offenders.push(path);
      }
    };
    visit(join(__dirname, '..', 'lib'));
    expect(offenders).toEqual([]);
  });
});
