// `bidora sweep`: a measured map of BiDoRA's settings against DoRA on a task. Every run trains one model on one
// seed's training sample; DoRA and each BiDoRA setting ("cell") see the same samples, initialisations and data
// orders, so each cell is compared with DoRA seed by seed (paired differences and a Wilcoxon signed-rank test).
// Runs append to `runs.jsonl` in the output folder as they finish, so a sweep resumes where it stopped and several
// processes (`--shard i/n`) can share one folder; every process rewrites the table and chart from all runs so far.
import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import * as adapters from '../adapters/index';
import { writeFileAtomic } from '../io/atomic';
import { type Chart, PALETTE, renderPng, renderSvg, type Series } from '../report/index';
import { native } from '../binding';
import { type BiLevelStep, BiLevelTrainer, type BiLevelTrainerOptions } from '../train/bilevel';
import { evaluate } from '../train/evaluate';
import { type FitResult } from '../train/loop';
import { mean, standardDeviation, wilcoxonSignedRank } from '../train/stats';
import { Trainer } from '../train/trainer';
import { commandOptions, numberOption, type OptionSpec, UsageError } from './args';
import { type PreparedTask, SWEEP_TASKS } from './sweep-tasks';

/**
 * One BiDoRA setting. Learning rates are factors of the task's learning rate (DoRA's, chosen on validation data), so
 * one map serves tasks whose rates differ.
 */
export interface BiDoRASettings {
  /** The lower level's (direction and head) learning rate, as a factor of the task's. */
  lower: number;
  /** The upper level's (magnitudes) learning rate, as a factor of the task's. */
  upper: number;
  /** The factor on the second-order term: 1 or the lower learning rate. */
  xi: 1 | 'lower-lr';
  upperFraction: number;
  hypergradient: 'finite-difference' | 'first-order';
  /** The paper's retraining phase, as many steps as DoRA takes, over the whole training sample. */
  retrain: boolean;
  /** 'epochs': the task's epochs over the lower split; 'dora': as many lower steps as DoRA takes. */
  steps: 'epochs' | 'dora';
  /** AdamW weight decay on the magnitudes (the lower level keeps AdamW's 0.01). */
  upperWeightDecay: number;
}

/** A row of the map: DoRA at a learning-rate factor, or BiDoRA with settings. */
export type Cell =
  { name: string; method: 'dora'; lr: number } | { name: string; method: 'bidora'; settings: BiDoRASettings };

/** The base of the one-factor map: BiLevelTrainer's defaults before the map (at the task's learning rate). */
export const BASE_SETTINGS: BiDoRASettings = {
  lower: 1,
  upper: 1,
  xi: 1,
  upperFraction: 0.2,
  hypergradient: 'finite-difference',
  retrain: false,
  steps: 'epochs',
  upperWeightDecay: 0.01,
};

/**
 * The one-factor-at-a-time map around BASE_SETTINGS, plus DoRA at the task's learning rate and a third each way; in
 * order of what a cut-short sweep should have measured first.
 */
export function mapCells(): Cell[] {
  const vary = (name: string, change: Partial<BiDoRASettings>): Cell => ({
    name,
    method: 'bidora',
    settings: { ...BASE_SETTINGS, ...change },
  });
  return [
    { name: 'dora', method: 'dora', lr: 1 },
    { name: 'dora lr/3', method: 'dora', lr: 1 / 3 },
    { name: 'dora lr×3', method: 'dora', lr: 3 },
    vary('base', {}),
    vary('retrain', { retrain: true }),
    vary("DoRA's steps", { steps: 'dora' }),
    vary('lower lr/3', { lower: 1 / 3 }),
    vary('lower lr×3', { lower: 3 }),
    vary('upper lr/3', { upper: 1 / 3 }),
    vary('upper lr×3', { upper: 3 }),
    vary('xi = lower lr', { xi: 'lower-lr' }),
    vary('upper split 0.1', { upperFraction: 0.1 }),
    vary('upper split 0.3', { upperFraction: 0.3 }),
    vary('first-order', { hypergradient: 'first-order' }),
    vary('upper wd 0', { upperWeightDecay: 0 }),
  ];
}

/**
 * A cell from `name=key:value,...` over BASE_SETTINGS: keys lower, upper (learning-rate factors), xi (1 | lower-lr),
 * upperFraction, hypergradient (finite-difference | first-order), retrain (on | off), steps (epochs | dora),
 * upperWeightDecay; `name=dora,lr:3` is DoRA at a learning-rate factor.
 */
