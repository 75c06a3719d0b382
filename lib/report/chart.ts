// The chart model both renderers draw from: series, fitted lines, the palette, nice axis ticks and least squares.

/** One curve or point cloud. Points with a non-finite coordinate leave a gap in a line and are otherwise skipped. */
export interface Series {
  name: string;
  points: { x: number; y: number }[];
  /** '#rgb' or '#rrggbb'; the palette's next colour when absent. */
  color?: string;
  /** 'line' when absent. */
  style?: 'line' | 'points' | 'line+points';
  /** A shaded band around the series, e.g. mean ± std across seeds; drawn under every line. */
  band?: { x: number; low: number; high: number }[];
}

/** A least-squares line drawn dashed from `xFrom` to `xTo`, with its slope in the legend. */
export interface Fit {
  name: string;
  slope: number;
  intercept: number;
  xFrom: number;
  xTo: number;
  /** The colour of the series with the same name when absent, else the palette's next colour. */
  color?: string;
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** In chart units: SVG user units, PNG pixels at scale 1. 640 × 400 when absent. */
  width?: number;
  height?: number;
  fits?: Fit[];
}

/** Okabe and Ito's colour-blind-safe palette, yellow left last because it is faint on white. */
export const PALETTE: readonly string[] = [
  '#0072b2', // blue
  '#e69f00', // orange
  '#009e73', // bluish green
  '#cc79a7', // reddish purple
  '#d55e00', // vermillion
  '#56b4e9', // sky blue
  '#000000', // black
  '#f0e442', // yellow
];

export const DEFAULT_WIDTH = 640;
export const DEFAULT_HEIGHT = 400;
const MIN_SIZE = 160;
const MAX_SIZE = 8000;

/** Tick positions covering a range, a whole number of 1, 2 or 5 × 10^k steps, and labels for them. */
export interface Axis {
  /** The axis runs from `min` to `max`: the data's range widened to whole steps. */
  min: number;
  max: number;
  step: number;
  ticks: number[];
  labels: string[];
}

/**
 * Nice ticks for data from `low` to `high` (d3's rule: the 1-2-5 step nearest to a span / `count` step, and the
 * range widened to whole steps). A zero range is widened around its value first, and a non-finite one becomes 0..1,
 * so every axis has a positive length.
 */
export function niceTicks(low: number, high: number, count = 5): Axis {
  if (!Number.isFinite(low) || !Number.isFinite(high)) [low, high] = [0, 1];
  if (low > high) [low, high] = [high, low];
  if (low === high) {
    const pad = low === 0 ? 1 : Math.abs(low) * 0.1;
    [low, high] = [low - pad, high + pad];
  }
  const step = niceStep((high - low) / Math.max(1, count));
  // The tolerance keeps a bound that is already a whole step, give or take rounding, from growing a step.
  const first = Math.floor(low / step + 1e-9);
  const last = Math.ceil(high / step - 1e-9);
  const ticks: number[] = [];
  for (let index = first; index <= last; index++) ticks.push(cleanTick(index * step, step));
  return { min: ticks[0], max: ticks[ticks.length - 1], step, ticks, labels: ticks.map((t) => formatTick(t, step)) };
}

function niceStep(rough: number): number {
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const normalized = rough / magnitude;
  // The geometric midpoints between 1, 2, 5 and 10 pick the nearest step on a log scale.
  const factor =
    normalized >= Math.sqrt(50) ? 10 : normalized >= Math.sqrt(10) ? 5 : normalized >= Math.sqrt(2) ? 2 : 1;
  return factor * magnitude;
}

/** `index * step` computed in floating point can come out as 0.30000000000000004 or -0: round to the step's digits. */
function cleanTick(value: number, step: number): number {
  if (Math.abs(value) < step * 1e-6) return 0;
  const decimals = stepDecimals(step);
  return decimals > 0 && decimals <= 20 ? Number(value.toFixed(decimals)) : value;
}

