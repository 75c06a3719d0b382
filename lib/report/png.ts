// Renders a chart to PNG: its SVG drawn by resvg, with a monospace font that ships with the package, so the labels
// read the same on a machine that has no fonts installed.
import { type Chart, checkChart } from './chart';
import { renderSvg } from './svg';

export interface PngOptions {
  /** Pixels per chart unit; 2 when absent, so a 640 × 400 chart becomes 1280 × 800 pixels. */
  scale?: number;
  /**
   * Whether installed fonts back the shipped one up for characters it lacks (CJK, say); true when absent. False draws
   * with the shipped font alone, the same pixels on every machine, and skips scanning the system's fonts.
   */
  systemFonts?: boolean;
}

/** The most pixels one image may have: 64 M pixels are 256 MiB of RGBA. */
const MAX_PIXELS = 64 * 1024 * 1024;

/**
 * Roboto Mono (Apache 2.0) from the roboto-mono-webfont package: first in the SVG's font list, with Greek for ΔM and σ,
 * and the 0.6 em advance that the layout measures text with. Installed fonts stand behind it for other scripts.
 */
const FONT_FILE = 'roboto-mono-webfont/fonts/RobotoMono-Regular.ttf';
const FONT_FAMILY = 'Roboto Mono';

type ResvgModule = typeof import('@resvg/resvg-js');
let resvg: ResvgModule | undefined;

/**
 * resvg, loaded on first use: its binary comes from an optional per-platform package, so on a platform without one
 * only drawing a PNG fails, not loading the CLI.
 */
function loadResvg(): ResvgModule {
  if (resvg !== undefined) return resvg;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a synchronous load on first use is the point
    resvg = require('@resvg/resvg-js') as ResvgModule;
  } catch (error) {
    throw new Error(
      `renderPng: @resvg/resvg-js has no binary for ${process.platform}-${process.arch} here ` +
        `(${(error as Error).message.split('\n')[0]}); the SVG charts are unaffected`,
    );
  }
  return resvg;
}

/** The chart as PNG bytes (8-bit RGBA), drawn from the same SVG that `renderSvg` writes. */
export function renderPng(chart: Chart, options: PngOptions = {}): Buffer {
  const scale = options.scale ?? 2;
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0 || scale > 16) {
    throw new RangeError(`renderPng: scale must be a number in (0, 16], got ${scale}`);
  }
  const systemFonts = options.systemFonts ?? true;
  if (typeof systemFonts !== 'boolean') {
    throw new TypeError(`renderPng: systemFonts must be a boolean, got ${typeof systemFonts}`);
  }
  const size = checkChart(chart);
  // resvg rounds a fractional size up.
  const width = Math.ceil(size.width * scale);
  const height = Math.ceil(size.height * scale);
  if (width * height > MAX_PIXELS) {
    throw new RangeError(`renderPng: ${width} × ${height} pixels is more than ${MAX_PIXELS}; lower the scale`);
  }
  const { Resvg } = loadResvg();
  const image = new Resvg(renderSvg(chart), {
    fitTo: { mode: 'zoom', value: scale },
    font: {
      fontFiles: [require.resolve(FONT_FILE)],
      loadSystemFonts: systemFonts,
      defaultFontFamily: FONT_FAMILY,
      monospaceFamily: FONT_FAMILY,
    },
  }).render();
  return image.asPng();
}
