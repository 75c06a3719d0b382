// `bidora sweep`: the paired statistics it reports (a signed-rank p-value checked against hand-enumerated null
// distributions, the hypergradient ratio, the pairing with the DoRA baseline), its cell syntax, and a small sweep end
// to end on a task registered here the way a new task is added.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import * as adapters from '../lib/adapters/index';
import { fromConfig } from '../lib/models/index';
import { type EncoderTaskModel } from '../lib/models/encoder';
import { Random } from '../lib/random';
import {
  BASE_SETTINGS,
  bilevelOptions,
  mapCells,
  parseCell,
  readRuns,
  type RunRecord,
  secondOrderRatio,
  summarize,
  sweepCommand,
} from '../lib/cli/sweep';
import { SWEEP_TASKS } from '../lib/cli/sweep-tasks';
import { wilcoxonSignedRank } from '../lib/train/stats';
import { tinyBertConfig } from './fixtures/tiny-bert';

const root = mkdtempSync(join(tmpdir(), 'bidora-sweep-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('the exact signed-rank p-value, against null distributions enumerated by hand', () => {
  it('n = 5, W+ = 12: 5 of the 32 sign patterns give W+ ≤ 3, so p = 10/32', () => {
    // |d| ranks: 0.5 → 1, 1 → 2, 1.5 → 3, 2 → 4, 3 → 5; positive ranks 3 + 4 + 5 = 12, negative 1 + 2 = 3.
    // Subsets of {1..5} with sum ≤ 3: {}, {1}, {2}, {3}, {1,2}: P(W+ ≤ 3) = 5/32, two-sided 10/32.
    const result = wilcoxonSignedRank([1.5, -0.5, 2, 3, -1]);
    expect(result).toEqual({ statistic: 3, pValue: 10 / 32, n: 5, method: 'exact' });
  });

  it('five differences of one sign: 2/32, the smallest p five seeds can give', () => {
    expect(wilcoxonSignedRank([-0.01, -0.03, -0.02, -0.05, -0.04]).pValue).toBe(2 / 32);
    expect(wilcoxonSignedRank([0.01, 0.03, 0.02, 0.05, 0.04, 0.06]).pValue).toBe(2 / 64);
  });

  it('n = 6, W− = 2 (rank 2 negative): subsets with sum ≤ 2 are {}, {1}, {2}, so p = 6/64', () => {
    expect(wilcoxonSignedRank([0.1, -0.2, 0.3, 0.4, 0.5, 0.6]).pValue).toBe(6 / 64);
  });

  it('a zero difference is dropped before ranking', () => {
    expect(wilcoxonSignedRank([0, 1.5, -0.5, 2, 3, -1])).toEqual(wilcoxonSignedRank([1.5, -0.5, 2, 3, -1]));
  });
});

describe('the figures of a run', () => {
  it('secondOrderRatio: mean second-order norm over mean direct norm, on upper steps only', () => {
    const history = [
      { step: 1, loss: 1, lr: 1, directNorm: 2, secondOrderNorm: 10 },
      { step: 2, loss: 1, lr: 1 },
      { step: 3, loss: 1, lr: 1, directNorm: 4, secondOrderNorm: 2 },
    ];
    expect(secondOrderRatio(history)).toBeCloseTo(6 / 3, 12);
    expect(secondOrderRatio([{ step: 1, loss: 1, lr: 1 }])).toBeNaN();
  });

  it("bilevelOptions: factors of the task's learning rate, epochs over the lower split or DoRA's step count", () => {
    const task = { epochs: 4, batchSize: 10 };
    // 100 examples: 20 in the upper split, 80 in the lower: 8 steps per epoch; DoRA: 10.
    const base = bilevelOptions(BASE_SETTINGS, 2e-3, task, 100);
    expect(base).toMatchObject({
      lowerOptimizer: { lr: 2e-3 },
      upperOptimizer: { lr: 2e-3 },
      maxSteps: 32,
      retrain: false,
    });
    const steps = bilevelOptions({ ...BASE_SETTINGS, lower: 3, steps: 'dora', retrain: true }, 2e-3, task, 100);
    expect(steps).toMatchObject({ lowerOptimizer: { lr: 6e-3 }, maxSteps: 40, retrain: { maxSteps: 40 } });
    expect(bilevelOptions({ ...BASE_SETTINGS, upperFraction: 0.3 }, 2e-3, task, 100).maxSteps).toBe(28);
  });
});

describe('cells', () => {
  it('the map varies one factor at a time from the base', () => {
    const cells = mapCells();
    for (const cell of cells) {
      if (cell.method !== 'bidora') continue;
      const changed = Object.entries(cell.settings).filter(
        ([key, value]) => BASE_SETTINGS[key as keyof typeof BASE_SETTINGS] !== value,
      );
      expect(changed.length, cell.name).toBeLessThanOrEqual(1);
    }
    expect(new Set(cells.map((cell) => cell.name)).size).toBe(cells.length);
  });

  it('parses name=key:value lists over the base and names what is wrong', () => {
    expect(parseCell('best=lower:3,xi:lower-lr,retrain:on,steps:dora')).toEqual({
      name: 'best',
      method: 'bidora',
      settings: { ...BASE_SETTINGS, lower: 3, xi: 'lower-lr', retrain: true, steps: 'dora' },
    });
    expect(parseCell('slow=dora,lr:0.5')).toEqual({ name: 'slow', method: 'dora', lr: 0.5 });
    expect(() => parseCell('x=xi:2')).toThrow(/xi:1 or xi:lower-lr/);
    expect(() => parseCell('x=upperFraction:1')).toThrow(/in \(0, 1\)/);
    expect(() => parseCell('x=colour:red')).toThrow(/known key/);
    expect(() => parseCell('nameless')).toThrow(/name=key:value/);
  });
});