export function parseCell(spec: string): Cell {
  const equals = spec.indexOf('=');
  if (equals <= 0) throw new UsageError(`--cell must be name=key:value,..., got ${JSON.stringify(spec)}`);
  const name = spec.slice(0, equals).trim();
  const parts = spec
    .slice(equals + 1)
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '');
  const bad = (part: string, expected: string) =>
    new UsageError(`--cell ${name}: ${JSON.stringify(part)} is not ${expected}`);
  const number = (part: string, value: string) => {
    const parsed = Number(value);
    if (value === '' || !Number.isFinite(parsed) || parsed < 0) throw bad(part, 'a non-negative number');
    return parsed;
  };
  if (parts[0] === 'dora') {
    let lr = 1;
    for (const part of parts.slice(1)) {
      const [key, value = ''] = part.split(':');
      if (key !== 'lr') throw bad(part, 'lr:<factor>');
      lr = number(part, value);
    }
    return { name, method: 'dora', lr };
  }
  const settings: BiDoRASettings = { ...BASE_SETTINGS };
  for (const part of parts) {
    const [key, value = ''] = part.split(':');
    if (key === 'lower' || key === 'upper' || key === 'upperFraction' || key === 'upperWeightDecay') {
      settings[key] = number(part, value);
    } else if (key === 'xi') {
      if (value !== '1' && value !== 'lower-lr') throw bad(part, 'xi:1 or xi:lower-lr');
      settings.xi = value === '1' ? 1 : 'lower-lr';
    } else if (key === 'hypergradient') {
      if (value !== 'finite-difference' && value !== 'first-order') throw bad(part, 'finite-difference or first-order');
      settings.hypergradient = value;
    } else if (key === 'retrain') {
      if (value !== 'on' && value !== 'off') throw bad(part, 'retrain:on or retrain:off');
      settings.retrain = value === 'on';
    } else if (key === 'steps') {
      if (value !== 'epochs' && value !== 'dora') throw bad(part, 'steps:epochs or steps:dora');
      settings.steps = value;
    } else {
      throw bad(part, 'a known key (lower, upper, xi, upperFraction, hypergradient, retrain, steps, upperWeightDecay)');
    }
  }
  if (!(settings.upperFraction > 0 && settings.upperFraction < 1)) throw bad('upperFraction', 'in (0, 1)');
  return { name, method: 'bidora', settings };
}

/** What one run leaves in runs.jsonl. */
export interface RunRecord {
  task: string;
  cell: string;
  seed: number;
  method: 'dora' | 'bidora';
  /** The absolute learning rate (lower level's for BiDoRA). */
  lr: number;
  settings?: BiDoRASettings;
  validationAccuracy: number;
  testAccuracy: number;
  /** Optimizer steps on the direction: the search's lower steps (plus the retraining's). */
  steps: number;
  seconds: number;
  /**
   * mean ||second-order term|| / mean ||direct term|| over the run's upper steps (0 first-order; absent for DoRA):
   * how much of the hypergradient the finite difference contributes.
   */
  secondOrderRatio?: number;
  /** The ΔM/ΔD slope at the end of the run (see decompositionSlope). */
  slope: number;
  /** Mean over layers of ΔM and of ΔD at the end. */
  deltaMagnitude: number;
  deltaDirection: number;
}

/**
 * mean ||xi·(g+ − g−)/(2ε)|| / mean ||g|| over the steps that updated the magnitudes; NaN without such steps.
 * Means before the ratio, so a few steps with a vanishing direct term do not dominate.
 */
export function secondOrderRatio(history: readonly Partial<BiLevelStep>[]): number {
  const upper = history.filter((record) => record.directNorm !== undefined && Number.isFinite(record.directNorm));
  if (upper.length === 0) return Number.NaN;
  return mean(upper.map((record) => record.secondOrderNorm!)) / mean(upper.map((record) => record.directNorm!));
}

/**
 * The ΔM/ΔD slope of a trained model: per adapted layer, ΔM = mean over output rows of |m − ||W0 row|| | and
 * ΔD = mean over rows of 1 − cos(row of W0 + s·BA, row of W0); the slope is the least-squares slope of ΔM against
 * ΔD over the layers (adapters.analyze). Negative: the layers that turned their directions most moved their
 * magnitudes least, the signature of DoRA and full fine-tuning; positive: both move together, as LoRA's do.
 */
