// Text generation for causal language models as transformers' generate() does it: greedy decoding, sampling
// (temperature, top-k, top-p), beam search with transformers' scoring, stopping at end-of-sequence tokens, left-padded
// batches, a key/value cache (or a full recomputation per token), tokens streamed to a callback, cancellation, and
// the event loop free between tokens. The search itself runs on the host in float64 from each step's logits.
import { noGrad } from '../autograd';
import { Random, freshSeed } from '../random';
import { tidy } from '../tensor';
import type { CausalLM, DecoderPass } from './decoder';
import { KeyValueCache } from './decoder';
import { type IdBatch, type IdMatrix, expectSameShape, maskTensor, toIdBatch } from './inputs';

/** The prompts `generate` continues. */
export interface GenerateInputs {
  /** [batch, seq] prompt ids, rows of different lengths padded on the left. */
  inputIds: IdMatrix;
  /**
   * [batch, seq], 1 for tokens and 0 for padding. When omitted it is inferred as transformers does: 0 where the
   * ids equal the pad token (when there is one and it is not an end-of-sequence token), 1 elsewhere.
   */
  attentionMask?: IdMatrix;
}

/** One step of streamed output: the token each row got (the pad token for rows already finished). */
export interface TokenEvent {
  /** 0 for the first new token. */
  step: number;
  /** The new token of each row, in batch order (with beams: of each returned sequence). */
  tokens: number[];
  /** Whether each row has ended (its end-of-sequence token included). */
  finished: boolean[];
}

/**
 * How `generate` decodes, with transformers' names in camelCase and its defaults. Unknown keys are a TypeError;
 * values out of range a RangeError naming the option.
 */
