// Reports: nice ticks, least squares, the SVG (well-formed, escaped), the PNG that resvg draws from it (decoded here by
// a decoder written for the test: chunk CRCs, inflate, row filters, pixels where the layout says, text that is drawn
// with the shipped font), the HTML page, writeReport.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';

import { afterAll, describe, expect, it } from 'vitest';

import {
  type Chart,
  escapeXml,
  fitLine,
  fitOf,
  formatNumber,
  layoutChart,
  niceTicks,
  renderPng,
  renderReport,
  renderSvg,
  writeReport,
} from '../lib/report/index';

const dir = mkdtempSync(join(tmpdir(), 'bidora-report-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A seeded uniform generator (mulberry32): fresh-looking values, the same every run. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- A minimal PNG decoder for 8-bit RGBA: bitwise CRC, inflate, un-filter. ----

function crc32Bitwise(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

interface DecodedPng {
  width: number;
  height: number;
  pixels: Uint8Array;
  chunkTypes: string[];
}

function decodePng(file: Buffer): DecodedPng {
  expect([...file.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const chunkTypes: string[] = [];
  const idat: Buffer[] = [];
  let width = 0;
  let height = 0;
  let offset = 8;
  while (offset < file.length) {
    const length = file.readUInt32BE(offset);
    const type = file.toString('latin1', offset + 4, offset + 8);
    const data = file.subarray(offset + 8, offset + 8 + length);
    const crc = file.readUInt32BE(offset + 8 + length);
    expect(crc, `CRC of ${type}`).toBe(crc32Bitwise(file.subarray(offset + 4, offset + 8 + length)));
    chunkTypes.push(type);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      // 8-bit RGBA, deflate, adaptive filtering, no interlace.
      expect([...data.subarray(8, 13)]).toEqual([8, 6, 0, 0, 0]);
    }
    if (type === 'IDAT') idat.push(data);
    offset += 12 + length;
  }
  expect(offset).toBe(file.length);
  expect(chunkTypes[0]).toBe('IHDR');
  expect(chunkTypes[chunkTypes.length - 1]).toBe('IEND');

  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * 4;
  expect(raw.length).toBe((stride + 1) * height);
  const pixels = new Uint8Array(stride * height);
  for (let row = 0; row < height; row++) {
    const filter = raw[row * (stride + 1)];
    for (let i = 0; i < stride; i++) {
      const value = raw[row * (stride + 1) + 1 + i];
      const a = i >= 4 ? pixels[row * stride + i - 4] : 0;
      const b = row > 0 ? pixels[(row - 1) * stride + i] : 0;
      const c = i >= 4 && row > 0 ? pixels[(row - 1) * stride + i - 4] : 0;
      let predicted: number;
      if (filter === 0) predicted = 0;
      else if (filter === 1) predicted = a;
      else if (filter === 2) predicted = b;
      else if (filter === 3) predicted = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
        predicted = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else throw new Error(`unknown filter ${filter} on row ${row}`);
      pixels[row * stride + i] = (value + predicted) & 0xff;
    }
  }
  return { width, height, pixels, chunkTypes };
}

function pixelAt(png: DecodedPng, x: number, y: number): [number, number, number, number] {
  const i = (Math.floor(y) * png.width + Math.floor(x)) * 4;
  return [png.pixels[i], png.pixels[i + 1], png.pixels[i + 2], png.pixels[i + 3]];
}

function rgb(hex: string): [number, number, number] {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)) as [number, number, number];
}

function colorDistance(a: readonly number[], b: readonly number[]): number {
  return Math.max(...[0, 1, 2].map((i) => Math.abs(a[i] - b[i])));
}

/** The pixel closest to `color` within `radius` of (x, y): a line's centre need not fall on a pixel centre. */
function nearestToColor(png: DecodedPng, x: number, y: number, radius: number, color: readonly number[]): number {
  let best = Infinity;
  for (let dy = -radius; dy <= radius; dy++) {
    for (let dx = -radius; dx <= radius; dx++)
      best = Math.min(best, colorDistance(pixelAt(png, x + dx, y + dy), color));
  }
  return best;
}

// ---- A tag-balance checker: enough XML to catch unclosed, crossed or unescaped markup. ----

function checkWellFormed(xml: string): string[] {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  const roots: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let match = tag.exec(body); match; match = tag.exec(body)) {
    const text = body.slice(last, match.index);
    expect(text, 'raw < in text').not.toMatch(/</);
    expect(text, 'bare & in text').not.toMatch(/&(?!(amp|lt|gt|quot|apos|#\d+);)/);
    const [, closing, name, , selfClosing] = match;
    if (!closing && stack.length === 0) roots.push(name);
    if (closing) expect(stack.pop(), `closing </${name}>`).toBe(name);
    else if (!selfClosing) stack.push(name);
    last = tag.lastIndex;
  }
  expect(body.slice(last).trim(), 'text after the root').toBe('');
  expect(stack, 'unclosed tags').toEqual([]);
  return roots;
}

// ---- Charts used below. ----

function validationChart(seed: number): Chart {
  const next = random(seed);
  const steps = Array.from({ length: 16 }, (_, i) => i * 40 + 3);
  const methods = ['LoRA', 'DoRA', 'BiDoRA'];
  return {
    title: 'Validation accuracy (mean ± std)',
    xLabel: 'step',
    yLabel: 'accuracy',
    series: methods.map((name, k) => {
      const seeds = Array.from({ length: 5 }, () =>
        steps.map((s) => 0.8 + 0.03 * k - 0.3 * Math.exp(-s / 150) + 0.02 * (next() - 0.5)),
      );
      const mean = steps.map((_, i) => seeds.reduce((sum, run) => sum + run[i], 0) / seeds.length);
      const std = steps.map((_, i) =>
        Math.sqrt(seeds.reduce((sum, run) => sum + (run[i] - mean[i]) ** 2, 0) / (seeds.length - 1)),
      );
      return {
        name,
        points: steps.map((x, i) => ({ x, y: mean[i] })),
        band: steps.map((x, i) => ({ x, low: mean[i] - std[i], high: mean[i] + std[i] })),
      };
    }),
  };
}

function scatterChart(seed: number): Chart {
  const next = random(seed);
  const series = [-1.7, 0.45].map((slope, k) => ({
    name: k === 0 ? 'DoRA' : 'BiDoRA',
    style: 'points' as const,
    points: Array.from({ length: 30 }, () => {
      const x = 0.005 + 0.08 * next();
      return { x, y: slope * x + 0.01 * (next() - 0.5) };
    }),
  }));
  return {
    title: 'ΔM vs ΔD',
    xLabel: 'ΔD',
    yLabel: 'ΔM',
    series,
    fits: series.map((s) => fitOf(s.name, s.points)),
  };
}

describe('niceTicks', () => {
  it('steps by 1, 2 or 5 × 10^k and covers the data', () => {
    expect(niceTicks(0, 1).ticks).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0, 1).labels).toEqual(['0.0', '0.2', '0.4', '0.6', '0.8', '1.0']);

    const small = niceTicks(0, 0.037);
    expect(small.ticks).toEqual([0, 0.01, 0.02, 0.03, 0.04]);
    expect(small.labels).toEqual(['0.00', '0.01', '0.02', '0.03', '0.04']);

    const wide = niceTicks(-3, 1200);
    expect(wide.step).toBe(200);
    expect(wide.ticks).toEqual([-200, 0, 200, 400, 600, 800, 1000, 1200]);
    expect(wide.labels[0]).toBe('-200');

    const odd = niceTicks(0.1234, 0.1289);
    expect(odd.min).toBeLessThanOrEqual(0.1234);
    expect(odd.max).toBeGreaterThanOrEqual(0.1289);
    // Floating point would give 0.12300000000000001 without rounding to the step.
    for (const tick of odd.ticks) expect(String(tick).length).toBeLessThanOrEqual(6);
  });

  it('widens a zero range around its value, and survives reversed and non-finite input', () => {
    const constant = niceTicks(3.7, 3.7);
    expect(constant.min).toBeLessThan(3.7);
    expect(constant.max).toBeGreaterThan(3.7);
    expect(constant.ticks.length).toBeGreaterThanOrEqual(3);
    expect(niceTicks(0, 0).ticks).toEqual([-1, -0.5, 0, 0.5, 1]);
    expect(niceTicks(-2.5e-3, -2.5e-3).min).toBeLessThan(-2.5e-3);
    expect(niceTicks(1, 0).ticks).toEqual(niceTicks(0, 1).ticks);
    expect(niceTicks(NaN, 4).ticks).toEqual(niceTicks(0, 1).ticks);
  });

  it('writes very large and very small ticks in exponent form', () => {
    expect(niceTicks(0, 3.3e7).labels).toContain('1e7');
    expect(niceTicks(1e-6, 4.2e-6).labels).toContain('2e-6');
  });
});

describe('fits and numbers', () => {
  it('recovers a line by least squares, far from the origin too', () => {
    const next = random(7);
    const points = Array.from({ length: 40 }, () => {
      const x = 1e6 + 100 * next();
      return { x, y: -0.731 * x + 4.2 };
    });
    const { slope, intercept } = fitLine(points);
    expect(slope).toBeCloseTo(-0.731, 9);
    expect(intercept).toBeCloseTo(4.2, 3);
    expect(fitLine([{ x: 1, y: 2 }]).slope).toBeNaN();
    const fit = fitOf('BiDoRA', [...points, { x: NaN, y: 1 }]);
    expect(fit.xFrom).toBe(Math.min(...points.map((p) => p.x)));
    expect(fit.xTo).toBe(Math.max(...points.map((p) => p.x)));
  });

  it('formats numbers to a few significant digits', () => {
    expect(formatNumber(0.30000000000000004)).toBe('0.3');
    expect(formatNumber(-1.83456)).toBe('-1.83');
    expect(formatNumber(12)).toBe('12');
    expect(formatNumber(2.5e-7)).toBe('2.5e-7');
    expect(formatNumber(NaN)).toBe('NaN');
  });
});

describe('renderSvg', () => {
  it('writes a standalone, well-formed document with every name escaped', () => {
    const chart = validationChart(1);
    chart.title = 'Loss <train> & "eval"';
    chart.series[0].name = "A<B & 'C'";
    const svg = renderSvg(chart);
    expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>')).toBe(true);
    expect(svg).toContain('xmlns="http://www.w3.org/2000/svg"');
    expect(svg).toContain('viewBox="0 0 640 400"');
    expect(checkWellFormed(svg)).toEqual(['svg']);
    expect(svg).toContain('Loss &lt;train&gt; &amp; &quot;eval&quot;');
    expect(svg).toContain('A&lt;B &amp; &apos;C&apos;');
    expect(svg).toContain('>DoRA<');
    expect(svg).toContain('>BiDoRA<');
    expect(svg).not.toMatch(/NaN|Infinity|undefined/);
  });

  it('draws the fits with their slopes, and drops characters XML cannot hold', () => {
    const chart = scatterChart(2);
    const svg = renderSvg(chart);
    checkWellFormed(svg);
    const slope = formatNumber(chart.fits![0].slope);
    expect(svg).toContain(`DoRA fit: slope ${slope}`);
    expect(svg).toContain('stroke-dasharray');
    expect(escapeXml('a\u0000b\u0007c\ud800d\tok')).toBe('abcd\tok');
  });

  it('leaves gaps at NaN, handles empty and constant series, and says when there is no data', () => {
    const chart: Chart = {
      title: 'gaps',
      xLabel: 'x',
      yLabel: 'y',
      series: [
        {
          name: 'gappy',
          points: [
            { x: 0.3, y: 1.7 },
            { x: 1.1, y: NaN },
            { x: 2.4, y: 1.2 },
            { x: 3.9, y: 1.9 },
          ],
        },
        { name: 'empty', points: [] },
        { name: 'flat', points: [0.5, 1.5, 2.5].map((x) => ({ x, y: 0.42 })) },
      ],
    };
    const svg = renderSvg(chart);
    checkWellFormed(svg);
    expect(svg).not.toMatch(/NaN/);
    const scene = layoutChart(chart);
    const paths = scene.shapes.filter((shape) => shape.kind === 'path' && shape.width > 1);
    // The lone point before the gap is a dot; the two after it a line; the flat series a line.
    expect(paths).toHaveLength(2 + 3 /* legend swatches */);
    expect(scene.shapes.some((shape) => shape.kind === 'circle')).toBe(true);

    const nothing = renderSvg({ title: 'none', xLabel: '', yLabel: '', series: [{ name: 'x', points: [] }] });
    checkWellFormed(nothing);
    expect(nothing).toContain('no data');

    const constant = layoutChart({
      title: 'constant',
      xLabel: 'x',
      yLabel: 'y',
      series: [{ name: 'c', points: [{ x: 5, y: 5 }] }],
    });
    expect(constant.xAxis.max - constant.xAxis.min).toBeGreaterThan(0);
    expect(constant.y(5)).toBeGreaterThan(constant.plot.top);
    expect(constant.y(5)).toBeLessThan(constant.plot.bottom);
  });

  it('rejects colours the PNG renderer cannot draw and sizes out of range', () => {
    const chart = validationChart(3);
    expect(() => renderSvg({ ...chart, series: [{ ...chart.series[0], color: 'red' }] })).toThrow(TypeError);
    expect(() => renderSvg({ ...chart, width: 20 })).toThrow(RangeError);
    expect(() => renderPng(chart, { scale: 0 })).toThrow(RangeError);
  });
});

describe('renderPng', () => {
  it('encodes a PNG that decodes to the chart: background, line colour on the line, title text', () => {
    const chart: Chart = {
      title: 'Loss',
      xLabel: 'step',
      yLabel: 'loss',
      series: [
        {
          name: 'train',
          color: '#d55e00',
          points: [
            { x: 0.5, y: 0.25 },
            { x: 9.5, y: 0.25 },
          ],
        },
        {
          name: 'eval',
          color: '#0072b2',
          points: [
            { x: 0.5, y: 0.75 },
            { x: 9.5, y: 0.75 },
          ],
          band: [
            { x: 0.5, low: 0.6, high: 0.9 },
            { x: 9.5, low: 0.6, high: 0.9 },
          ],
        },
      ],
    };
    const scale = 2;
    const png = decodePng(renderPng(chart, { scale }));
    const scene = layoutChart(chart);
    expect([png.width, png.height]).toEqual([640 * scale, 400 * scale]);
    expect(png.chunkTypes).toContain('IDAT');
    expect(pixelAt(png, 1, 1)).toEqual([255, 255, 255, 255]);
    expect(pixelAt(png, png.width - 2, png.height - 2)).toEqual([255, 255, 255, 255]);

    const middle = scene.x(5) * scale;
    expect(nearestToColor(png, middle, scene.y(0.25) * scale, 1, rgb('#d55e00'))).toBeLessThanOrEqual(2);
    expect(nearestToColor(png, middle, scene.y(0.75) * scale, 1, rgb('#0072b2'))).toBeLessThanOrEqual(2);
    // Inside the band, away from the line: the series colour faded towards white.
    const band = pixelAt(png, middle, scene.y(0.85) * scale);
    const [r, g, b] = rgb('#0072b2');
    expect(band[0]).toBeGreaterThan(r);
    expect(band[0]).toBeLessThan(255);
    expect(band[2]).toBeGreaterThan(b);
    expect(band[1]).toBeGreaterThan(g);
    // Between the two series the plot is white, but for gridlines: sample off the gridlines.
    expect(pixelAt(png, scene.x(5.5) * scale, scene.y(0.5) * scale + 3)).toEqual([255, 255, 255, 255]);

    // The title sits above the plot: dark text pixels there, centred.
    let dark = 0;
    for (let y = 0; y < scene.plot.top * scale; y++) {
      for (let x = 0; x < png.width; x++) if (pixelAt(png, x, y)[0] < 100) dark++;
    }
    expect(dark).toBeGreaterThan(50);
    // The y axis is a dark vertical line at plot.left.
    expect(pixelAt(png, scene.plot.left * scale, ((scene.plot.top + scene.plot.bottom) / 2) * scale)[0]).toBeLessThan(
      120,
    );
  });

  it('draws bands, NaN gaps, scatter, fits and empty charts at any scale', () => {
    const charts: Chart[] = [
      validationChart(4),
      scatterChart(5),
      { title: '', xLabel: '', yLabel: '', series: [] },
      {
        title: 'flat',
        xLabel: 'x',
        yLabel: 'y',
        width: 300,
        height: 200,
        series: [{ name: 'flat', points: [NaN, 1, 2, NaN, 3].map((y, x) => ({ x, y: Number.isNaN(y) ? y : 0.5 })) }],
      },
    ];
    for (const chart of charts) {
      for (const scale of [0.75, 1.5]) {
        const png = decodePng(renderPng(chart, { scale }));
        expect(png.width).toBe(Math.round((chart.width ?? 640) * scale));
        expect(png.height).toBe(Math.round((chart.height ?? 400) * scale));
      }
    }
  });

  it('draws the labels, Greek included, with the shipped font alone, as on a machine without fonts', () => {
    const chart: Chart = { title: 'ΔM σ', xLabel: 'ΔD', yLabel: 'ΔM', series: [] };
    const scene = layoutChart(chart);
    for (const systemFonts of [false, true]) {
      const png = decodePng(renderPng(chart, { scale: 1, systemFonts }));
      const inkIn = (x0: number, y0: number, x1: number, y1: number): number => {
        let count = 0;
        for (let y = Math.floor(y0); y < y1; y++) {
          for (let x = Math.floor(x0); x < x1; x++) if (pixelAt(png, x, y)[0] < 128) count++;
        }
        return count;
      };
      // The title's four glyphs, 36 units wide and centred, above its baseline: a missing glyph would leave it white.
      const titleBaseline = 12 + 7 * 1.5;
      expect(
        inkIn(320 - 18, titleBaseline - 12, 320 + 18, titleBaseline + 2),
        `systemFonts ${systemFonts}`,
      ).toBeGreaterThan(40);
      // The x label, under the plot.
      expect(inkIn(scene.plot.left, scene.plot.bottom + 18, scene.plot.right, scene.height)).toBeGreaterThan(15);
    }
    expect(() => renderPng(chart, { systemFonts: 'no' as unknown as boolean })).toThrow(TypeError);
  });
});

describe('renderReport', () => {
  it('writes one self-contained page with the tables and the charts inlined', () => {
    const svg = renderSvg(validationChart(6));
    const html = renderReport({
      title: 'Run <1> & co',
      summary: 'First paragraph\nsecond line.\n\nSecond <paragraph>.',
      tables: [
        {
          title: 'Final accuracy',
          columns: ['method', 'accuracy'],
          rows: [
            ['LoRA', 0.81234567],
            ['Bi<DoRA>', 0.8712],
          ],
        },
      ],
      charts: [{ title: 'Validation & accuracy', svg, png: 'validation accuracy.png' }],
    });
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).toContain('<title>Run &lt;1&gt; &amp; co</title>');
    expect(html).toContain('<p>First paragraph<br>\nsecond line.</p>');
    expect(html).toContain('<p>Second &lt;paragraph&gt;.</p>');
    expect(html).toContain('<th>method</th><th>accuracy</th>');
    expect(html).toContain('<td>Bi&lt;DoRA&gt;</td><td class="number">0.8712</td>');
    expect(html).toContain('<td class="number">0.8123</td>');
    expect(html).toContain('<h2>Validation &amp; accuracy</h2>');
    expect(html).toContain('href="validation%20accuracy.png"');
    expect(html).toContain('<svg xmlns="http://www.w3.org/2000/svg"');
    expect(html).not.toContain('<?xml');
    expect(html).toMatch(/<style>[^<]+<\/style>/);
    expect(html).not.toMatch(/<link|<script|src="http/);
    // Outside the doctype and void elements, the page balances like XML.
    const xmlish = html.replace('<!DOCTYPE html>', '').replace(/<(meta|br)\b[^>]*>/g, '');
    expect(checkWellFormed(xmlish)).toEqual(['html']);
  });
});

describe('writeReport', () => {
  it('writes the page, an SVG and a PNG per chart, and metrics.json, atomically', () => {
    const out = join(dir, 'run', 'report');
    const metrics = { accuracy: { LoRA: 0.81, BiDoRA: 0.87 }, seeds: [1, 2, 3] };
    const { files } = writeReport(out, {
      title: 'bidora demo',
      summary: 'Three methods, five seeds.',
      tables: [{ title: 'Accuracy', columns: ['method', 'mean'], rows: [['BiDoRA', 0.87]] }],
      charts: [validationChart(8), scatterChart(9), { ...scatterChart(10), title: 'ΔM vs ΔD' }],
      metrics,
    });
    const names = readdirSync(out).sort();
    expect(names).toEqual(
      [
        'report.html',
        'metrics.json',
        'validation-accuracy-mean-std.svg',
        'validation-accuracy-mean-std.png',
        'delta-m-vs-delta-d.svg',
        'delta-m-vs-delta-d.png',
        'delta-m-vs-delta-d-2.svg',
        'delta-m-vs-delta-d-2.png',
      ].sort(),
    );
    expect(files.map((file) => file.slice(out.length + 1)).sort()).toEqual(names);
    expect(JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'))).toEqual(metrics);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect(html).toContain('href="delta-m-vs-delta-d-2.png"');
    expect(html).toContain('<td>BiDoRA</td>');
    checkWellFormed(readFileSync(join(out, 'delta-m-vs-delta-d.svg'), 'utf8'));
    const png = decodePng(readFileSync(join(out, 'validation-accuracy-mean-std.png')));
    expect(png.width).toBe(1280);
    expect(existsSync(join(out, 'report.html'))).toBe(true);
  });

  it('refuses metrics that are not JSON before writing anything', () => {
    const out = join(dir, 'bad');
    expect(() => writeReport(out, { title: 't', summary: '', tables: [], charts: [], metrics: () => 1 })).toThrow(
      TypeError,
    );
    expect(existsSync(out)).toBe(false);
  });
});
