// Renders the report page: one self-contained HTML file with inline CSS, the charts' SVG inlined, links to the PNGs.
import { formatNumber } from './chart';

export interface ReportTable {
  title: string;
  columns: string[];
  rows: (string | number)[][];
}

export interface ReportChartEntry {
  title: string;
  /** An SVG document, as `renderSvg` writes it; inlined as is. */
  svg: string;
  /** The PNG's file name, relative to the page. */
  png: string;
}

export interface ReportPage {
  title: string;
  /** Plain text: blank lines separate paragraphs, single newlines become line breaks. */
  summary: string;
  tables: ReportTable[];
  charts: ReportChartEntry[];
}

const STYLE = `
  body { font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1a1a1a; margin: 0; background: #fafafa; }
  main { max-width: 1000px; margin: 0 auto; padding: 24px; }
  h1 { font-size: 1.6em; margin: 0 0 0.5em; }
  h2 { font-size: 1.2em; margin: 1.6em 0 0.5em; }
  table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; }
  th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; }
  th { background: #f0f0f0; }
  td.number { text-align: right; }
  figure { margin: 0 0 24px; background: #fff; border: 1px solid #e5e5e5; padding: 12px; }
  figure svg { width: 100%; height: auto; display: block; }
  figcaption { font-size: 0.9em; color: #555; margin-top: 6px; }
`;

/** The report as one HTML page; every piece of text given is escaped, the SVGs excepted. */
export function renderReport(page: ReportPage): string {
  const parts = [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(page.title)}</title>`,
    `<style>${STYLE}</style>`,
    '</head>',
    '<body>',
    '<main>',
    `<h1>${escapeHtml(page.title)}</h1>`,
    ...paragraphs(page.summary),
    ...page.tables.flatMap(table),
    ...page.charts.flatMap(figure),
    '</main>',
    '</body>',
    '</html>',
  ];
  return parts.join('\n') + '\n';
}

function paragraphs(summary: string): string[] {
  return summary
    .split(/\r?\n\s*\r?\n/)
    .map((paragraph) => paragraph.trim())
    .filter((paragraph) => paragraph !== '')
    .map((paragraph) => `<p>${paragraph.split(/\r?\n/).map(escapeHtml).join('<br>\n')}</p>`);
}

function table(data: ReportTable): string[] {
  const cell = (value: string | number): string =>
    typeof value === 'number'
      ? `<td class="number">${escapeHtml(formatNumber(value, 4))}</td>`
      : `<td>${escapeHtml(String(value))}</td>`;
  return [
    `<h2>${escapeHtml(data.title)}</h2>`,
    '<table>',
    `<thead><tr>${data.columns.map((column) => `<th>${escapeHtml(column)}</th>`).join('')}</tr></thead>`,
    '<tbody>',
    ...data.rows.map((row) => `<tr>${row.map(cell).join('')}</tr>`),
    '</tbody>',
    '</table>',
  ];
}

function figure(chart: ReportChartEntry): string[] {
  // An XML declaration means nothing inside HTML, where the parser would keep it as a bogus comment.
  const svg = chart.svg.replace(/^\s*<\?xml[^>]*\?>\s*/, '').trim();
  return [
    `<h2>${escapeHtml(chart.title)}</h2>`,
    '<figure>',
    svg,
    `<figcaption><a href="${escapeHtml(encodeURI(chart.png))}">PNG</a></figcaption>`,
    '</figure>',
  ];
}

/** Text for HTML content or a quoted attribute. */
export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}