export function decompositionSlope(model: Parameters<typeof adapters.analyze>[0]): {
  slope: number;
  deltaMagnitude: number;
  deltaDirection: number;
} {
  const { layers, slope } = adapters.analyze(model);
  return {
    slope,
    deltaMagnitude: mean(layers.map((layer) => layer.deltaMagnitude)),
    deltaDirection: mean(layers.map((layer) => layer.deltaDirection)),
  };
}

/**
 * The BiLevelTrainer options of `settings` at base learning rate `lr` for `trainSize` training examples, every one
 * explicit so that the map does not move with the trainer's defaults. 'epochs' counts passes over the lower split
 * (splitLowerUpper's size), 'dora' takes DoRA's steps: `epochs` passes over the whole sample.
 */
export function bilevelOptions(
  settings: BiDoRASettings,
  lr: number,
  task: { epochs: number; batchSize: number },
  trainSize: number,
): Omit<BiLevelTrainerOptions, 'model'> {
  const lower = lr * settings.lower;
  const doraSteps = Math.ceil(trainSize / task.batchSize) * task.epochs;
  const upperSize = Math.min(trainSize - 1, Math.max(1, Math.round(trainSize * settings.upperFraction)));
  const lowerSteps = Math.ceil((trainSize - upperSize) / task.batchSize) * task.epochs;
  return {
    lowerOptimizer: { lr: lower },
    upperOptimizer: { lr: lr * settings.upper, weightDecay: settings.upperWeightDecay },
    xi: settings.xi,
    upperFraction: settings.upperFraction,
    hypergradient: settings.hypergradient,
    retrain: settings.retrain ? { maxSteps: doraSteps } : false,
    maxSteps: settings.steps === 'dora' ? doraSteps : lowerSteps,
  };
}

/** Trains one cell on one seed and measures it. */
export async function runCell(
  taskName: string,
  task: PreparedTask,
  baseLr: number,
  cell: Cell,
  seed: number,
): Promise<RunRecord> {
  const started = performance.now();
  const train = task.trainFor(seed);
  const model = task.model(cell.method === 'dora' ? 'dora' : 'bidora', seed);
  try {
    const common = { model, batchSize: task.batchSize, seed, log: 'none' as const };
    let lr: number;
    let result: FitResult & { retrain?: FitResult };
    if (cell.method === 'dora') {
      lr = baseLr * cell.lr;
      const trainer = new Trainer({ ...common, epochs: task.epochs, optimizer: { lr } });
      result = await trainer.fit(train);
      trainer.dispose();
    } else {
      lr = baseLr * cell.settings.lower;
      const trainer = new BiLevelTrainer({ ...common, ...bilevelOptions(cell.settings, baseLr, task, train.length) });
      result = await trainer.fit(train);
      trainer.dispose();
    }
    const decomposition = decompositionSlope(model);
    const record: RunRecord = {
      task: taskName,
      cell: cell.name,
      seed,
      method: cell.method,
      lr,
      ...(cell.method === 'bidora' ? { settings: cell.settings } : {}),
      validationAccuracy: evaluate(model, task.validation).metrics.accuracy,
      testAccuracy: evaluate(model, task.test).metrics.accuracy,
      steps: result.steps + (result.retrain?.steps ?? 0),
      seconds: (performance.now() - started) / 1000,
      ...(cell.method === 'bidora' ? { secondOrderRatio: secondOrderRatio(result.history) } : {}),
      ...decomposition,
    };
    return record;
  } finally {
    model.dispose();
  }
}

/** A paired comparison of one cell with the DoRA baseline on the seeds both have. */
export interface CellSummary {
  task: string;
  cell: string;
  /** The cell's row number, the same in every task's table and on the chart's axis. */
  row: number;
  method: 'dora' | 'bidora';
  seeds: number[];
  testMean: number;
  testStd: number;
  validationMean: number;
  /** Cell − baseline, test accuracy, per seed (fractions). */
  testDifferences: number[];
  testP: number;
  validationDifferences: number[];
  validationP: number;
  /** Median over runs of secondOrderRatio (BiDoRA cells). */
  secondOrderRatio: number;
  slope: number;
  seconds: number;
}