export interface GenerateOptions {
  /** New tokens at most per row: generation_config.json's max_new_tokens, else 20. */
  maxNewTokens?: number;
  /** Sample the next token from the (processed) softmax instead of taking the most likely one. Default false. */
  doSample?: boolean;
  /** Logits are divided by it before sampling; > 0, default 1. */
  temperature?: number;
  /** Sampling keeps the k most likely tokens (ties at the k-th kept, as transformers); default: all. */
  topK?: number;
  /** Sampling keeps the smallest set of most likely tokens whose probability reaches p; in (0, 1], default 1. */
  topP?: number;
  /** Seed of the sampling draws: the same seed gives the same tokens on every run. Default: a fresh seed. */
  seed?: number;
  /** Beam search with this many beams when > 1 (not with doSample). Default 1: greedy or sampling. */
  numBeams?: number;
  /** Beam search ranks finished beams by sum of log-probabilities / length^lengthPenalty. Default 1. */
  lengthPenalty?: number;
  /** Beam search stops a row: true when numBeams beams finished, false (default) by transformers' heuristic. */
  earlyStopping?: boolean | 'never';
  /** Tokens that end a sequence, replacing the model's; null for none (always maxNewTokens). */
  eosTokenId?: number | readonly number[] | null;
  /** What finished rows are padded with; default the model's pad token, else its first eos token. */
  padTokenId?: number;
  /** Keep keys and values between steps (default true); false recomputes every position at every step. */
  useCache?: boolean;
  /** Called after every step with each row's new token (greedy and sampling; not with beam search). */
  onToken?: (event: TokenEvent) => void;
  /** Aborts generation between tokens; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** What `generate` resolves to, as transformers' generate returns it. */
export interface GenerateOutput {
  /** Each row's prompt (padding included) followed by its new tokens; finished rows padded to the longest. */
  sequences: number[][];
  /** Beam search: each returned sequence's score (its length-normalised log-probability), as sequences_scores. */
  sequencesScores?: number[];
}

const OPTION_NAMES = new Set([
  'maxNewTokens',
  'doSample',
  'temperature',
  'topK',
  'topP',
  'seed',
  'numBeams',
  'lengthPenalty',
  'earlyStopping',
  'eosTokenId',
  'padTokenId',
  'useCache',
  'onToken',
  'signal',
]);

interface Settings {
  maxNewTokens: number;
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  numBeams: number;
  lengthPenalty: number;
  earlyStopping: boolean | 'never';
  eos: number[];
  pad: number | undefined;
  useCache: boolean;
  onToken: ((event: TokenEvent) => void) | undefined;
  signal: AbortSignal | undefined;
}

function checkOptions(model: CausalLM, options: GenerateOptions): Settings {
  if (options === null || typeof options !== 'object') throw new TypeError('generate: options must be an object');
  for (const key of Object.keys(options)) {
    if (!OPTION_NAMES.has(key)) {
      throw new TypeError(`generate: unknown option '${key}' (expected one of ${[...OPTION_NAMES].join(', ')})`);
    }
  }
  const vocab = model.config.vocabSize;
  const integer = (name: keyof GenerateOptions, fallback: number, min: number, max = 2 ** 31 - 1): number => {
    const value = options[name] ?? fallback;
    if (typeof value !== 'number') throw new TypeError(`generate: ${name} must be an integer, got ${typeof value}`);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`generate: ${name} must be an integer in [${min}, ${max}], got ${value}`);
    }
    return value;
  };
  const real = (name: keyof GenerateOptions, fallback: number, valid: (x: number) => boolean, expected: string) => {
    const value = options[name] ?? fallback;
    if (typeof value !== 'number') throw new TypeError(`generate: ${name} must be a number, got ${typeof value}`);
    if (!valid(value)) throw new RangeError(`generate: ${name} must be ${expected}, got ${value}`);
    return value;
  };
  const boolean = (name: keyof GenerateOptions, fallback: boolean): boolean => {
    const value = options[name] ?? fallback;
    if (typeof value !== 'boolean') throw new TypeError(`generate: ${name} must be true or false, got ${typeof value}`);
    return value;
  };
  const defaults = model.generationConfig;
  const doSample = boolean('doSample', false);
  const numBeams = integer('numBeams', 1, 1, 1024);
  if (doSample && numBeams > 1) {
    throw new RangeError('generate: numBeams > 1 with doSample (beam sampling) is not supported');
  }
  if (!doSample) {
    for (const name of ['temperature', 'topK', 'topP', 'seed'] as const) {
      if (options[name] !== undefined) throw new TypeError(`generate: ${name} needs doSample: true`);
    }
  }
  if (numBeams === 1) {
    for (const name of ['lengthPenalty', 'earlyStopping'] as const) {
      if (options[name] !== undefined) throw new TypeError(`generate: ${name} needs numBeams > 1 (beam search)`);
    }
  }
  let eos: number[];
  if (options.eosTokenId === null) eos = [];
  else if (options.eosTokenId === undefined) eos = [...defaults.eosTokenIds];
  else {
    const given = typeof options.eosTokenId === 'number' ? [options.eosTokenId] : options.eosTokenId;
    if (!Array.isArray(given)) throw new TypeError('generate: eosTokenId must be a token id, a list of them, or null');
    eos = given.map((id, index) => {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new RangeError(`generate: eosTokenId[${index}] must be a token id in [0, ${vocab}), got ${id}`);
      }
      return id as number;
    });
  }
  const pad =
    options.padTokenId === undefined ? (defaults.padTokenId ?? eos[0]) : integer('padTokenId', 0, 0, vocab - 1);
  const earlyStopping = options.earlyStopping ?? false;
  if (earlyStopping !== true && earlyStopping !== false && earlyStopping !== 'never') {
    throw new TypeError(`generate: earlyStopping must be true, false or 'never', got ${String(earlyStopping)}`);
  }
  if (options.onToken !== undefined && typeof options.onToken !== 'function') {
    throw new TypeError('generate: onToken must be a function');
  }
  if (options.onToken !== undefined && numBeams > 1) {
    throw new TypeError('generate: onToken streams greedy or sampled tokens; beam search decides only at the end');
  }
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError('generate: signal must be an AbortSignal');
  }
  return {
    maxNewTokens: integer('maxNewTokens', defaults.maxNewTokens ?? 20, 0),
    doSample,
    temperature: real('temperature', 1, (x) => Number.isFinite(x) && x > 0, 'a finite number above 0'),
    topK: integer('topK', vocab, 1),
    topP: real('topP', 1, (x) => x > 0 && x <= 1, 'in (0, 1]'),
    seed: options.seed === undefined ? freshSeed() : integer('seed', 0, 0, Number.MAX_SAFE_INTEGER),
    numBeams,
    lengthPenalty: real('lengthPenalty', 1, Number.isFinite, 'a finite number'),
    earlyStopping,
    eos,
    pad,
    useCache: boolean('useCache', true),
    onToken: options.onToken,
    signal,
  };
}

