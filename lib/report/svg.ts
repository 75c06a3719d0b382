// Renders a chart to a standalone SVG document; the PNG renderer draws this same document.
import { type Chart } from './chart';
import { layoutChart, type Point, type Shape } from './scene';

/**
 * Monospace fonts advance 0.6 em, so 10 units per size give the 6-unit advance the layout measures text with. Roboto
 * Mono comes first because the PNG renderer ships it (see png.ts): a viewer that has it shows what the PNG shows.
 */
const FONT_FAMILY = "'Roboto Mono', 'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace";
const FONT_UNITS = 10;

/** The chart as an SVG document (with an XML declaration); it uses no ids, so several can share one HTML page. */
export function renderSvg(chart: Chart): string {
  const scene = layoutChart(chart);
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${scene.width}" height="${scene.height}" ` +
      `viewBox="0 0 ${scene.width} ${scene.height}" font-family="${escapeXml(FONT_FAMILY)}" role="img">`,
    `<title>${escapeXml(chart.title)}</title>`,
    `<rect width="${scene.width}" height="${scene.height}" fill="${scene.background}"/>`,
    ...scene.shapes.map(shapeToSvg),
    '</svg>',
  ];
  return lines.join('\n') + '\n';
}

function shapeToSvg(shape: Shape): string {
  const alpha = (opacity: number, attribute: string): string =>
    opacity < 1 ? ` ${attribute}="${number(opacity)}"` : '';
  switch (shape.kind) {
    case 'rect':
      return (
        `<rect x="${number(shape.x)}" y="${number(shape.y)}" width="${number(shape.width)}" ` +
        `height="${number(shape.height)}" fill="${shape.color}"${alpha(shape.opacity, 'fill-opacity')}/>`
      );
    case 'path': {
      const dash = shape.dash ? ` stroke-dasharray="${shape.dash.map(number).join(' ')}"` : '';
      return (
        `<polyline points="${points(shape.points)}" fill="none" stroke="${shape.color}" ` +
        `stroke-width="${number(shape.width)}" stroke-linejoin="round" stroke-linecap="round"` +
        `${dash}${alpha(shape.opacity, 'stroke-opacity')}/>`
      );
    }
    case 'area':
      return (
        `<polygon points="${points(shape.points)}" fill="${shape.color}" fill-rule="evenodd"` +
        `${alpha(shape.opacity, 'fill-opacity')}/>`
      );
    case 'circle':
      return (
        `<circle cx="${number(shape.x)}" cy="${number(shape.y)}" r="${number(shape.radius)}" ` +
        `fill="${shape.color}"${alpha(shape.opacity, 'fill-opacity')}/>`
      );
    case 'text': {
      const [x, y] = [number(shape.x), number(shape.y)];
      const rotate = shape.vertical ? ` transform="rotate(-90 ${x} ${y})"` : '';
      return (
        `<text x="${x}" y="${y}" font-size="${number(shape.size * FONT_UNITS)}" fill="${shape.color}" ` +
        `text-anchor="${shape.anchor}"${rotate} xml:space="preserve">${escapeXml(shape.text)}</text>`
      );
    }
  }
}

function points(list: readonly Point[]): string {
  return list.map(([x, y]) => `${number(x)},${number(y)}`).join(' ');
}

/** Two decimals are a hundredth of a unit, finer than any screen shows; no '-0'. */
function number(value: number): string {
  const rounded = Math.round(value * 100) / 100;
  return String(rounded === 0 ? 0 : rounded);
}

// Control characters other than tab and newlines, lone surrogates, U+FFFE and U+FFFF: XML 1.0 has no way to write them.
const FORBIDDEN_IN_XML =
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * Text for XML content or a quoted attribute: the five special characters as entities, and the characters XML 1.0
 * cannot hold dropped.
 */
export function escapeXml(text: string): string {
  return text
    .replace(FORBIDDEN_IN_XML, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}