/** Per task: the DoRA cell with the best mean validation accuracy is the baseline every cell is paired with. */
export function summarize(records: readonly RunRecord[]): { baselines: Record<string, string>; cells: CellSummary[] } {
  const baselines: Record<string, string> = {};
  const cells: CellSummary[] = [];
  const tasks = [...new Set(records.map((record) => record.task))];
  // One row order for every task, so that a row number means the same cell in each table and in the chart: the map's
  // cells in its order, then the others as they first appear.
  const mapNames = mapCells().map((cell) => cell.name);
  const measured = new Set(records.map((record) => record.cell));
  const order = [...new Set([...mapNames, ...records.map((record) => record.cell)])].filter((name) =>
    measured.has(name),
  );
  for (const task of tasks) {
    const ofTask = records.filter((record) => record.task === task);
    const present = new Set(ofTask.map((record) => record.cell));
    const names = order.filter((name) => present.has(name));
    const bySeed = (cell: string) =>
      new Map(ofTask.filter((record) => record.cell === cell).map((record) => [record.seed, record]));
    const doraCells = names.filter((name) => ofTask.find((record) => record.cell === name)!.method === 'dora');
    if (doraCells.length === 0) continue;
    const validationOf = (cell: string) => mean([...bySeed(cell).values()].map((run) => run.validationAccuracy));
    const baseline = doraCells.reduce((best, name) => (validationOf(name) > validationOf(best) ? name : best));
    baselines[task] = baseline;
    const base = bySeed(baseline);
    for (const name of names) {
      const runs = bySeed(name);
      const seeds = [...runs.keys()].filter((seed) => base.has(seed)).sort((a, b) => a - b);
      const paired = seeds.map((seed) => [runs.get(seed)!, base.get(seed)!] as const);
      const testDifferences = paired.map(([run, dora]) => run.testAccuracy - dora.testAccuracy);
      const validationDifferences = paired.map(([run, dora]) => run.validationAccuracy - dora.validationAccuracy);
      const all = [...runs.values()];
      const ratios = all.map((run) => run.secondOrderRatio).filter((ratio) => ratio !== undefined);
      cells.push({
        task,
        cell: name,
        row: order.indexOf(name) + 1,
        method: all[0].method,
        seeds,
        testMean: mean(all.map((run) => run.testAccuracy)),
        testStd: standardDeviation(all.map((run) => run.testAccuracy)),
        validationMean: mean(all.map((run) => run.validationAccuracy)),
        testDifferences,
        testP: pValue(testDifferences),
        validationDifferences,
        validationP: pValue(validationDifferences),
        secondOrderRatio: median(ratios),
        slope: mean(all.map((run) => run.slope)),
        seconds: mean(all.map((run) => run.seconds)),
      });
    }
  }
  return { baselines, cells };
}

function pValue(differences: number[]): number {
  return differences.some((difference) => difference !== 0) ? wilcoxonSignedRank(differences).pValue : Number.NaN;
}

function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

const points = (value: number) => (Number.isFinite(value) ? (100 * value).toFixed(1) : '–');
const signed = (value: number) =>
  Number.isFinite(value) ? `${value >= 0 ? '+' : '−'}${points(Math.abs(value))}` : '–';
const figure = (value: number, digits = 3) => (Number.isFinite(value) ? value.toPrecision(digits) : '–');

/** The map as a markdown table: one row per cell, the baseline's row first. */
export function markdownTable(summary: ReturnType<typeof summarize>, descriptions: Record<string, string>): string {
  const lines: string[] = [];
  for (const [task, baseline] of Object.entries(summary.baselines)) {
    const cells = summary.cells.filter((cell) => cell.task === task);
    lines.push(
      `### ${task}`,
      '',
      `${descriptions[task] ?? task}. Baseline: \`${baseline}\` (the DoRA cell with the best validation accuracy). ` +
        'Δ: cell − baseline in accuracy points on the same seed; p: two-sided Wilcoxon signed-rank (exact).',
      '',
      '| # | cell | test acc % | Δ test per seed | mean Δ test | p (test) | mean Δ val | p (val) | 2nd/direct | ΔM/ΔD slope | s/run |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
    );
    cells.forEach((cell) => {
      lines.push(
        `| ${cell.row} | ${cell.cell} | ${points(cell.testMean)} ± ${points(cell.testStd)} | ` +
          `${cell.cell === baseline ? '' : cell.testDifferences.map(signed).join(', ')} | ` +
          `${cell.cell === baseline ? '' : signed(mean(cell.testDifferences))} | ${cell.cell === baseline ? '' : figure(cell.testP, 2)} | ` +
          `${cell.cell === baseline ? '' : signed(mean(cell.validationDifferences))} | ${cell.cell === baseline ? '' : figure(cell.validationP, 2)} | ` +
          `${cell.method === 'dora' ? '' : figure(cell.secondOrderRatio)} | ${figure(cell.slope)} | ${cell.seconds.toFixed(0)} |`,
      );
    });
    lines.push('');
  }
  return lines.join('\n');
}