/** The prompt's ids and mask, the mask inferred from the pad token when not given, left padding required. */
function promptOf(model: CausalLM, inputs: GenerateInputs, eos: readonly number[]): { ids: IdBatch; mask: IdBatch } {
  if (inputs === null || typeof inputs !== 'object') throw new TypeError('generate: expected { inputIds, ... }');
  const ids = toIdBatch(inputs.inputIds, 'inputIds');
  if (ids.batch === 0 || ids.seq === 0) {
    throw new RangeError(`generate: inputIds must have at least one row and one token, got [${ids.batch}, ${ids.seq}]`);
  }
  const vocab = model.config.vocabSize;
  ids.data.forEach((id, index) => {
    if (id >= vocab) {
      throw new RangeError(
        `inputIds[${Math.floor(index / ids.seq)}][${index % ids.seq}] is ${id}; expected a token id in [0, ${vocab})`,
      );
    }
  });
  let mask: IdBatch;
  if (inputs.attentionMask !== undefined) {
    mask = toIdBatch(inputs.attentionMask, 'attentionMask');
    expectSameShape(mask, ids, 'attentionMask');
    mask = { ...mask, data: Int32Array.from(mask.data, (value) => (value === 0 ? 0 : 1)) };
  } else {
    const pad = model.generationConfig.padTokenId;
    const infer = pad !== undefined && !eos.includes(pad) && ids.data.includes(pad);
    mask = { ...ids, data: Int32Array.from(ids.data, (id) => (infer && id === pad ? 0 : 1)) };
  }
  for (let row = 0; row < ids.batch; row++) {
    if (mask.data[row * ids.seq + ids.seq - 1] === 0) {
      throw new RangeError(
        `generate: row ${row} of attentionMask ends in padding; a decoder continues the last token, so pad on the left`,
      );
    }
  }
  return { ids, mask };
}

/** Positions as transformers' generate derives them: cumsum(mask) − 1 over each row, padding at position 1. */
export function positionsFromMask(mask: Int32Array, rows: number, length: number): Int32Array {
  const positions = new Int32Array(rows * length);
  for (let row = 0; row < rows; row++) {
    let count = 0;
    for (let index = row * length; index < (row + 1) * length; index++) {
      positions[index] = mask[index] === 0 ? 1 : count++;
    }
  }
  return positions;
}

/**
 * The decoding state of `rows` sequences: every token so far and its mask, and the cache. step() runs the model
 * on what the cache lacks (or on everything without a cache) and returns the last position's logits per row.
 */
class Decoder {
  tokens: number[][];
  masks: number[][];
  readonly cache: KeyValueCache | undefined;
  #cachedLength = 0;

  constructor(
    readonly model: CausalLM,
    prompt: IdBatch,
    mask: IdBatch,
    useCache: boolean,
  ) {
    const rowsOf = (batch: IdBatch) =>
      Array.from({ length: batch.batch }, (_, row) =>
        Array.from(batch.data.subarray(row * batch.seq, (row + 1) * batch.seq)),
      );
    this.tokens = rowsOf(prompt);
    this.masks = rowsOf(mask);
    this.cache = useCache ? new KeyValueCache(model.config.numLayers) : undefined;
  }

  /** Appends one token per row (mask 1, as transformers extends the mask for finished rows too). */
  push(tokens: readonly number[]): void {
    tokens.forEach((token, row) => {
      this.tokens[row].push(token);
      this.masks[row].push(1);
    });
  }

  /** Keeps rows `rows`, in that order (beam search). */
  selectRows(rows: Int32Array): void {
    this.tokens = Array.from(rows, (row) => [...this.tokens[row]]);
    this.masks = Array.from(rows, (row) => [...this.masks[row]]);
    this.cache?.selectRows(rows);
  }

  /** [rows][vocab] logits of each row's next token. */
  step(): Float32Array[] {
    const rows = this.tokens.length;
    const length = this.tokens[0].length;
    const start = this.cache === undefined ? 0 : this.#cachedLength;
    const fresh = length - start;
    const flatMask = Int32Array.from(this.masks.flat());
    const allPositions = positionsFromMask(flatMask, rows, length);
    const ids = new Int32Array(rows * fresh);
    const positions = new Int32Array(rows * fresh);
    for (let row = 0; row < rows; row++) {
      for (let index = 0; index < fresh; index++) {
        ids[row * fresh + index] = this.tokens[row][start + index];
        positions[row * fresh + index] = allPositions[row * length + start + index];
      }
    }
    const vocab = this.model.config.vocabSize;
    const logits = tidy(() =>
      noGrad(() => {
        const keyMask = maskTensor({ data: flatMask, batch: rows, seq: length }, this.model.device);
        const pass: DecoderPass = {
          ids: { data: ids, batch: rows, seq: fresh },
          positions,
          keyMask,
          cache: this.cache,
          lastOnly: true,
        };
        return this.model.decode(pass).toFloat32Array();
      }),
    );
    this.#cachedLength = length;
    return Array.from({ length: rows }, (_, row) => logits.subarray(row * vocab, (row + 1) * vocab));
  }

