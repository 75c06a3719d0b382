// Lays a chart out as a list of shapes in chart units: what svg.ts writes, and the PNG renderer draws from that SVG.
import { type Axis, type Chart, checkChart, formatNumber, niceTicks, PALETTE } from './chart';

export type Point = readonly [number, number];

/** What the renderers draw, in order; y grows downward. Colours are '#rrggbb' or '#rgb', opacity 0..1. */
export type Shape =
  | { kind: 'rect'; x: number; y: number; width: number; height: number; color: string; opacity: number }
  /** An open polyline with round joins and caps; `dash` is [on, off] lengths along it. */
  | { kind: 'path'; points: Point[]; width: number; color: string; opacity: number; dash?: [number, number] }
  /** A filled polygon (the even-odd rule). */
  | { kind: 'area'; points: Point[]; color: string; opacity: number }
  | { kind: 'circle'; x: number; y: number; radius: number; color: string; opacity: number }
  /**
   * Text in a monospace font: (x, y) is the baseline's anchor point. `size` 1 is a 10-unit font, so capitals stand
   * about 7 units tall and characters 6 apart. Vertical text reads upward, rotated -90° about (x, y).
   */
  | {
      kind: 'text';
      x: number;
      y: number;
      text: string;
      size: number;
      color: string;
      anchor: 'start' | 'middle' | 'end';
      vertical: boolean;
    };

export interface Scene {
  width: number;
  height: number;
  background: string;
  /** The data area: x runs from left to right, y from bottom (axis minimum) to top (maximum). */
  plot: { left: number; top: number; right: number; bottom: number };
  xAxis: Axis;
  yAxis: Axis;
  /** Data coordinates to chart units. */
  x(value: number): number;
  y(value: number): number;
  shapes: Shape[];
}

/**
 * Text is measured, not shaped: every monospace font advances 0.6 em, 6 units at size 1, and capitals stand about
 * 0.7 em. The layout needs no font file, and labels fit in whichever monospace font draws them.
 */
const CHAR_ADVANCE = 6;
const CAP_HEIGHT = 7;

const PAD = 12;
const TITLE_SIZE = 1.5;
const TICK_LENGTH = 4;
const LEGEND_ROW = 14;
const LEGEND_SWATCH = 18;
const LINE_WIDTH = 1.75;
const FIT_WIDTH = 1.5;
const FIT_DASH: [number, number] = [6, 4];
const BAND_OPACITY = 0.18;
const INK = { title: '#1a1a1a', label: '#333333', tick: '#555555', axis: '#4d4d4d', grid: '#e5e5e5' };

interface LegendEntry {
  label: string;
  color: string;
  line: boolean;
  dashed: boolean;
  marker: boolean;
  band: boolean;
}

