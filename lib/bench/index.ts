// Layer microbenchmarks, shared by `bidora bench` and the repository's bench/dora.mjs: the variants timed side by side in
// rounds, each ratio taken within a round, and a table of the results.
import { type Device, native } from '../binding';
import { Tensor } from '../tensor';
import {
  checkShape,
  DEFAULT_SHAPES,
  disposeLayer,
  LAYER_SETTINGS,
  LAYER_VARIANTS,
  type LayerSetting,
  type LayerShape,
  type LayerVariant,
  layerVariants,
  makeLayer,
} from './layer';
import { median, timeInterleaved } from './timing';

export * from './layer';
export { median, timeCall, timeInterleaved, type TimingOptions } from './timing';

/** The ratios reported, each as [numerator, denominator]. */
export const LAYER_RATIOS = {
  doraOverLora: ['dora', 'lora'],
  doraThroughNormOverLora: ['doraThroughNorm', 'lora'],
  naiveOverDora: ['naiveDora', 'dora'],
} as const satisfies Record<string, readonly [LayerVariant, LayerVariant]>;
export type LayerRatio = keyof typeof LAYER_RATIOS;

export interface LayerBenchOptions {
  shapes?: readonly LayerShape[];
  settings?: readonly LayerSetting[];
  device?: Device;
  /** Caps the kernels' threads for the run, restored after; the whole pool when absent. */
  threads?: number;
  /** Fewer and shorter rounds: a smoke run, ratios within ±10% or so. */
  quick?: boolean;
  /** Rounds of all the variants side by side; 3 when quick, else 5. */
  rounds?: number;
  /** Called with each row as soon as it is measured, for progress. */
  onRow?: (row: LayerBenchRow) => void;
}

export interface LayerBenchRow extends LayerShape {
  setting: string;
  inputGradient: boolean;
  device: Device;
  threads: number;
  rounds: number;
  /** Median milliseconds per call over the rounds. */
  loraMs: number;
  doraMs: number;
  doraThroughNormMs: number;
  naiveDoraMs: number;
  /** Medians of the ratios within each round. */
  doraOverLora: number;
  doraThroughNormOverLora: number;
  naiveOverDora: number;
  /** Milliseconds per call of each variant, one entry per round. */
  roundMs: Record<LayerVariant, number>[];
  /** Each ratio within each round. */
  roundRatios: Record<LayerRatio, number[]>;
}

/**
 * Times every variant on every shape and setting. Absolute times drift on a shared machine from one second to the
 * next, so the variants run interleaved within each round (see `timeInterleaved`) and each ratio is taken within a
 * round before the median over rounds; the spread over rounds says how far to trust it.
 */
export function benchLayers(options: LayerBenchOptions = {}): LayerBenchRow[] {
  const shapes = options.shapes ?? DEFAULT_SHAPES;
  const settings = options.settings ?? LAYER_SETTINGS;
  const device = options.device ?? 'cpu';
  const quick = options.quick ?? false;
  const rounds = options.rounds ?? (quick ? 3 : 5);
  if (!Array.isArray(shapes) || shapes.length === 0)
    throw new TypeError('benchLayers: shapes must be a non-empty array');
  shapes.forEach((shape, index) => checkShape(shape, `shapes[${index}]`));
  if (!Number.isInteger(rounds) || rounds < 1) {
    throw new RangeError(`benchLayers: rounds must be a positive integer, got ${rounds}`);
  }
  if (!native.devices().includes(device)) {
    throw new RangeError(`benchLayers: device '${device}' is not available here (${native.devices().join(', ')})`);
  }
  const threads = options.threads ?? native.buildInfo().poolThreads;
  const previousThreads = native.setNumThreads(threads);
  try {
    const rows: LayerBenchRow[] = [];
    for (const setting of settings) {
      for (const shape of shapes) {
        const row = benchShape(shape, setting, { device, quick, rounds, threads });
        options.onRow?.(row);
        rows.push(row);
      }
    }
    return rows;
  } finally {
    native.setNumThreads(previousThreads);
  }
}