  dispose(): void {
    this.cache?.dispose();
  }
}

/** Lets other work of the event loop run between tokens. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function abortIfAsked(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason ?? new DOMException('generate was aborted', 'AbortError');
}

/**
 * model.generate's body. `strategy` 'beam' runs beam search even with one beam (transformers runs greedy decoding
 * then, as generate() does here): the tests' check that one beam is greedy.
 */
export async function generate(
  model: CausalLM,
  inputs: GenerateInputs,
  options: GenerateOptions = {},
  strategy?: 'beam',
): Promise<GenerateOutput> {
  const settings = checkOptions(model, options);
  const { ids, mask } = promptOf(model, inputs, settings.eos);
  const limit = model.config.positionEmbedding === 'learned' ? model.config.maxPositions : Infinity;
  if (ids.seq + settings.maxNewTokens > limit) {
    throw new RangeError(
      `generate: a prompt of ${ids.seq} tokens plus maxNewTokens ${settings.maxNewTokens} exceeds the ` +
        `${limit} positions of ${model.config.architecture}`,
    );
  }
  abortIfAsked(settings.signal);
  // Dropout off while generating, as in a model transformers loads; the caller's mode is restored after.
  const wasTraining = model.namedModules().map(([, module]) => module.training);
  model.eval();
  try {
    return settings.numBeams > 1 || strategy === 'beam'
      ? await beamSearch(model, ids, mask, settings)
      : await decodeRows(model, ids, mask, settings);
  } finally {
    model.namedModules().forEach(([, module], index) => (module.training = wasTraining[index]));
  }
}

/** Greedy decoding or sampling, one token per row per step, finished rows padded. */
async function decodeRows(model: CausalLM, ids: IdBatch, mask: IdBatch, settings: Settings): Promise<GenerateOutput> {
  const decoder = new Decoder(model, ids, mask, settings.useCache);
  const random = new Random(settings.seed);
  const finished = new Array<boolean>(ids.batch).fill(false);
  try {
    for (let step = 0; step < settings.maxNewTokens && !finished.every(Boolean); step++) {
      abortIfAsked(settings.signal);
      const logits = decoder.step();
      const tokens = logits.map((row, index) => {
        if (finished[index]) return settings.pad!;
        return settings.doSample ? sampleToken(row, settings, random) : argmax(row);
      });
      decoder.push(tokens);
      tokens.forEach((token, index) => {
        if (settings.eos.includes(token)) finished[index] = true;
      });
      settings.onToken?.({ step, tokens, finished: [...finished] });
      await yieldToEventLoop();
    }
    return { sequences: decoder.tokens };
  } finally {
    decoder.dispose();
  }
}

/** The index of the largest value, the first of ties (as torch.argmax). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let index = 1; index < values.length; index++) if (values[index] > values[best]) best = index;
  return best;
}

/**
 * The probabilities sampling draws from, in transformers' order of warpers: logits / temperature, then top-k (every
 * token scoring at least the k-th kept), then top-p (the most likely tokens whose probability reaches p, at least
 * one), then softmax.
 */
export function samplingProbabilities(
  logits: ArrayLike<number>,
  options: { temperature: number; topK: number; topP: number },
): Float64Array {
  const scores = Float64Array.from(logits, (value) => value / options.temperature);
  if (options.topK < scores.length) {
    const kth = topIndices(scores, options.topK).at(-1)!;
    const threshold = scores[kth];
    for (let index = 0; index < scores.length; index++) if (scores[index] < threshold) scores[index] = -Infinity;
  }
  const probabilities = softmax(scores);
  if (options.topP < 1) {
    // transformers removes the tokens whose ascending cumulative probability stays within 1 − p (tokens already at
    // probability 0 go either way), keeping at least the most likely one.
    const order: number[] = [];
    probabilities.forEach((probability, index) => {
      if (probability > 0) order.push(index);
    });
    order.sort((a, b) => probabilities[b] - probabilities[a] || a - b);
    let cumulative = 0;
    for (let rank = order.length - 1; rank > 0; rank--) {
      cumulative += probabilities[order[rank]];
      if (cumulative <= 1 - options.topP) scores[order[rank]] = -Infinity;
      else break;
    }
    return softmax(scores);
  }
  return probabilities;
}

