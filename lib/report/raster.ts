// An RGBA canvas that draws anti-aliased strokes, discs, polygons and bitmap text by exact pixel coverage.
import { parseColor } from './chart';
import { glyph, GLYPH_ADVANCE, GLYPH_ASCENT, textWidth } from './font';

type Point = readonly [number, number];

/**
 * Coverage (0..1) of the pixels in a bounding box. A shape is first drawn into a mask and then composited once, so
 * where the segments of a polyline or the dots of a glyph meet, pixels are not blended twice.
 */
class Mask {
  readonly coverage: Float32Array;
  readonly width: number;
  readonly height: number;

  constructor(
    readonly left: number,
    readonly top: number,
    right: number,
    bottom: number,
  ) {
    this.width = Math.max(0, right - left);
    this.height = Math.max(0, bottom - top);
    this.coverage = new Float32Array(this.width * this.height);
  }

  /** Keeps the larger coverage: overlapping parts of one stroke are not darker. */
  max(px: number, py: number, value: number): void {
    const i = (py - this.top) * this.width + (px - this.left);
    if (value > this.coverage[i]) this.coverage[i] = value;
  }

  /** Adds coverage: shapes that only touch (a glyph's dots) sum to a full pixel. */
  add(px: number, py: number, value: number): void {
    const i = (py - this.top) * this.width + (px - this.left);
    this.coverage[i] = Math.min(1, this.coverage[i] + value);
  }
}