function benchShape(
  shape: LayerShape,
  setting: LayerSetting,
  run: { device: Device; quick: boolean; rounds: number; threads: number },
): LayerBenchRow {
  const layer = makeLayer(shape, run.device);
  // Kernels on a GPU only queue work: reading one value back waits for everything queued before it.
  const marker = run.device === 'cpu' ? undefined : Tensor.zeros([1], { device: run.device });
  const sync = marker && ((): void => void marker.toFloat32Array());
  const timing = { minSeconds: run.quick ? 0.1 : 0.5, minSamples: run.quick ? 3 : 5, sync };
  const variants = layerVariants(layer, setting);
  const roundMs: Record<LayerVariant, number>[] = [];
  try {
    for (let round = 0; round < run.rounds; round++) {
      const seconds = timeInterleaved(variants, timing);
      roundMs.push(
        Object.fromEntries(LAYER_VARIANTS.map((name) => [name, seconds[name] * 1e3])) as Record<LayerVariant, number>,
      );
    }
  } finally {
    marker?.dispose();
    disposeLayer(layer);
  }
  const ms = (name: LayerVariant): number => median(roundMs.map((times) => times[name]));
  const roundRatios = Object.fromEntries(
    Object.entries(LAYER_RATIOS).map(([ratio, [over, under]]) => [ratio, roundMs.map((t) => t[over] / t[under])]),
  ) as Record<LayerRatio, number[]>;
  return {
    ...shape,
    setting: setting.name,
    inputGradient: setting.inputGradient,
    device: run.device,
    threads: run.threads,
    rounds: run.rounds,
    loraMs: ms('lora'),
    doraMs: ms('dora'),
    doraThroughNormMs: ms('doraThroughNorm'),
    naiveDoraMs: ms('naiveDora'),
    doraOverLora: median(roundRatios.doraOverLora),
    doraThroughNormOverLora: median(roundRatios.doraThroughNormOverLora),
    naiveOverDora: median(roundRatios.naiveOverDora),
    roundMs,
    roundRatios,
  };
}

const COLUMNS: [header: string, cell: (row: LayerBenchRow) => string][] = [
  ['N, K, M, r', (row) => `${row.n}, ${row.k}, ${row.m}, ${row.r}`],
  ['setting', (row) => row.setting],
  ['LoRA ms', (row) => milliseconds(row.loraMs)],
  ['DoRA ms', (row) => milliseconds(row.doraMs)],
  ['DoRA/LoRA', (row) => ratio(row.doraOverLora, row.roundRatios.doraOverLora)],
  ['through norm ms', (row) => milliseconds(row.doraThroughNormMs)],
  ['through/LoRA', (row) => ratio(row.doraThroughNormOverLora, row.roundRatios.doraThroughNormOverLora)],
  ['naive DoRA ms', (row) => milliseconds(row.naiveDoraMs)],
  ['naive/DoRA', (row) => ratio(row.naiveOverDora, row.roundRatios.naiveOverDora)],
];

/** The rows as a plain-text table; each ratio is its median with the range over the rounds in brackets. */
export function formatLayerTable(rows: readonly LayerBenchRow[]): string {
  const cells = [COLUMNS.map(([header]) => header), ...rows.map((row) => COLUMNS.map(([, cell]) => cell(row)))];
  const widths = COLUMNS.map((_, column) => Math.max(...cells.map((line) => line[column].length)));
  // Text columns align left, numbers right.
  const line = (values: string[]): string =>
    values
      .map((value, column) => (column < 2 ? value.padEnd(widths[column]) : value.padStart(widths[column])))
      .join('  ')
      .trimEnd();
  return [line(cells[0]), widths.map((width) => '-'.repeat(width)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

function milliseconds(value: number): string {
  return value >= 100 ? value.toFixed(1) : value >= 1 ? value.toFixed(2) : value.toFixed(3);
}

function ratio(middle: number, rounds: readonly number[]): string {
  if (rounds.length < 2) return middle.toFixed(2);
  return `${middle.toFixed(2)} (${Math.min(...rounds).toFixed(2)}–${Math.max(...rounds).toFixed(2)})`;
}