/**
 * Indices of the `count` largest values, largest first, the lower index first among ties (as a stable sort). One
 * pass that keeps a sorted list of the best so far: most values fall below its last and cost one comparison.
 */
export function topIndices(values: ArrayLike<number>, count: number): number[] {
  const best: number[] = [];
  for (let index = 0; index < values.length; index++) {
    const value = values[index];
    if (best.length === count && !(value > values[best[count - 1]])) continue;
    let at = best.length;
    while (at > 0 && value > values[best[at - 1]]) at--;
    best.splice(at, 0, index);
    if (best.length > count) best.pop();
  }
  return best;
}

function softmax(scores: Float64Array): Float64Array {
  let max = -Infinity;
  for (const score of scores) max = Math.max(max, score);
  const exps = scores.map((score) => Math.exp(score - max));
  let total = 0;
  for (const value of exps) total += value;
  return exps.map((value) => value / total);
}

function sampleToken(logits: Float32Array, settings: Settings, random: Random): number {
  const probabilities = samplingProbabilities(logits, settings);
  const draw = random.next();
  let cumulative = 0;
  let last = 0;
  for (let index = 0; index < probabilities.length; index++) {
    if (probabilities[index] === 0) continue;
    cumulative += probabilities[index];
    last = index;
    if (draw < cumulative) return index;
  }
  // Rounding left the total a hair below 1 and the draw above it: the last possible token.
  return last;
}

function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let index = 0; index < logits.length; index++) max = Math.max(max, logits[index]);
  let total = 0;
  for (let index = 0; index < logits.length; index++) total += Math.exp(logits[index] - max);
  const shift = max + Math.log(total);
  return Float64Array.from(logits, (value) => value - shift);
}

/** transformers' stand-in for minus infinity in beam scores. */
const EXCLUDED = -1e9;

interface Hypothesis {
  tokens: number[];
  score: number;
}

/**
 * Beam search as transformers' _beam_search scores it: each step keeps the numBeams best running continuations that
 * do not end, among the max(2, 1 + #eos)·numBeams best of all; those among the numBeams best that end (or reach
 * maxNewTokens) join the row's finished beams with score sum(log p) / length^lengthPenalty (length counts the new
 * tokens, eos included); a row stops when no running beam could beat its finished ones (earlyStopping).
 */
