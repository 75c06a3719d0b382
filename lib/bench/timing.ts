// A small timing loop for the microbenchmarks: calibrated batches, discarded warm-up, functions sampled interleaved,
// the median of the samples.

/** How long `timeInterleaved` and `timeCall` sample. */
export interface TimingOptions {
  /** Keep sampling until this much time has been spent on samples; at least `minSamples` are taken either way. */
  minSeconds: number;
  /** Samples (calibrated batches) taken of each function at the least, however long they take. */
  minSamples: number;
  /**
   * Called once at the end of each batch, inside the timed span: waits for work that `fn` only queued (GPU kernels),
   * so that a sample measures it.
   */
  sync?: () => void;
}

/**
 * A batch lasts at least this long, so the timer's resolution (about a microsecond) stays under 0.1% of a sample
 * even when one call takes microseconds.
 */
const MIN_BATCH_SECONDS = 1e-3;
/** A call that a million repeats cannot stretch to a millisecond is timed as it is rather than looping forever. */
const MAX_BATCH_CALLS = 1 << 20;

/** The median of `values`; NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * The median seconds of one call of each of `fns`, sampled interleaved: one batch of each in turn, the order rotating,
 * until each has `minSamples` samples and `minSeconds` of them. A shared machine's speed drifts from one second to the
 * next; interleaving at the batch lets every function see the same drift, so their ratios hold where their times do
 * not. The calls that size each batch come first and are not counted: they are also the warm-up (first-touch page
 * faults, allocator caches, the JIT). The median rather than the mean, because interruptions only ever add time.
 */
export function timeInterleaved<Name extends string>(
  fns: Record<Name, () => void>,
  options: TimingOptions,
): Record<Name, number> {
  const { minSeconds, minSamples, sync } = options;
  const names = Object.keys(fns) as Name[];
  if (names.length === 0 || names.some((name) => typeof fns[name] !== 'function')) {
    throw new TypeError('timeInterleaved: fns must map names to functions');
  }
  if (!(minSeconds >= 0 && Number.isFinite(minSeconds))) {
    throw new RangeError(`timeInterleaved: minSeconds must be a finite number ≥ 0, got ${minSeconds}`);
  }
  if (!Number.isInteger(minSamples) || minSamples < 1) {
    throw new RangeError(`timeInterleaved: minSamples must be an integer ≥ 1, got ${minSamples}`);
  }
  const batch = (fn: () => void, calls: number): number => {
    const start = performance.now();
    for (let call = 0; call < calls; call++) fn();
    sync?.();
    return (performance.now() - start) / 1e3;
  };
  const calls = {} as Record<Name, number>;
  for (const name of names) {
    calls[name] = 1;
    while (calls[name] < MAX_BATCH_CALLS && batch(fns[name], calls[name]) < MIN_BATCH_SECONDS) calls[name] *= 2;
  }

  const samples = Object.fromEntries(names.map((name) => [name, [] as number[]])) as Record<Name, number[]>;
  const spent = Object.fromEntries(names.map((name) => [name, 0])) as Record<Name, number>;
  const done = (name: Name): boolean => samples[name].length >= minSamples && spent[name] >= minSeconds;
  for (let turn = 0; !names.every(done); turn++) {
    for (let index = 0; index < names.length; index++) {
      const name = names[(index + turn) % names.length];
      const seconds = batch(fns[name], calls[name]);
      spent[name] += seconds;
      samples[name].push(seconds / calls[name]);
    }
  }
  return Object.fromEntries(names.map((name) => [name, median(samples[name])])) as Record<Name, number>;
}

/** The median seconds of one call of `fn`, as `timeInterleaved` times each of its functions. */
export function timeCall(fn: () => void, options: TimingOptions): number {
  if (typeof fn !== 'function') throw new TypeError('timeCall: fn must be a function');
  return timeInterleaved({ fn }, options).fn;
}
