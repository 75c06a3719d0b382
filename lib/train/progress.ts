// Progress reporting: a one-line bar on a terminal, JSON lines otherwise (CI logs, pipes), or nothing.

export type LogMode = 'auto' | 'bar' | 'json' | 'none';

export interface ProgressRecord {
  step: number;
  totalSteps: number;
  [key: string]: number | string | undefined;
}

export class Progress {
  readonly #mode: Exclude<LogMode, 'auto'>;
  readonly #stream: NodeJS.WriteStream;
  readonly #started = Date.now();
  #lastDraw = 0;

  constructor(mode: LogMode = 'auto', stream: NodeJS.WriteStream = process.stderr) {
    this.#stream = stream;
    this.#mode = mode === 'auto' ? (stream.isTTY ? 'bar' : 'json') : mode;
  }

  update(record: ProgressRecord, force = false): void {
    if (this.#mode === 'none') return;
    if (this.#mode === 'json') {
      this.#stream.write(JSON.stringify({ ...record, elapsedSeconds: (Date.now() - this.#started) / 1000 }) + '\n');
      return;
    }
    // Redrawing a terminal line more often than ~10 times a second costs more than it shows.
    const now = Date.now();
    if (!force && now - this.#lastDraw < 100 && record.step < record.totalSteps) return;
    this.#lastDraw = now;
    const fraction = record.totalSteps > 0 ? Math.min(1, record.step / record.totalSteps) : 0;
    const width = 24;
    const filled = Math.round(fraction * width);
    const elapsed = (now - this.#started) / 1000;
    const remaining = fraction > 0 ? (elapsed / fraction) * (1 - fraction) : 0;
    const details = Object.entries(record)
      .filter(([key, value]) => key !== 'step' && key !== 'totalSteps' && value !== undefined)
      .map(([key, value]) => `${key} ${typeof value === 'number' ? formatNumber(value) : value}`)
      .join('  ');
    this.#stream.write(
      `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${record.step}/${record.totalSteps} ` +
        `${elapsed.toFixed(0)}s<${remaining.toFixed(0)}s  ${details}\u001b[K`,
    );
  }

  /** Ends the bar's line. */
  done(): void {
    if (this.#mode === 'bar') this.#stream.write('\n');
  }
}

function formatNumber(value: number): string {
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(1) : value.toPrecision(4);
}