async function beamSearch(
  model: CausalLM,
  prompt: IdBatch,
  mask: IdBatch,
  settings: Settings,
): Promise<GenerateOutput> {
  const beams = settings.numBeams;
  const batch = prompt.batch;
  const expand = (source: IdBatch): IdBatch => {
    const data = new Int32Array(batch * beams * source.seq);
    for (let row = 0; row < batch * beams; row++) {
      const from = Math.floor(row / beams) * source.seq;
      data.set(source.data.subarray(from, from + source.seq), row * source.seq);
    }
    return { data, batch: batch * beams, seq: source.seq };
  };
  const decoder = new Decoder(model, expand(prompt), expand(mask), settings.useCache);
  const vocab = model.config.vocabSize;
  const keepCount = Math.max(2, 1 + settings.eos.length) * beams;
  const { lengthPenalty, earlyStopping } = settings;
  const promptLength = prompt.seq;
  const maxLength = promptLength + settings.maxNewTokens;
  // Running beams: their new tokens and summed log-probabilities; only beam 0 is live at the start.
  const running: Hypothesis[][] = Array.from({ length: batch }, () =>
    Array.from({ length: beams }, (_, beam) => ({ tokens: [], score: beam === 0 ? 0 : EXCLUDED })),
  );
  const finished: (Hypothesis | undefined)[][] = Array.from({ length: batch }, () => new Array(beams).fill(undefined));
  const improvable = new Array<boolean>(batch).fill(true);
  try {
    for (let length = promptLength; length < maxLength; length++) {
      abortIfAsked(settings.signal);
      const logits = decoder.step();
      let everyCandidateStops = true;
      const origins = new Int32Array(batch * beams);
      const nextTokens: number[] = [];
      for (let row = 0; row < batch; row++) {
        // Every beam's continuations, [beam · vocab + token], scored by the beam's sum of log-probabilities.
        const scored = new Float64Array(beams * vocab);
        for (let beam = 0; beam < beams; beam++) {
          const logProbabilities = logSoftmax(logits[row * beams + beam]);
          const base = running[row][beam].score;
          for (let token = 0; token < vocab; token++) scored[beam * vocab + token] = base + logProbabilities[token];
        }
        const candidates = topIndices(scored, keepCount).map((index) => ({
          beam: Math.floor(index / vocab),
          token: index % vocab,
          score: scored[index],
        }));
        const stops = candidates.map(({ token }) => settings.eos.includes(token) || length + 1 >= maxLength);
        if (!stops.every(Boolean)) everyCandidateStops = false;
        // Next running beams: the best that do not stop (stopping ones pushed down by EXCLUDED, as transformers).
        const continuing = candidates
          .map((candidate, index) => ({ ...candidate, score: candidate.score + (stops[index] ? EXCLUDED : 0) }))
          .map((candidate, index) => ({ candidate, index }))
          .sort((a, b) => b.candidate.score - a.candidate.score || a.index - b.index)
          .slice(0, beams);
        const nextRunning = continuing.map(({ candidate }) => ({
          tokens: [...running[row][candidate.beam].tokens, candidate.token],
          score: candidate.score,
        }));
        continuing.forEach(({ candidate }, beam) => {
          origins[row * beams + beam] = row * beams + candidate.beam;
          nextTokens.push(candidate.token);
        });
        // Finished beams: the best numBeams of those kept so far and the top numBeams candidates that stop now.
        const full = finished[row].every((hypothesis) => hypothesis !== undefined);
        if (improvable[row] && !(earlyStopping === true && full)) {
          const newlyFinished = candidates
            .slice(0, beams)
            .filter((_, index) => stops[index])
            .map(({ beam, token, score }) => ({
              tokens: [...running[row][beam].tokens, token],
              score: score / (length + 1 - promptLength) ** lengthPenalty,
            }));
          const merged = [...finished[row].filter((hypothesis) => hypothesis !== undefined), ...newlyFinished]
            .map((hypothesis, index) => ({ hypothesis: hypothesis!, index }))
            .sort((a, b) => b.hypothesis.score - a.hypothesis.score || a.index - b.index)
            .slice(0, beams)
            .map(({ hypothesis }) => hypothesis);
          finished[row] = Array.from({ length: beams }, (_, index) => merged[index]);
        }
        running[row] = nextRunning;
      }
      // The last step's tokens need no cache entry.
      if (length + 1 < maxLength) {
        decoder.selectRows(origins);
        decoder.push(nextTokens);
      }
      // transformers' early-stop heuristic: a row goes on while its best running beam, at the best length it could
      // still reach, beats its worst finished beam (or it has fewer than numBeams finished).
      for (let row = 0; row < batch; row++) {
        const hypotheticalLength =
          earlyStopping === 'never' && lengthPenalty > 0 ? maxLength - promptLength : length + 1 - promptLength;
        const bestPossible = running[row][0].score / hypotheticalLength ** lengthPenalty;
        const scores = finished[row].map((hypothesis) => hypothesis?.score);
        const worst = scores.every((score) => score !== undefined) ? Math.min(...(scores as number[])) : EXCLUDED;
        improvable[row] = improvable[row] && bestPossible > worst;
      }
      const allFull = finished.every((row) => row.every((hypothesis) => hypothesis !== undefined));
      if (!improvable.some(Boolean) || (allFull && earlyStopping === true) || everyCandidateStops) break;
      await yieldToEventLoop();
    }
  } finally {
    decoder.dispose();
  }
  const best = finished.map((row) => row[0] ?? { tokens: [], score: EXCLUDED });
  const longest = Math.max(...best.map((hypothesis) => hypothesis.tokens.length));
  const pad = settings.pad ?? 0;
  const sequences = best.map((hypothesis, row) => {
    const promptRow = Array.from(prompt.data.subarray(row * prompt.seq, (row + 1) * prompt.seq));
    return [...promptRow, ...hypothesis.tokens, ...new Array<number>(longest - hypothesis.tokens.length).fill(pad)];
  });
  return { sequences, sequencesScores: best.map((hypothesis) => hypothesis.score) };
}
