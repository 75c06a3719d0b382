// Progress reporting: nothing (the default for library calls), a logger of the caller's, or what the command line
// uses: a one-line bar on a terminal, JSON lines otherwise (CI logs, pipes).

/** 'none' (default): silent. 'bar' or 'json' on stderr; 'auto': the bar on a terminal, JSON lines otherwise. */
export type LogMode = 'auto' | 'bar' | 'json' | 'none';

/** Receives one record per step and per evaluation: `console`, pino and winston loggers all fit. */
export interface Logger {
  /** Called after each step and each evaluation; the record adds `elapsedSeconds` since training started. */
  info(record: ProgressRecord): void;
}

/**
 * One line of progress: the step's record (loss, learning rate, gradient norm, ...) or an evaluation's (evalLoss and
 * the task's metrics), flattened to numbers and strings.
 */
export interface ProgressRecord {
  /** Optimizer updates done. */
  step: number;
  /** Updates the run will make. */
  totalSteps: number;
  /** Whatever else the record holds, by name. */
  [key: string]: number | string | undefined;
}

const LOG_MODES: readonly string[] = ['auto', 'bar', 'json', 'none'];

export class Progress {
  readonly #mode: Exclude<LogMode, 'auto'> | Logger;
  readonly #stream: NodeJS.WriteStream;
  readonly #started = Date.now();
  #lastDraw = 0;

  constructor(log: LogMode | Logger = 'none', stream: NodeJS.WriteStream = process.stderr) {
    const isLogger = typeof log === 'object' && log !== null && typeof (log as Logger).info === 'function';
    if (!isLogger && !LOG_MODES.includes(log as string)) {
      throw new TypeError(
        `log must be 'auto', 'bar', 'json', 'none' or an object with an info method, got ${String(log)}`,
      );
    }
    this.#stream = stream;
    this.#mode = log === 'auto' ? (stream.isTTY ? 'bar' : 'json') : (log as Exclude<LogMode, 'auto'> | Logger);
  }

  update(record: ProgressRecord, force = false): void {
    if (this.#mode === 'none') return;
    if (typeof this.#mode === 'object') {
      this.#mode.info({ ...record, elapsedSeconds: (Date.now() - this.#started) / 1000 });
      return;
    }
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