export class Canvas {
  readonly pixels: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
    background: string,
  ) {
    this.pixels = new Uint8Array(width * height * 4);
    const [r, g, b] = parseColor(background);
    for (let i = 0; i < this.pixels.length; i += 4) {
      this.pixels[i] = r;
      this.pixels[i + 1] = g;
      this.pixels[i + 2] = b;
      this.pixels[i + 3] = 255;
    }
  }

  /** A mask over the canvas pixels that the box [x0, x1) × [y0, y1) touches, clipped to the canvas. */
  #mask(x0: number, y0: number, x1: number, y1: number): Mask {
    const left = clamp(Math.floor(x0), 0, this.width);
    const top = clamp(Math.floor(y0), 0, this.height);
    return new Mask(left, top, clamp(Math.ceil(x1), left, this.width), clamp(Math.ceil(y1), top, this.height));
  }

  /** Source-over blending of `color` at `opacity` through the mask. */
  #composite(mask: Mask, color: string, opacity: number): void {
    const [r, g, b] = parseColor(color);
    for (let row = 0; row < mask.height; row++) {
      for (let column = 0; column < mask.width; column++) {
        const alpha = mask.coverage[row * mask.width + column] * opacity;
        if (alpha <= 0) continue;
        const i = ((mask.top + row) * this.width + mask.left + column) * 4;
        const p = this.pixels;
        p[i] = Math.round(r * alpha + p[i] * (1 - alpha));
        p[i + 1] = Math.round(g * alpha + p[i + 1] * (1 - alpha));
        p[i + 2] = Math.round(b * alpha + p[i + 2] * (1 - alpha));
        p[i + 3] = Math.round(255 * alpha + p[i + 3] * (1 - alpha));
      }
    }
  }

  /** An axis-aligned rectangle, its edges anti-aliased by the fraction of each pixel they cover. */
  fillRect(x: number, y: number, width: number, height: number, color: string, opacity = 1): void {
    const mask = this.#mask(x, y, x + width, y + height);
    addBox(mask, x, y, x + width, y + height);
    this.#composite(mask, color, opacity);
  }

  /**
   * A polyline `width` pixels wide with round joins and caps. Each pixel's coverage comes from its centre's distance
   * to the nearest segment: fully inside a half-pixel within the edge, fading linearly across the edge's pixel.
   */
  strokePath(points: readonly Point[], width: number, color: string, opacity = 1, dash?: [number, number]): void {
    if (points.length === 0) return;
    const half = Math.max(width, 1) / 2;
    // Lines thinner than a pixel draw one pixel wide, fainter in proportion.
    const strength = Math.min(1, width);
    const [minX, minY, maxX, maxY] = bounds(points);
    const mask = this.#mask(minX - half - 1, minY - half - 1, maxX + half + 1, maxY + half + 1);
    const segments = dash ? dashed(points, dash) : [points];
    for (const piece of segments) {
      for (let i = 0; i + 1 < piece.length; i++) strokeSegment(mask, piece[i], piece[i + 1], half, strength);
      if (piece.length === 1) strokeSegment(mask, piece[0], piece[0], half, strength);
    }
    this.#composite(mask, color, opacity);
  }

  /** A filled disc. */
  fillCircle(cx: number, cy: number, radius: number, color: string, opacity = 1): void {
    const mask = this.#mask(cx - radius - 1, cy - radius - 1, cx + radius + 1, cy + radius + 1);
    for (let py = mask.top; py < mask.top + mask.height; py++) {
      for (let px = mask.left; px < mask.left + mask.width; px++) {
        const distance = Math.hypot(px + 0.5 - cx, py + 0.5 - cy);
        mask.max(px, py, clamp(radius + 0.5 - distance, 0, 1));
      }
    }
    this.#composite(mask, color, opacity);
  }

  /**
   * A filled polygon (even-odd rule), anti-aliased by scanning each pixel row at four heights and covering every span
   * between edge crossings by the exact fraction of each pixel it spans.
   */
  fillPolygon(points: readonly Point[], color: string, opacity = 1): void {
    if (points.length < 3) return;
    const mask = this.#mask(...bounds(points));
    const SAMPLES = 4;
    const crossings: number[] = [];
    for (let py = mask.top; py < mask.top + mask.height; py++) {
      for (let sample = 0; sample < SAMPLES; sample++) {
        const sy = py + (sample + 0.5) / SAMPLES;
        crossings.length = 0;
        for (let i = 0; i < points.length; i++) {
          const [x0, y0] = points[i];
          const [x1, y1] = points[(i + 1) % points.length];
          // Half-open in y, so a vertex shared by two edges counts once.
          if ((y0 <= sy && sy < y1) || (y1 <= sy && sy < y0)) crossings.push(x0 + ((sy - y0) / (y1 - y0)) * (x1 - x0));
        }
        crossings.sort((a, b) => a - b);
        for (let i = 0; i + 1 < crossings.length; i += 2) {
          addSpan(mask, py, crossings[i], crossings[i + 1], 1 / SAMPLES);
        }
      }
    }
    this.#composite(mask, color, opacity);
  }

  /**
   * `text` in the bitmap font, each font dot a `size`-pixel square; (x, y) is the anchor on the baseline. Vertical
   * text is turned -90° about the anchor and reads upward.
   */
  drawText(
    text: string,
    x: number,
    y: number,
    size: number,
    color: string,
    anchor: 'start' | 'middle' | 'end',
    vertical = false,
  ): void {
    const width = textWidth(text, size);
    const start = anchor === 'start' ? 0 : anchor === 'middle' ? -width / 2 : -width;
    // Text-local box: u along the baseline from the anchor, v downward from the baseline (descenders reach +2 dots).
    const [u0, u1, v0, v1] = [start, start + width, -GLYPH_ASCENT * size, 2 * size];
    const mask = vertical ? this.#mask(x + v0, y - u1, x + v1, y - u0) : this.#mask(x + u0, y + v0, x + u1, y + v1);
    [...text].forEach((char, index) => {
      for (const [column, row] of glyph(char)) {
        const u = start + (index * GLYPH_ADVANCE + column) * size;
        const v = (row - GLYPH_ASCENT) * size;
        if (vertical) addBox(mask, x + v, y - u - size, x + v + size, y - u);
        else addBox(mask, x + u, y + v, x + u + size, y + v + size);
      }
    });
    this.#composite(mask, color, 1);
  }
}

/** [minX, minY, maxX, maxY] of the points, without spreading them into Math.min's arguments (long series). */
function bounds(points: readonly Point[]): [number, number, number, number] {
  const box: [number, number, number, number] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of points) {
    box[0] = Math.min(box[0], x);
    box[1] = Math.min(box[1], y);
    box[2] = Math.max(box[2], x);
    box[3] = Math.max(box[3], y);
  }
  return box;
}