/** Per task, every seed's test difference (points) and the cell's mean, over the cells' row numbers. */
export function mapChart(summary: ReturnType<typeof summarize>): Chart {
  const series: Series[] = [];
  Object.keys(summary.baselines).forEach((task, index) => {
    const cells = summary.cells.filter((cell) => cell.task === task);
    const color = PALETTE[index % PALETTE.length];
    series.push({
      name: `${task}: per seed`,
      color,
      style: 'points',
      points: cells.flatMap((cell) => cell.testDifferences.map((value) => ({ x: cell.row, y: 100 * value }))),
    });
    series.push({
      name: `${task}: mean`,
      color,
      style: 'line+points',
      points: cells.map((cell) => ({ x: cell.row, y: 100 * mean(cell.testDifferences) })),
    });
  });
  return {
    title: 'Test accuracy, cell − DoRA per seed',
    xLabel: 'cell (row # of the table)',
    yLabel: 'accuracy points',
    series,
    width: 720,
    height: 420,
  };
}

const sweepOptions: Record<string, OptionSpec> = {
  task: { type: 'string', description: `task: ${Object.keys(SWEEP_TASKS).join(' | ')}`, multiple: true },
  seeds: { type: 'string', description: 'paired seeds per cell', default: '5' },
  cells: {
    type: 'string',
    description: "'map' (the one-factor map), 'none', or a comma list of the map's cell names",
    default: 'map',
  },
  cell: { type: 'string', description: 'an extra cell: name=key:value,... (see docs/bidora-map.md)', multiple: true },
  lr: { type: 'string', description: "the task's learning rate (default: the task's own)" },
  out: {
    type: 'string',
    description: 'output folder (runs.jsonl, sweep.json, sweep.md, sweep.png, sweep.svg)',
    default: 'bidora-sweep',
  },
  claim: {
    type: 'boolean',
    description: 'take runs first come, first served with other --claim processes on the same --out (a claims/ folder)',
  },
  shard: {
    type: 'string',
    description: 'i/n: run every n-th run from the i-th (0-based), to share the sweep between processes',
  },
  threads: { type: 'string', description: 'native threads of this process', default: '1' },
  quick: { type: 'boolean', description: 'the tasks’ small configurations (for a first look and the tests)' },
  'report-only': { type: 'boolean', description: 'write the table and chart from runs.jsonl without running' },
  cache: {
    type: 'string',
    description: 'where pretrained encoders and data are kept (BIDORA_CACHE or ~/.cache/bidora)',
  },
};

/** The task learning rates the map is centred on: DoRA's chosen on validation data by the demo and the example. */
export const TASK_LEARNING_RATES: Record<string, number> = { demo: 3e-3, spam: 5e-3 };