/** The chart's shapes and the mapping from data to chart units; throws on a malformed chart. */
export function layoutChart(chart: Chart): Scene {
  const { width, height } = checkChart(chart);
  const seriesColors = chart.series.map((series, index) => series.color ?? PALETTE[index % PALETTE.length]);
  const fits = (chart.fits ?? []).map((fit, index) => {
    const sameName = chart.series.findIndex((series) => series.name === fit.name);
    const color =
      fit.color ?? (sameName >= 0 ? seriesColors[sameName] : PALETTE[(chart.series.length + index) % PALETTE.length]);
    return { ...fit, color };
  });

  // The data's extent: every finite coordinate that will be drawn.
  const xs: number[] = [];
  const ys: number[] = [];
  const extend = (x: number, y: number): void => {
    if (!Number.isFinite(x) || !Number.isFinite(y)) return;
    xs.push(x);
    ys.push(y);
  };
  for (const series of chart.series) {
    for (const p of series.points) extend(p.x, p.y);
    for (const b of series.band ?? []) {
      extend(b.x, b.low);
      extend(b.x, b.high);
    }
  }
  const drawnFits = fits.filter((fit) =>
    [fit.slope, fit.intercept, fit.xFrom, fit.xTo].every((value) => Number.isFinite(value)),
  );
  for (const fit of drawnFits) {
    for (const x of [fit.xFrom, fit.xTo]) extend(x, fit.slope * x + fit.intercept);
  }
  const hasData = xs.length > 0;
  const xAxis = hasData ? niceTicks(min(xs), max(xs)) : niceTicks(0, 1);
  const yAxis = hasData ? niceTicks(min(ys), max(ys)) : niceTicks(0, 1);

  const legend: LegendEntry[] = chart.series.map((series, index) => {
    const style = series.style ?? 'line';
    return {
      label: series.name,
      color: seriesColors[index],
      line: style !== 'points',
      dashed: false,
      marker: style !== 'line',
      band: (series.band ?? []).length > 0,
    };
  });
  for (const fit of fits) {
    legend.push({
      label: `${fit.name} fit: slope ${formatNumber(fit.slope)}`,
      color: fit.color,
      line: true,
      dashed: true,
      marker: false,
      band: false,
    });
  }

  // Margins from the text they hold.
  const top = chart.title ? PAD + CAP_HEIGHT * TITLE_SIZE + 14 : PAD + 6;
  const bottom = height - PAD - (chart.xLabel ? 30 : 15);
  const yLabelSpace = chart.yLabel ? CAP_HEIGHT + 2 + 8 : 0;
  const left = PAD + yLabelSpace + widest(yAxis.labels) + TICK_LENGTH + 4;
  const legendLabelWidth = widest(legend.map((entry) => entry.label));
  const legendWidth = legend.length > 0 ? Math.min(LEGEND_SWATCH + 6 + legendLabelWidth, width * 0.3) : 0;
  const lastXLabel = xAxis.labels[xAxis.labels.length - 1];
  const rightSpace = Math.max(legendWidth > 0 ? legendWidth + 14 : 0, textWidth(lastXLabel) / 2);
  const right = Math.max(width - PAD - rightSpace, left + 20);
  const plot = { left, top, right, bottom };

  const x = (value: number): number => left + ((value - xAxis.min) / (xAxis.max - xAxis.min)) * (right - left);
  const y = (value: number): number => bottom - ((value - yAxis.min) / (yAxis.max - yAxis.min)) * (bottom - top);

  const shapes: Shape[] = [];
  // Frame: grid, axes, ticks and their labels, titles.
  for (const tick of xAxis.ticks) {
    shapes.push(rule([x(tick), top], [x(tick), bottom], INK.grid));
  }
  for (const tick of yAxis.ticks) {
    shapes.push(rule([left, y(tick)], [right, y(tick)], INK.grid));
  }
  shapes.push(rule([left, top], [left, bottom + 0.5], INK.axis));
  shapes.push(rule([left - 0.5, bottom], [right, bottom], INK.axis));
  xAxis.ticks.forEach((tick, index) => {
    shapes.push(rule([x(tick), bottom], [x(tick), bottom + TICK_LENGTH], INK.axis));
    shapes.push(...text([x(tick), bottom + TICK_LENGTH + 4 + CAP_HEIGHT], xAxis.labels[index], INK.tick, 'middle'));
  });
  yAxis.ticks.forEach((tick, index) => {
    shapes.push(rule([left - TICK_LENGTH, y(tick)], [left, y(tick)], INK.axis));
    shapes.push(...text([left - TICK_LENGTH - 4, y(tick) + CAP_HEIGHT / 2], yAxis.labels[index], INK.tick, 'end'));
  });
  const title = clip(chart.title, width - 2 * PAD, TITLE_SIZE);
  shapes.push(...text([width / 2, PAD + CAP_HEIGHT * TITLE_SIZE], title, INK.title, 'middle', { size: TITLE_SIZE }));
  const xLabel = clip(chart.xLabel, right - left);
  shapes.push(...text([(left + right) / 2, bottom + 28], xLabel, INK.label, 'middle'));
  const yLabel = clip(chart.yLabel, bottom - top);
  shapes.push(...text([PAD + CAP_HEIGHT, (top + bottom) / 2], yLabel, INK.label, 'middle', { vertical: true }));

  // Data, back to front: bands, lines, fits, points.
  chart.series.forEach((series, index) => {
    for (const run of runs(series.band ?? [], (b) => [b.x, b.low, b.high].every((v) => Number.isFinite(v)))) {
      if (run.length < 2) continue;
      const upper = run.map((b): Point => [x(b.x), y(b.high)]);
      const lower = run.map((b): Point => [x(b.x), y(b.low)]).reverse();
      shapes.push({ kind: 'area', points: [...upper, ...lower], color: seriesColors[index], opacity: BAND_OPACITY });
    }
  });
  chart.series.forEach((series, index) => {
    if ((series.style ?? 'line') === 'points') return;
    const color = seriesColors[index];
    for (const run of runs(series.points, (p) => Number.isFinite(p.x) && Number.isFinite(p.y))) {
      const points = run.map((p): Point => [x(p.x), y(p.y)]);
      // A lone point between gaps would vanish as a zero-length line.
      if (points.length === 1) shapes.push(dot(points[0], LINE_WIDTH, color));
      else shapes.push({ kind: 'path', points, width: LINE_WIDTH, color, opacity: 1 });
    }
  });
  for (const fit of drawnFits) {
    if (fit.xFrom === fit.xTo) continue;
    const ends = [fit.xFrom, fit.xTo].map((v): Point => [x(v), y(fit.slope * v + fit.intercept)]);
    shapes.push({ kind: 'path', points: ends, width: FIT_WIDTH, color: fit.color, opacity: 1, dash: FIT_DASH });
  }
  chart.series.forEach((series, index) => {
    const style = series.style ?? 'line';
    if (style === 'line') return;
    const radius = style === 'points' ? 3 : 2.5;
    for (const p of series.points) {
      if (Number.isFinite(p.x) && Number.isFinite(p.y)) shapes.push(dot([x(p.x), y(p.y)], radius, seriesColors[index]));
    }
  });
  if (!hasData)
    shapes.push(...text([(left + right) / 2, (top + bottom) / 2 + CAP_HEIGHT / 2], 'no data', INK.tick, 'middle'));

  if (legendWidth > 0) shapes.push(...legendShapes(legend, right + 14, top, height - PAD, legendWidth));

  return { width, height, background: '#ffffff', plot, xAxis, yAxis, x, y, shapes };
}

