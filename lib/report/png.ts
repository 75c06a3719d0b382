// Renders a chart to PNG: the scene rasterised on an RGBA canvas, then encoded with per-row filters and zlib.
import { deflateSync } from 'node:zlib';

import { type Chart } from './chart';
import { Canvas } from './raster';
import { layoutChart, type Scene } from './scene';

export interface PngOptions {
  /** Pixels per chart unit; 2 when absent, so a 640 × 400 chart becomes 1280 × 800 pixels. */
  scale?: number;
}

/** The most pixels one image may have: 64 M pixels are 256 MiB of RGBA. */
const MAX_PIXELS = 64 * 1024 * 1024;

/** The chart as PNG bytes, drawn from the same layout as `renderSvg`. */
export function renderPng(chart: Chart, options: PngOptions = {}): Buffer {
  const scale = options.scale ?? 2;
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0 || scale > 16) {
    throw new RangeError(`renderPng: scale must be a number in (0, 16], got ${scale}`);
  }
  const canvas = rasterize(layoutChart(chart), scale);
  return encodePng(canvas.width, canvas.height, canvas.pixels);
}

/** Draws the scene's shapes in order on a canvas `scale` pixels per chart unit. */
export function rasterize(scene: Scene, scale: number): Canvas {
  const width = Math.max(1, Math.round(scene.width * scale));
  const height = Math.max(1, Math.round(scene.height * scale));
  if (width * height > MAX_PIXELS) {
    throw new RangeError(`renderPng: ${width} × ${height} pixels is more than ${MAX_PIXELS}; lower the scale`);
  }
  const canvas = new Canvas(width, height, scene.background);
  const at = (points: readonly (readonly [number, number])[]): [number, number][] =>
    points.map(([x, y]) => [x * scale, y * scale]);
  for (const shape of scene.shapes) {
    switch (shape.kind) {
      case 'rect':
        canvas.fillRect(
          shape.x * scale,
          shape.y * scale,
          shape.width * scale,
          shape.height * scale,
          shape.color,
          shape.opacity,
        );
        break;
      case 'path': {
        const dash = shape.dash && ([shape.dash[0] * scale, shape.dash[1] * scale] as [number, number]);
        canvas.strokePath(at(shape.points), shape.width * scale, shape.color, shape.opacity, dash);
        break;
      }
      case 'area':
        canvas.fillPolygon(at(shape.points), shape.color, shape.opacity);
        break;
      case 'circle':
        canvas.fillCircle(shape.x * scale, shape.y * scale, shape.radius * scale, shape.color, shape.opacity);
        break;
      case 'text':
        canvas.drawText(
          shape.text,
          shape.x * scale,
          shape.y * scale,
          shape.size * scale,
          shape.color,
          shape.anchor,
          shape.vertical,
        );
        break;
    }
  }
  return canvas;
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** 8-bit RGBA pixels, rows top to bottom, as a PNG file (colour type 6, no interlacing). */
export function encodePng(width: number, height: number, rgba: Uint8Array): Buffer {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`encodePng: width and height must be positive integers, got ${width} × ${height}`);
  }
  if (rgba.length !== width * height * 4) {
    throw new RangeError(`encodePng: expected ${width * height * 4} bytes of RGBA, got ${rgba.length}`);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bits per channel
  header[9] = 6; // RGBA
  header[10] = 0; // deflate
  header[11] = 0; // adaptive filtering
  header[12] = 0; // no interlace
  return Buffer.concat([
    SIGNATURE,
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(filterRows(width, height, rgba))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * Each row prefixed by the filter that makes it smallest by libpng's heuristic (the least sum of the filtered bytes
 * read as signed): Up turns repeated rows to zeros, Sub does the same along a flat row.
 */
function filterRows(width: number, height: number, rgba: Uint8Array): Buffer {
  const stride = width * 4;
  const out = Buffer.alloc((stride + 1) * height);
  const candidates = Array.from({ length: 5 }, () => Buffer.alloc(stride));
  const zeros = new Uint8Array(stride);
  for (let row = 0; row < height; row++) {
    const line = rgba.subarray(row * stride, (row + 1) * stride);
    const above = row > 0 ? rgba.subarray((row - 1) * stride, row * stride) : zeros;
    let best = 0;
    let bestCost = Infinity;
    for (let filter = 0; filter < 5; filter++) {
      const target = candidates[filter];
      filterRow(filter, line, above, target);
      let cost = 0;
      for (let i = 0; i < stride; i++) cost += target[i] < 128 ? target[i] : 256 - target[i];
      if (cost < bestCost) [best, bestCost] = [filter, cost];
    }
    out[row * (stride + 1)] = best;
    candidates[best].copy(out, row * (stride + 1) + 1);
  }
  return out;
}

/** One row through one PNG filter (None, Sub, Up, Average, Paeth); the bytes wrap modulo 256 as they are stored. */
function filterRow(filter: number, line: Uint8Array, above: Uint8Array, target: Uint8Array): void {
  const stride = line.length;
  const BPP = 4; // bytes per pixel: the left neighbour is four bytes back
  switch (filter) {
    case 0:
      target.set(line);
      break;
    case 1:
      for (let i = 0; i < stride; i++) target[i] = line[i] - (i >= BPP ? line[i - BPP] : 0);
      break;
    case 2:
      for (let i = 0; i < stride; i++) target[i] = line[i] - above[i];
      break;
    case 3:
      for (let i = 0; i < stride; i++) target[i] = line[i] - (((i >= BPP ? line[i - BPP] : 0) + above[i]) >> 1);
      break;
    case 4:
      for (let i = 0; i < stride; i++) {
        const left = i >= BPP ? line[i - BPP] : 0;
        const upperLeft = i >= BPP ? above[i - BPP] : 0;
        target[i] = line[i] - paeth(left, above[i], upperLeft);
      }
      break;
  }
}

function paeth(left: number, up: number, upperLeft: number): number {
  const estimate = left + up - upperLeft;
  const toLeft = Math.abs(estimate - left);
  const toUp = Math.abs(estimate - up);
  const toUpperLeft = Math.abs(estimate - upperLeft);
  return toLeft <= toUp && toLeft <= toUpperLeft ? left : toUp <= toUpperLeft ? up : upperLeft;
}

function chunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  data.copy(out, 8);
  // The CRC covers the type and the data, not the length.
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (ISO 3309, the one PNG and zlib use). */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