export async function sweepCommand(argv: string[]): Promise<void> {
  const values = commandOptions(
    'sweep',
    'Run DoRA and BiDoRA settings over paired seeds on a task; write a table, a chart and the runs.',
    argv,
    sweepOptions,
  );
  if (values === undefined) return;
  const out = values.out as string;
  const runsFile = join(out, 'runs.jsonl');
  const tasks = (values.task as string[] | undefined) ?? [];
  for (const task of tasks) {
    if (!(task in SWEEP_TASKS)) throw new UsageError(`--task must be one of ${Object.keys(SWEEP_TASKS).join(', ')}`);
  }
  if (!values['report-only'] && tasks.length === 0) throw new UsageError('--task is required (or --report-only)');
  mkdirSync(out, { recursive: true });
  if (!values['report-only']) {
    native.setNumThreads(numberOption(values, 'threads') ?? 1);
    const seeds = numberOption(values, 'seeds') ?? 5;
    if (!Number.isInteger(seeds) || seeds < 1) throw new UsageError('--seeds must be a positive integer');
    const [shardIndex, shardCount] = parseShard(values.shard as string | undefined);
    const cells = chooseCells(values.cells as string, (values.cell as string[] | undefined) ?? []);
    const done = new Set(readRuns(runsFile).map((run) => `${run.task}|${run.cell}|${run.seed}`));
    const cacheRoot =
      (values.cache as string | undefined) ??
      process.env.BIDORA_CACHE ??
      join(process.env.HOME ?? '.', '.cache', 'bidora');
    // Seed-major within each cell, DoRA cells first, so a partial sweep already pairs whole cells.
    const plan = tasks.flatMap((task) => cells.flatMap((cell) => range(seeds).map((seed) => ({ task, cell, seed }))));
    const mine = plan.filter((_, index) => index % shardCount === shardIndex);
    const prepared = new Map<string, PreparedTask>();
    for (const [index, { task, cell, seed }] of mine.entries()) {
      if (done.has(`${task}|${cell.name}|${seed}`)) continue;
      if (values.claim && !claim(out, `${task}|${cell.name}|${seed}`)) continue;
      if (!prepared.has(task)) {
        prepared.set(task, await SWEEP_TASKS[task].prepare({ cacheRoot, quick: values.quick === true }));
      }
      const lr = numberOption(values, 'lr') ?? (values.quick ? 3e-3 : (TASK_LEARNING_RATES[task] ?? 1e-3));
      const record = await runCell(task, prepared.get(task)!, lr, cell, seed);
      appendFileSync(runsFile, JSON.stringify(record) + '\n');
      process.stderr.write(
        `[${index + 1}/${mine.length}] ${task} ${cell.name} seed ${seed}: validation ${points(record.validationAccuracy)}, ` +
          `test ${points(record.testAccuracy)} (${record.seconds.toFixed(0)} s)\n`,
      );
      writeSummary(out, readRuns(runsFile), prepared);
    }
  }
  const files = writeSummary(out, readRuns(runsFile), new Map());
  process.stdout.write(`${readFileSync(files.markdown, 'utf8')}\nwrote ${Object.values(files).join(', ')}\n`);
}

/**
 * Claims a run for this process by creating its file exclusively (atomic on a local file system): false when another
 * process has. A claimed run that never finished stays claimed: delete `claims/` to give its runs out again.
 */
function claim(out: string, key: string): boolean {
  const dir = join(out, 'claims');
  mkdirSync(dir, { recursive: true });
  try {
    closeSync(openSync(join(dir, encodeURIComponent(key)), 'wx'));
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
}

function range(count: number): number[] {
  return Array.from({ length: count }, (_, index) => index);
}

function parseShard(shard: string | undefined): [number, number] {
  if (shard === undefined) return [0, 1];
  const match = /^(\d+)\/(\d+)$/.exec(shard);
  const index = Number(match?.[1]);
  const count = Number(match?.[2]);
  if (!match || count < 1 || index >= count) throw new UsageError(`--shard must be i/n with 0 <= i < n, got ${shard}`);
  return [index, count];
}

function chooseCells(list: string, extra: string[]): Cell[] {
  const map = mapCells();
  let cells: Cell[];
  if (list === 'map') cells = map;
  else if (list === 'none') cells = [];
  else {
    cells = list.split(',').map((name) => {
      const cell = map.find((candidate) => candidate.name === name.trim());
      if (cell === undefined) throw new UsageError(`--cells: no cell named ${JSON.stringify(name)} in the map`);
      return cell;
    });
  }
  cells = [...cells, ...extra.map(parseCell)];
  if (cells.length === 0) throw new UsageError('no cells to run (--cells none and no --cell)');
  // DoRA first: the baselines pair with every other cell.
  return [...cells.filter((cell) => cell.method === 'dora'), ...cells.filter((cell) => cell.method !== 'dora')];
}

export function readRuns(file: string): RunRecord[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as RunRecord);
}

function writeSummary(
  out: string,
  runs: RunRecord[],
  prepared: Map<string, PreparedTask>,
): { json: string; markdown: string; png: string; svg: string } {
  const summary = summarize(runs);
  const descriptions = {
    ...Object.fromEntries(Object.entries(SWEEP_TASKS).map(([name, task]) => [name, task.summary])),
    ...Object.fromEntries([...prepared].map(([name, task]) => [name, task.description])),
  };
  const files = {
    json: join(out, 'sweep.json'),
    markdown: join(out, 'sweep.md'),
    png: join(out, 'sweep.png'),
    svg: join(out, 'sweep.svg'),
  };
  writeFileAtomic(files.json, JSON.stringify({ ...summary, runs }, null, 2) + '\n');
  writeFileAtomic(files.markdown, markdownTable(summary, descriptions));
  if (summary.cells.length > 0) {
    const chart = mapChart(summary);
    writeFileAtomic(files.svg, renderSvg(chart));
    writeFileAtomic(files.png, renderPng(chart));
  }
  return files;
}
