// The layer microbenchmarks' own correctness (not their speed): the naive DoRA and the fused variants free what they
// make, benchLayers returns what it promises and restores the thread cap, the timing loop checks its arguments.
import { describe, expect, it } from 'vitest';

import {
  benchLayers,
  disposeLayer,
  formatLayerTable,
  LAYER_SETTINGS,
  LAYER_VARIANTS,
  layerVariants,
  makeLayer,
  median,
  timeCall,
  timeInterleaved,
} from '../lib/bench/index';
import { memory, setNumThreads } from '../lib/index';

describe('layer variants', () => {
  it('run forward + backward in both settings and leave no live tensor behind', () => {
    const before = memory().tensors;
    const layer = makeLayer({ n: 9, k: 13, m: 11, r: 3 });
    for (const setting of LAYER_SETTINGS) {
      const variants = layerVariants(layer, setting);
      for (const name of LAYER_VARIANTS) {
        variants[name]();
        expect(memory().tensors - before, `${name}, ${setting.name}`).toBe(7);
      }
    }
    disposeLayer(layer);
    expect(memory().tensors).toBe(before);
  });

  it('refuse shapes that are not four positive integers, naming the field', () => {
    expect(() => makeLayer({ n: 4, k: 0, m: 4, r: 1 })).toThrow(/shape\.k must be a positive integer/);
    expect(() => benchLayers({ shapes: [{ n: 4, k: 4, m: 4.5, r: 1 }] })).toThrow(RangeError);
    expect(() => benchLayers({ shapes: [] })).toThrow(TypeError);
    expect(() => benchLayers({ rounds: 0 })).toThrow(/rounds must be a positive integer/);
  });
});

describe('benchLayers', () => {
  it('times every variant per round, takes ratios within rounds, and restores the thread cap', () => {
    const cap = setNumThreads(2);
    const seen: string[] = [];
    const rows = benchLayers({
      shapes: [{ n: 16, k: 24, m: 20, r: 2 }],
      threads: 1,
      quick: true,
      rounds: 2,
      onRow: (row) => seen.push(row.setting),
    });
    expect(setNumThreads(cap)).toBe(2);
    expect(seen).toEqual(['input is data', 'inner layer']);
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      expect(row).toMatchObject({ n: 16, k: 24, m: 20, r: 2, threads: 1, rounds: 2, device: 'cpu' });
      expect(row.roundMs).toHaveLength(2);
      const ratios = row.roundMs.map((times) => times.dora / times.lora);
      expect(row.roundRatios.doraOverLora).toEqual(ratios);
      expect(row.doraOverLora).toBeCloseTo(median(ratios), 12);
      expect(row.naiveDoraMs).toBeGreaterThan(0);
    }
    const table = formatLayerTable(rows).split('\n');
    expect(table).toHaveLength(4);
    expect(table[2]).toMatch(/^16, 24, 20, 2 +input is data +\d/);
  });
});

describe('timing', () => {
  it('takes the median, and refuses bad arguments by name', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
    let calls = 0;
    const seconds = timeCall(() => calls++, { minSeconds: 0, minSamples: 3 });
    expect(seconds).toBeGreaterThan(0);
    expect(calls).toBeGreaterThan(3);
    expect(() => timeCall(() => {}, { minSeconds: -1, minSamples: 1 })).toThrow(/minSeconds/);
    expect(() => timeCall(() => {}, { minSeconds: 0, minSamples: 0 })).toThrow(/minSamples/);
    expect(() => timeInterleaved({}, { minSeconds: 0, minSamples: 1 })).toThrow(TypeError);
  });

  it('samples each function in turn, with its own batch size', () => {
    const order: string[] = [];
    let syncs = 0;
    const times = timeInterleaved(
      { a: () => order.push('a'), b: () => order.push('b') },
      { minSeconds: 0, minSamples: 2, sync: () => syncs++ },
    );
    expect(Object.keys(times)).toEqual(['a', 'b']);
    // A batch or more each to size the batches, then two samples each.
    expect(syncs).toBeGreaterThanOrEqual(2 + 4);
    // Calibration runs a's batches, then b's; the samples go a b, then b a (the order rotates): five runs.
    const runs = order.join('').match(/a+|b+/g) ?? [];
    expect(runs.length).toBeGreaterThanOrEqual(5);
  });
});
