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
  /** What DoRA's fused kernels cost over LoRA's, norm detached (PEFT's default). */
  doraOverLora: ['dora', 'lora'],
  /** The same with the gradient taken through the norm (BiDoRA's `detachNorm: false`). */
  doraThroughNormOverLora: ['doraThroughNorm', 'lora'],
  /** What the fused DoRA saves over DoRA built from separate ops as PEFT does: the speed-up, above 1 when it helps. */
  naiveOverDora: ['naiveDora', 'dora'],
} as const satisfies Record<string, readonly [LayerVariant, LayerVariant]>;
/** The name of a reported ratio: a key of `LAYER_RATIOS`. */
export type LayerRatio = keyof typeof LAYER_RATIOS;

/** What `benchLayers` times, and how long. */
export interface LayerBenchOptions {
  /** The layer shapes; default `DEFAULT_SHAPES`. A RangeError unless each holds four positive integers. */
  shapes?: readonly LayerShape[];
  /** With and without the input gradient; default both (`LAYER_SETTINGS`). */
  settings?: readonly LayerSetting[];
  /** Where the tensors live and the kernels run; default 'cpu'. A RangeError when this build or machine lacks it. */
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

/** One shape under one setting: each variant's time and the ratios between them. */
export interface LayerBenchRow extends LayerShape {
  /** The setting's name, e.g. 'inner layer'. */
  setting: string;
  /** Whether the timed backward computed the input's gradient. */
  inputGradient: boolean;
  /** Where it ran. */
  device: Device;
  /** The kernels' thread cap during the run. */
  threads: number;
  /** Rounds of all the variants side by side that the medians are over. */
  rounds: number;
  /** LoRA's median milliseconds per forward + backward over the rounds. */
  loraMs: number;
  /** Fused DoRA's (norm detached) median milliseconds per forward + backward. */
  doraMs: number;
  /** Fused DoRA's through the norm, median milliseconds per forward + backward. */
  doraThroughNormMs: number;
  /** Naive DoRA's (PEFT's way, from separate ops) median milliseconds per forward + backward. */
  naiveDoraMs: number;
  /** doraMs / loraMs, as the median of the ratio within each round (not the ratio of the medians). */
  doraOverLora: number;
  /** doraThroughNormMs / loraMs, the median of the ratio within each round. */
  doraThroughNormOverLora: number;
  /** naiveDoraMs / doraMs, the median of the ratio within each round: the fused kernels' speed-up. */
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