describe('summarize', () => {
  const run = (cell: string, method: 'dora' | 'bidora', seed: number, test: number, validation: number): RunRecord => ({
    task: 't',
    cell,
    seed,
    method,
    lr: 1e-3,
    validationAccuracy: validation,
    testAccuracy: test,
    steps: 10,
    seconds: 1,
    slope: 0,
    deltaMagnitude: 0,
    deltaDirection: 0,
    ...(method === 'bidora' ? { secondOrderRatio: seed + 1 } : {}),
  });

  it('pairs every cell with the DoRA cell of best validation accuracy, seed by seed', () => {
    const records = [
      ...[0.5, 0.6, 0.7].map((test, seed) => run('dora', 'dora', seed, test, 0.8)),
      ...[0.1, 0.1, 0.1].map((test, seed) => run('dora lr×3', 'dora', seed, test, 0.2)),
      // Seeds out of order and one without a DoRA partner.
      run('b', 'bidora', 2, 0.75, 0.8),
      run('b', 'bidora', 0, 0.45, 0.7),
      run('b', 'bidora', 1, 0.62, 0.9),
      run('b', 'bidora', 7, 0.99, 0.9),
    ];
    const { baselines, cells } = summarize(records);
    expect(baselines).toEqual({ t: 'dora' });
    const b = cells.find((cell) => cell.cell === 'b')!;
    expect(b.seeds).toEqual([0, 1, 2]);
    expect(b.testDifferences.map((value) => Number(value.toFixed(6)))).toEqual([-0.05, 0.02, 0.05]);
    expect(b.validationDifferences.map((value) => Number(value.toFixed(6)))).toEqual([-0.1, 0.1, 0]);
    expect(b.secondOrderRatio).toBe(2.5); // the median of 1, 2, 3, 8
  });
});

describe('bidora sweep end to end', () => {
  it('runs the cells over paired seeds on a registered task, resumes, and writes the table and the chart', async () => {
    const random = new Random(11);
    // A task in a few lines: class = the parity of the number of 5s in a short sequence.
    const examples = (count: number) =>
      Array.from({ length: count }, () => {
        const ids = Array.from({ length: 6 }, () => 4 + random.int(8));
        return { inputIds: [2, ...ids, 3], label: ids.filter((id) => id === 5).length % 2 };
      });
    const validation = examples(24);
    const test = examples(24);
    SWEEP_TASKS.toy = {
      name: 'toy',
      summary: 'toy parity task',
      prepare: () =>
        Promise.resolve({
          trainFor: (seed: number) => examples(16 + seed),
          validation,
          test,
          model: (method, seed) => {
            const model = fromConfig(tinyBertConfig({ num_labels: 2 }), { seed }) as EncoderTaskModel;
            adapters.apply(model, {
              method,
              r: 2,
              alpha: 4,
              targetModules: ['query', 'value'],
              modulesToSave: ['classifier'],
              seed,
            });
            return model;
          },
          epochs: 2,
          batchSize: 8,
          learningRates: [1e-2],
          description: 'toy parity task',
        }),
    };
    const out = join(root, 'toy');
    const args = [
      '--task',
      'toy',
      '--seeds',
      '2',
      '--cells',
      'dora,base',
      '--cell',
      'both=retrain:on,steps:dora',
      '--out',
      out,
    ];
    try {
      await sweepCommand([...args, '--shard', '1/2']);
      expect(readRuns(join(out, 'runs.jsonl'))).toHaveLength(3);
      await sweepCommand(args);
    } finally {
      delete SWEEP_TASKS.toy;
    }
    const runs = readRuns(join(out, 'runs.jsonl'));
    expect(runs).toHaveLength(6);
    expect(new Set(runs.map((record) => `${record.cell}|${record.seed}`)).size).toBe(6);
    const both = runs.filter((record) => record.cell === 'both');
    const dora = runs.filter((record) => record.cell === 'dora');
    // DoRA's steps: ceil(16 / 8) · 2 = 4 for seed 0; the search takes as many, and the retraining as many again.
    expect(dora.find((record) => record.seed === 0)!.steps).toBe(4);
    expect(both.find((record) => record.seed === 0)!.steps).toBe(8);
    for (const record of runs) {
      expect(record.testAccuracy).toBeGreaterThanOrEqual(0);
      expect(Number.isFinite(record.slope)).toBe(true);
      if (record.method === 'bidora') expect(record.secondOrderRatio).toBeGreaterThan(0);
    }
    const table = readFileSync(join(out, 'sweep.md'), 'utf8');
    expect(table).toContain('| 2 | base |');
    expect(table).toContain('| 3 | both |');
    const png = readFileSync(join(out, 'sweep.png'));
    expect([...png.subarray(1, 4)].map((code) => String.fromCharCode(code)).join('')).toBe('PNG');
    expect(readFileSync(join(out, 'sweep.svg'), 'utf8')).toContain('<svg');
    const json = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')) as { cells: { cell: string }[] };
    expect(json.cells.map((cell) => cell.cell)).toEqual(['dora', 'base', 'both']);
  }, 120_000);
});