function stepDecimals(step: number): number {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

/** A tick label with as many decimals as the step needs; exponent form for very large or very small values. */
export function formatTick(value: number, step: number): string {
  const largest = Math.max(Math.abs(value), step);
  if (largest >= 1e6 || step < 1e-4) {
    if (value === 0) return '0';
    const digits = Math.floor(Math.log10(Math.abs(value))) - Math.floor(Math.log10(step) + 1e-9);
    const text = value.toExponential(Math.min(6, Math.max(0, digits)));
    return text.replace(/\.?0+e/, 'e').replace('e+', 'e');
  }
  return value.toFixed(stepDecimals(step));
}

/** A number for a legend or a table: up to `digits` significant digits, without trailing zeros. */
export function formatNumber(value: number, digits = 3): string {
  if (Number.isNaN(value)) return 'NaN';
  if (!Number.isFinite(value)) return value > 0 ? '∞' : '-∞';
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return String(value);
  const text =
    Math.abs(value) >= 1e6 || Math.abs(value) < 1e-4 ? value.toExponential(digits - 1) : value.toPrecision(digits);
  // Trailing zeros after a decimal point (in the mantissa too) carry nothing.
  return text
    .replace(/(\.\d*?)0+(?=$|e)/, '$1')
    .replace(/\.(?=$|e)/, '')
    .replace('e+', 'e');
}

/** The least-squares line through the finite points; NaN slope and intercept with fewer than two distinct x. */
export function fitLine(points: readonly { x: number; y: number }[]): { slope: number; intercept: number } {
  const finite = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const n = finite.length;
  if (n === 0) return { slope: NaN, intercept: NaN };
  const meanX = finite.reduce((sum, p) => sum + p.x, 0) / n;
  const meanY = finite.reduce((sum, p) => sum + p.y, 0) / n;
  // Centred sums: the textbook n·Σxy − Σx·Σy cancels badly when x sits far from zero.
  let sxy = 0;
  let sxx = 0;
  for (const p of finite) {
    sxy += (p.x - meanX) * (p.y - meanY);
    sxx += (p.x - meanX) ** 2;
  }
  if (sxx === 0) return { slope: NaN, intercept: NaN };
  const slope = sxy / sxx;
  return { slope, intercept: meanY - slope * meanX };
}

/** The fit of `points`, ready for `Chart.fits`, spanning their x range. */
export function fitOf(name: string, points: readonly { x: number; y: number }[], color?: string): Fit {
  let xFrom = Infinity;
  let xTo = -Infinity;
  for (const p of points) {
    if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) continue;
    xFrom = Math.min(xFrom, p.x);
    xTo = Math.max(xTo, p.x);
  }
  const { slope, intercept } = fitLine(points);
  const fit: Fit = { name, slope, intercept, xFrom, xTo };
  if (color !== undefined) fit.color = color;
  return fit;
}

/**
 * '#rgb' or '#rrggbb' as [r, g, b] in 0..255; throws on anything else: colours go into SVG attributes as they are, so
 * only these spellings are let through.
 */
export function parseColor(color: string): [number, number, number] {
  const short = /^#([0-9a-f])([0-9a-f])([0-9a-f])$/i.exec(color);
  if (short) return [1, 2, 3].map((i) => parseInt(short[i] + short[i], 16)) as [number, number, number];
  const long = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
  if (long) return [1, 2, 3].map((i) => parseInt(long[i], 16)) as [number, number, number];
  throw new TypeError(`report: colour must be '#rgb' or '#rrggbb', got ${JSON.stringify(color)}`);
}

/** Throws a TypeError or RangeError naming what is wrong with `chart`; returns its width and height. */
export function checkChart(chart: Chart): { width: number; height: number } {
  if (chart === null || typeof chart !== 'object') throw new TypeError('report: chart must be an object');
  for (const key of ['title', 'xLabel', 'yLabel'] as const) {
    if (typeof chart[key] !== 'string') throw new TypeError(`report: chart.${key} must be a string`);
  }
  if (!Array.isArray(chart.series)) throw new TypeError('report: chart.series must be an array');
  chart.series.forEach((series, index) => {
    if (series === null || typeof series !== 'object')
      throw new TypeError(`report: series[${index}] must be an object`);
    if (typeof series.name !== 'string') throw new TypeError(`report: series[${index}].name must be a string`);
    if (!Array.isArray(series.points)) throw new TypeError(`report: series[${index}].points must be an array`);
    if (series.band !== undefined && !Array.isArray(series.band)) {
      throw new TypeError(`report: series[${index}].band must be an array`);
    }
    if (series.style !== undefined && !['line', 'points', 'line+points'].includes(series.style)) {
      throw new TypeError(`report: series[${index}].style must be 'line', 'points' or 'line+points'`);
    }
    if (series.color !== undefined) parseColor(series.color);
  });
  if (chart.fits !== undefined && !Array.isArray(chart.fits))
    throw new TypeError('report: chart.fits must be an array');
  for (const fit of chart.fits ?? []) {
    if (typeof fit.name !== 'string') throw new TypeError('report: fit.name must be a string');
    if (fit.color !== undefined) parseColor(fit.color);
  }
  const width = chart.width ?? DEFAULT_WIDTH;
  const height = chart.height ?? DEFAULT_HEIGHT;
  for (const [key, value] of [
    ['width', width],
    ['height', height],
  ] as const) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < MIN_SIZE || value > MAX_SIZE) {
      throw new RangeError(`report: chart.${key} must be a number from ${MIN_SIZE} to ${MAX_SIZE}, got ${value}`);
    }
  }
  return { width, height };
}