/** The legend's rows from (`left`, `top`) down to `bottom` at most; a last row counts the entries left out. */
function legendShapes(
  legend: readonly LegendEntry[],
  left: number,
  top: number,
  bottom: number,
  width: number,
): Shape[] {
  const shapes: Shape[] = [];
  const rows = Math.max(1, Math.floor((bottom - top) / LEGEND_ROW));
  const shown = legend.length > rows ? legend.slice(0, rows - 1) : legend;
  const rowMiddle = (row: number): number => top + row * LEGEND_ROW + LEGEND_ROW / 2 - 2;
  shown.forEach((entry, row) => {
    const middle = rowMiddle(row);
    if (entry.band) {
      shapes.push({ kind: 'rect', x: left, y: middle - 5, width: LEGEND_SWATCH, height: 10, ...faint(entry.color) });
    }
    if (entry.line) {
      shapes.push({
        kind: 'path',
        points: [
          [left, middle],
          [left + LEGEND_SWATCH, middle],
        ],
        width: entry.dashed ? FIT_WIDTH : LINE_WIDTH,
        color: entry.color,
        opacity: 1,
        ...(entry.dashed && { dash: [4, 3] }),
      });
    }
    if (entry.marker) shapes.push(dot([left + LEGEND_SWATCH / 2, middle], 3, entry.color));
    const label = clip(entry.label, width - LEGEND_SWATCH - 6);
    shapes.push(...text([left + LEGEND_SWATCH + 6, middle + CAP_HEIGHT / 2], label, INK.label, 'start'));
  });
  if (shown.length < legend.length) {
    const more = `+${legend.length - shown.length} more`;
    shapes.push(...text([left, rowMiddle(shown.length) + CAP_HEIGHT / 2], more, INK.tick, 'start'));
  }
  return shapes;
}

/** A text shape, or none for empty text. */
function text(
  at: Point,
  content: string,
  color: string,
  anchor: 'start' | 'middle' | 'end',
  options: { size?: number; vertical?: boolean } = {},
): Shape[] {
  if (content === '') return [];
  const [x, y] = at;
  return [{ kind: 'text', x, y, text: content, size: options.size ?? 1, color, anchor, vertical: !!options.vertical }];
}

function rule(from: Point, to: Point, color: string): Shape {
  return { kind: 'path', points: [from, to], width: 1, color, opacity: 1 };
}

function dot(at: Point, radius: number, color: string): Shape {
  return { kind: 'circle', x: at[0], y: at[1], radius, color, opacity: 1 };
}

function faint(color: string): { color: string; opacity: number } {
  return { color, opacity: BAND_OPACITY };
}

/** `text` shortened with an ellipsis to fit `width` chart units at `size`. */
function clip(text: string, width: number, size = 1): string {
  const chars = [...text];
  if (textWidth(text, size) <= width) return text;
  let keep = chars.length;
  while (keep > 0 && textWidth(chars.slice(0, keep).join('') + '…', size) > width) keep--;
  return keep > 0 ? chars.slice(0, keep).join('') + '…' : '';
}

/** Maximal runs of consecutive items that pass `keep`: the pieces a line is drawn in between gaps. */
function runs<T>(items: readonly T[], keep: (item: T) => boolean): T[][] {
  const result: T[][] = [];
  let current: T[] = [];
  for (const item of items) {
    if (keep(item)) {
      current.push(item);
    } else if (current.length > 0) {
      result.push(current);
      current = [];
    }
  }
  if (current.length > 0) result.push(current);
  return result;
}

/** The width of `text` in chart units at `size`. */
function textWidth(text: string, size = 1): number {
  return [...text].length * CHAR_ADVANCE * size;
}

/** The width of the longest of `labels` in chart units; 0 for none. */
function widest(labels: readonly string[]): number {
  let result = 0;
  for (const label of labels) result = Math.max(result, textWidth(label));
  return result;
}

// Math.min(...values) overflows the stack on very long series.
function min(values: readonly number[]): number {
  let result = Infinity;
  for (const value of values) if (value < result) result = value;
  return result;
}

function max(values: readonly number[]): number {
  let result = -Infinity;
  for (const value of values) if (value > result) result = value;
  return result;
}