function clamp(value: number, low: number, high: number): number {
  return value < low ? low : value > high ? high : value;
}

/** Adds to each pixel the area of it that the box [x0, x1) × [y0, y1) covers. */
function addBox(mask: Mask, x0: number, y0: number, x1: number, y1: number): void {
  const top = Math.max(mask.top, Math.floor(y0));
  const bottom = Math.min(mask.top + mask.height, Math.ceil(y1));
  const left = Math.max(mask.left, Math.floor(x0));
  const right = Math.min(mask.left + mask.width, Math.ceil(x1));
  for (let py = top; py < bottom; py++) {
    const coverY = Math.min(y1, py + 1) - Math.max(y0, py);
    for (let px = left; px < right; px++) {
      const coverX = Math.min(x1, px + 1) - Math.max(x0, px);
      if (coverX > 0 && coverY > 0) mask.add(px, py, coverX * coverY);
    }
  }
}

/** Adds `weight` times the fraction of each pixel in row `py` that the span [x0, x1) covers. */
function addSpan(mask: Mask, py: number, x0: number, x1: number, weight: number): void {
  const left = Math.max(mask.left, Math.floor(x0));
  const right = Math.min(mask.left + mask.width, Math.ceil(x1));
  for (let px = left; px < right; px++) {
    const cover = Math.min(x1, px + 1) - Math.max(x0, px);
    if (cover > 0) mask.add(px, py, cover * weight);
  }
}

/** Marks the pixels within `half` (plus the anti-aliasing fringe) of the segment from a to b. */
function strokeSegment(mask: Mask, a: Point, b: Point, half: number, strength: number): void {
  const reach = half + 1;
  const left = Math.max(mask.left, Math.floor(Math.min(a[0], b[0]) - reach));
  const right = Math.min(mask.left + mask.width, Math.ceil(Math.max(a[0], b[0]) + reach));
  const top = Math.max(mask.top, Math.floor(Math.min(a[1], b[1]) - reach));
  const bottom = Math.min(mask.top + mask.height, Math.ceil(Math.max(a[1], b[1]) + reach));
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  const lengthSquared = dx * dx + dy * dy;
  for (let py = top; py < bottom; py++) {
    for (let px = left; px < right; px++) {
      const cx = px + 0.5 - a[0];
      const cy = py + 0.5 - a[1];
      const t = lengthSquared === 0 ? 0 : clamp((cx * dx + cy * dy) / lengthSquared, 0, 1);
      const distance = Math.hypot(cx - t * dx, cy - t * dy);
      const coverage = clamp(half + 0.5 - distance, 0, 1) * strength;
      if (coverage > 0) mask.max(px, py, coverage);
    }
  }
}

/** The pieces of a polyline that a [on, off] dash pattern keeps, measured along the line from its start. */
function dashed(points: readonly Point[], [on, off]: [number, number]): Point[][] {
  if (!(on > 0) || !(off >= 0)) return [points.slice()];
  const pieces: Point[][] = [];
  let current: Point[] = [points[0]];
  let phase = 0; // distance into the current on+off period
  for (let i = 0; i + 1 < points.length; i++) {
    const [ax, ay] = points[i];
    const [bx, by] = points[i + 1];
    const length = Math.hypot(bx - ax, by - ay);
    let travelled = 0;
    while (travelled < length) {
      const drawing = phase < on;
      const step = Math.min(length - travelled, (drawing ? on : on + off) - phase);
      travelled += step;
      phase += step;
      const at: Point = [ax + ((bx - ax) * travelled) / length, ay + ((by - ay) * travelled) / length];
      if (drawing) current.push(at);
      if (phase >= on + off) phase = 0;
      if (drawing && phase >= on) {
        pieces.push(current);
        current = [];
      } else if (!drawing && phase === 0) {
        current = [at];
      }
    }
  }
  if (current.length > 1) pieces.push(current);
  return pieces;
}
