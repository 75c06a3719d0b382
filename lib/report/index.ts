// Reports: charts drawn as SVG (and PNG from that SVG), an HTML page around them, and the folder they are written to.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { writeFileAtomic } from '../io/atomic';
import { type Chart } from './chart';
import { renderReport, type ReportTable } from './html';
import { renderPng } from './png';
import { renderSvg } from './svg';

export {
  type Axis,
  type Chart,
  type Fit,
  type Series,
  fitLine,
  fitOf,
  formatNumber,
  formatTick,
  niceTicks,
  PALETTE,
} from './chart';
export { escapeHtml, renderReport, type ReportChartEntry, type ReportPage, type ReportTable } from './html';
export { type PngOptions, renderPng } from './png';
export { layoutChart, type Point, type Scene, type Shape } from './scene';
export { escapeXml, renderSvg } from './svg';

export interface ReportContents {
  title: string;
  summary: string;
  tables: ReportTable[];
  charts: Chart[];
  /** Written as metrics.json; must be JSON-serialisable. */
  metrics: unknown;
  /** PNG pixels per chart unit; 2 when absent. */
  pngScale?: number;
}

/**
 * Writes report.html, `<slug>.svg` and `<slug>.png` for each chart (the slug from its title, made unique), and
 * metrics.json into `dir`, creating it. Each file is written atomically; returns their paths, the page last.
 */
export function writeReport(dir: string, contents: ReportContents): { files: string[] } {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('writeReport: dir must be a non-empty string');
  const metrics = JSON.stringify(contents.metrics, null, 2);
  if (metrics === undefined) throw new TypeError('writeReport: metrics must be JSON-serialisable');
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  const write = (name: string, data: Uint8Array | string): void => {
    const path = join(dir, name);
    writeFileAtomic(path, data);
    files.push(path);
  };

  const used = new Set(['report', 'metrics']);
  const entries = contents.charts.map((chart) => {
    const slug = uniqueSlug(chart.title, used);
    const svg = renderSvg(chart);
    write(`${slug}.svg`, svg);
    write(`${slug}.png`, renderPng(chart, { scale: contents.pngScale }));
    return { title: chart.title, svg, png: `${slug}.png` };
  });
  write('metrics.json', metrics + '\n');
  const page = { title: contents.title, summary: contents.summary, tables: contents.tables, charts: entries };
  write('report.html', renderReport(page));
  return { files };
}

/** Greek letters that chart titles use (ΔM, σ), spelled out so the slug keeps them. */
const SPELLED_OUT: Record<string, string> = {
  α: ' alpha ',
  β: ' beta ',
  γ: ' gamma ',
  δ: ' delta ',
  Δ: ' delta ',
  λ: ' lambda ',
  μ: ' mu ',
  σ: ' sigma ',
};

/** A file-name-safe slug of `title` (lower case, ASCII letters and digits joined by '-'), not yet in `used`. */
export function uniqueSlug(title: string, used: Set<string>): string {
  const base =
    title
      .replace(/[αβγδΔλμσ]/g, (char) => SPELLED_OUT[char])
      .normalize('NFKD')
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 60)
      .replace(/-+$/, '') || 'chart';
  let slug = base;
  for (let n = 2; used.has(slug); n++) slug = `${base}-${n}`;
  used.add(slug);
  return slug;
}
