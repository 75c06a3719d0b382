// What every causal language model shares whatever its family: input checks, positions, the key/value cache, the
// causal-LM loss as transformers computes it, and generate().
import { noGrad } from '../autograd';
import { scaledDotProductAttention } from '../ops/attention';
import { add, mul, scale, sub } from '../ops/elementwise';
import { linear, matmul } from '../ops/matmul';
import { mean, sum } from '../ops/reduce';
import { embedding } from '../ops/embedding';
import { crossEntropy, IGNORE_INDEX } from '../ops/loss';
import { concat, narrow, reshape } from '../ops/shape';
import { type Dropout, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { keep, Tensor } from '../tensor';
import { type DecoderModelConfig } from './decoder-config';
import { type GenerateInputs, type GenerateOptions, type GenerateOutput, generate } from './generation';
import { expectSameShape, type IdBatch, type IdMatrix, maskTensor, toIdBatch } from './inputs';

/** What a causal language model's forward takes (model.forward). */
export interface CausalLMInputs {
  /** [batch, seq] token ids; batches of several lengths are padded on the left. */
  inputIds: IdMatrix;
  /** [batch, seq], 1 for tokens and 0 for padding; all ones when omitted. */
  attentionMask?: IdMatrix;
  /**
   * [batch, seq] the tokens to predict, usually inputIds with -100 where no loss is wanted (padding, a prompt). As in
   * transformers they are shifted inside the model: position t is scored on labels[t + 1]. Rows or flattened.
   */
  labels?: IdMatrix | readonly number[] | Int32Array;
  /**
   * [batch, seq] each token's position. When omitted every row counts 0, 1, ..., seq − 1, as transformers' forward
   * does without position_ids (even on left-padded rows); generate() derives them from the attention mask instead.
   */
  positionIds?: IdMatrix;
}

/** What a causal language model's forward returns. */
export interface CausalLMOutput {
  /** Shape [batch, seq, vocab]: at each position, the scores of the next token. */
  logits: Tensor;
  /** Mean cross-entropy over the counted (not -100) shifted labels, when labels were given. */
  loss?: Tensor;
}

/** Generation settings a checkpoint carries (generation_config.json, else config.json). */
export interface GenerationDefaults {
  /** Tokens that end a sequence; empty for none. */
  eosTokenIds: number[];
  /** What finished rows are padded with; transformers falls back to the first eos token. */
  padTokenId: number | undefined;
  /** The start-of-sequence token (bos_token_id), when the checkpoint names one; generate does not add it. */
  bosTokenId: number | undefined;
  /** generation_config.json's max_new_tokens, when it has one. */
  maxNewTokens?: number;
}

/** lm_head, [hidden] → [vocab] without bias; undefined when tied to the token embeddings (tie_word_embeddings). */
export function languageModelHead(config: DecoderModelConfig, seed: number): Linear | undefined {
  if (config.tieWordEmbeddings) return undefined;
  return new Linear(config.hiddenSize, config.vocabSize, { bias: false, std: config.initializerRange, seed });
}

/** Next-token logits from the last hidden states: through lm_head, or the token embeddings' weight when tied. */
export function projectToVocabulary(hidden: Tensor, head: Linear | undefined, embeddings: Tensor): Tensor {
  return head?.forward(hidden) ?? linear(hidden, embeddings);
}

/**
 * The keys and values every layer has seen so far, [batch, kvHeads, length, headDim] each, so a decoding step runs
 * the new tokens only. Owns its tensors: dispose() frees them.
 */
export class KeyValueCache {
  /** Each layer's cached keys, [batch, kvHeads, length, headDim]; undefined before its first pass. */
  keys: (Tensor | undefined)[];
  /** Each layer's cached values, [batch, kvHeads, length, headDim]; undefined before its first pass. */
  values: (Tensor | undefined)[];

  constructor(
    /** The model's layer count: one slot each. */
    readonly layers: number,
  ) {
    this.keys = new Array<Tensor | undefined>(layers).fill(undefined);
    this.values = new Array<Tensor | undefined>(layers).fill(undefined);
  }

  /** Cached positions per row (0 before the first pass). */
  get length(): number {
    return this.keys[0]?.shape[2] ?? 0;
  }

  /** Appends a layer's new keys and values (along the sequence) and returns everything cached for that layer. */
  append(
    layer: number,
    key: Tensor,
    value: Tensor,
  ): {
    /** Every key the layer has seen, [batch, kvHeads, length, headDim] (owned by the cache). */
    key: Tensor;
    /** Every value the layer has seen, [batch, kvHeads, length, headDim] (owned by the cache). */
    value: Tensor;
  } {
    const join = (previous: Tensor | undefined, next: Tensor): Tensor => {
      // The cache outlives the step's tidy scope; the tensor it replaces is freed here.
      const joined = keep(previous === undefined ? next.clone() : concat(previous, next, 2));
      previous?.dispose();
      return joined;
    };
    this.keys[layer] = join(this.keys[layer], key);
    this.values[layer] = join(this.values[layer], value);
    return { key: this.keys[layer]!, value: this.values[layer]! };
  }

  /** Keeps rows `rows` of every cached tensor, in that order (beam search following its best beams). */
  selectRows(rows: Int32Array): void {
    const pick = (tensor: Tensor | undefined): Tensor | undefined => {
      if (tensor === undefined) return undefined;
      const [batch, ...rest] = tensor.shape;
      // The embedding lookup gathers whole rows of a [batch, everything else] table.
      const table = reshape(tensor, [batch, -1]);
      const gathered = noGrad(() => embedding(table, rows, [rows.length]));
      const picked = keep(reshape(gathered, [rows.length, ...rest]));
      table.dispose();
      gathered.dispose();
      tensor.dispose();
      return picked;
    };
    this.keys = this.keys.map(pick);
    this.values = this.values.map(pick);
  }

  /** Frees every cached tensor; the cache is then empty (length 0). */
  dispose(): void {
    for (const tensor of [...this.keys, ...this.values]) tensor?.dispose();
    this.keys.fill(undefined);
    this.values.fill(undefined);
  }
}

/** One pass through the decoder: the new tokens, their positions, and the mask over every key they may read. */
export interface DecoderPass {
  /** The new tokens, [batch, seq], checked against the vocabulary. */
  ids: IdBatch;
  /** [batch · seq] the new tokens' positions. */
  positions: Int32Array;
  /** [batch, cached + seq], 1 attend, 0 padding; undefined attends to every key. */
  keyMask: Tensor | undefined;
  /** Keys and values of earlier passes, grown by this one; undefined runs without a cache. */
  cache: KeyValueCache | undefined;
  /** Whether only the last position's logits are wanted (generation). */
  lastOnly: boolean;
  /**
   * [batch · seq] 1 for each new token that may attend to no key (left padding before a row's first token), when
   * there is any; see causalAttention.
   */
  blindQueries?: Uint8Array;
}

/** The new tokens of a pass that see no key: under the causal mask, every key up to and including theirs is padding. */
export function blindQueries(mask: IdBatch, cached: number): Uint8Array | undefined {
  const seq = mask.seq - cached;
  const blind = new Uint8Array(mask.batch * seq);
  let any = false;
  for (let row = 0; row < mask.batch; row++) {
    let seen = false;
    for (let position = 0; position < mask.seq; position++) {
      seen ||= mask.data[row * mask.seq + position] !== 0;
      if (position >= cached && !seen) {
        blind[row * seq + position - cached] = 1;
        any = true;
      }
    }
  }
  return any ? blind : undefined;
}

/**
 * Causal attention of the new tokens' queries over the cached and new keys, the cache grown first. query
 * [batch, heads, seq, d], key and value [batch, kvHeads, seq, d].
 */
export function causalAttention(
  query: Tensor,
  key: Tensor,
  value: Tensor,
  pass: DecoderPass,
  layer: number,
  options: { scale: number; dropout: Dropout },
): Tensor {
  const all = pass.cache === undefined ? { key, value } : pass.cache.append(layer, key, value);
  // The attention probabilities' dropout runs inside the fused op, from the module's seed stream.
  const seed = options.dropout.nextSeed();
  const output = scaledDotProductAttention(query, all.key, all.value, {
    keyMask: pass.keyMask,
    causal: true,
    scale: options.scale,
    dropout: seed === undefined ? undefined : { p: options.dropout.p, seed },
  });
  if (pass.blindQueries === undefined) return output;
  return add(output, blindAttention(query, all.key, all.value, pass.blindQueries, options.scale));
}

/**
 * What transformers' eager attention gives queries that see no key (left padding before a row's first token): it
 * adds the same large negative number to all of the row's scores, so the softmax weighs every key of the row (later
 * ones too) equally, yet its gradient is the softmax's at those equal weights, reaching queries and keys through the
 * scores. The fused op gives such rows zeros. They exist only at padding, but the loss reads the last padding
 * position (it predicts a row's first token), so this reproduces them: the mean of the values, plus
 * Σ_j (s_j − stop(s_j)) (v_j − stop(v̄)) / K, which is zero forward and has exactly that gradient. Computed on the first P query
 * positions only (P the most padding of any row); [batch, heads, seq, d], zero outside the blind rows.
 */
function blindAttention(query: Tensor, key: Tensor, value: Tensor, blind: Uint8Array, scoreScale: number): Tensor {
  const [batch, heads, seq, headDim] = query.shape;
  const [, kvHeads, keys] = key.shape;
  let padded = 0;
  for (let row = 0; row < batch; row++) {
    let count = 0;
    while (count < seq && blind[row * seq + count] === 1) count++;
    padded = Math.max(padded, count);
  }
  const blindQuery = padded === seq ? query : narrow(query, 2, 0, padded);
  const uniform = scaledDotProductAttention(blindQuery, key, value, { scale: 0 });
  // Query heads grouped by the key/value head they read: [batch, kvHeads, group · P, d].
  const grouped = reshape(blindQuery, [batch, kvHeads, (heads / kvHeads) * padded, headDim]);
  const scores = scale(matmul(grouped, key, { transposeB: true }), scoreScale);
  const offset = sub(scores, scores.detach());
  // Σ_j offset_j (v_j − v̄) = offset · v − (Σ_j offset_j) v̄, with v̄ [batch, kvHeads, 1, d] a constant.
  const meanValues = noGrad(() => mean(value, { axis: 2, keepDims: true }));
  const centred = sub(matmul(offset, value), matmul(sum(offset, { axis: 3, keepDims: true }), meanValues));
  const correction = reshape(scale(centred, 1 / keys), [batch, heads, padded, headDim]);
  const rows = new Float32Array(batch * heads * padded * headDim);
  for (let row = 0; row < batch; row++) {
    for (let position = 0; position < padded; position++) {
      if (blind[row * seq + position] === 0) continue;
      for (let head = 0; head < heads; head++) {
        const start = ((row * heads + head) * padded + position) * headDim;
        rows.fill(1, start, start + headDim);
      }
    }
  }
  const factors = Tensor.from(rows, [batch, heads, padded, headDim], { device: query.device });
  const blindOutput = mul(add(uniform, correction), factors);
  factors.dispose();
  meanValues.dispose();
  if (padded === seq) return blindOutput;
  const rest = Tensor.zeros([batch, heads, seq - padded, headDim], { device: query.device });
  const whole = concat(blindOutput, rest, 2);
  rest.dispose();
  return whole;
}

/**
 * A causal language model (GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM): forward gives next-token logits and
 * transformers' loss, generate continues prompts.
 */
export abstract class CausalLM extends Module {
  /** The parsed config.json it was built from. */
  abstract readonly config: DecoderModelConfig;
  /** The decoder's parameters' prefix in checkpoints ('transformer' for GPT-2, 'model' for Llama). */
  abstract readonly basePrefix: string;
  /** Generation settings: the config's, replaced by generation_config.json's when models.load finds one. */
  generationConfig!: GenerationDefaults;

  /** The last hidden states [batch, seq, hidden] of a pass, after the final norm. */
  protected abstract hiddenStates(pass: DecoderPass): Tensor;
  /** Logits [..., vocab] from hidden states: lm_head, or the token embeddings' transpose when tied. */
  protected abstract outputProjection(hidden: Tensor): Tensor;

  /** Sets `generationConfig` from config.json's end, pad and start tokens; each family's constructor calls it. */
  protected initGenerationConfig(): void {
    const { eosTokenIds, padTokenId, bosTokenId } = this.config;
    this.generationConfig = { eosTokenIds: [...eosTokenIds], padTokenId, bosTokenId };
  }

  /** Whether the checkpoint stores parameter `name` transposed ([in, out], GPT-2's Conv1D) from the model's layout. */
  transposedInCheckpoint(name: string): boolean {
    void name;
    return false;
  }

  /**
   * Next-token logits [batch, seq, vocab] for every position; with labels, also the mean cross-entropy of the shifted
   * labels as transformers' ForCausalLMLoss computes it. Throws a TypeError or RangeError for ids, masks, positions or
   * labels of the wrong shape or outside the vocabulary, and a RangeError for a position past a learned table.
   */
  forward(inputs: CausalLMInputs): CausalLMOutput {
    if (inputs === null || typeof inputs !== 'object') throw new TypeError('forward: expected { inputIds, ... }');
    const ids = toIdBatch(inputs.inputIds, 'inputIds');
    const maskIds = inputs.attentionMask === undefined ? undefined : toIdBatch(inputs.attentionMask, 'attentionMask');
    if (maskIds) expectSameShape(maskIds, ids, 'attentionMask');
    let positions: Int32Array;
    if (inputs.positionIds === undefined) {
      positions = Int32Array.from({ length: ids.data.length }, (_, index) => index % ids.seq);
    } else {
      const given = toIdBatch(inputs.positionIds, 'positionIds');
      expectSameShape(given, ids, 'positionIds');
      positions = given.data;
    }
    const labels = inputs.labels === undefined ? undefined : shiftedLabels(inputs.labels, ids, this.config.vocabSize);
    const keyMask = maskIds === undefined ? undefined : maskTensor(maskIds, this.device);
    let logits: Tensor;
    try {
      const blind = maskIds === undefined ? undefined : blindQueries(maskIds, 0);
      logits = this.decode({ ids, positions, keyMask, cache: undefined, lastOnly: false, blindQueries: blind });
    } finally {
      keyMask?.dispose();
    }
    if (labels === undefined) return { logits };
    const rows = reshape(logits, [ids.batch * ids.seq, this.config.vocabSize]);
    const loss = crossEntropy(rows, labels);
    rows.dispose();
    return { logits, loss };
  }

  /** @internal One pass: logits [batch, seq, vocab], or [batch, 1, vocab] of the last position with `lastOnly`. */
  decode(pass: DecoderPass): Tensor {
    this.checkIds(pass.ids);
    const hidden = this.hiddenStates(pass);
    const seq = hidden.shape[1];
    const last = pass.lastOnly && seq > 1 ? narrow(hidden, 1, seq - 1, 1) : hidden;
    return this.outputProjection(last);
  }

  /**
   * Continues each prompt row by up to `maxNewTokens` tokens: greedy by default, sampling with `doSample`, beam
   * search with `numBeams` > 1, with a key/value cache. Resolves to the sequences with their prompts, as
   * transformers' generate returns them. See GenerateOptions.
   */
  generate(inputs: GenerateInputs, options: GenerateOptions = {}): Promise<GenerateOutput> {
    return generate(this, inputs, options);
  }

  private checkIds(ids: IdBatch): void {
    const vocab = this.config.vocabSize;
    for (let index = 0; index < ids.data.length; index++) {
      const id = ids.data[index];
      if (id < 0 || id >= vocab) {
        const row = Math.floor(index / ids.seq);
        throw new RangeError(`inputIds[${row}][${index % ids.seq}] is ${id}; expected a token id in [0, ${vocab})`);
      }
    }
  }
}

/**
 * The labels each position is scored on: labels[t + 1] at position t, -100 at each row's last position, as
 * transformers' ForCausalLMLoss shifts them. Checked: integers, a token id or -100.
 */
function shiftedLabels(labels: NonNullable<CausalLMInputs['labels']>, ids: IdBatch, vocabSize: number): Int32Array {
  let values: ArrayLike<number>;
  if (Array.isArray(labels) && labels.some((row) => Array.isArray(row))) {
    values = labelRows(labels as readonly (readonly number[])[], ids.batch);
  } else if (Array.isArray(labels) || labels instanceof Int32Array) {
    values = labels as ArrayLike<number>;
  } else if (labels !== null && typeof labels === 'object' && 'data' in labels && labels.data instanceof Int32Array) {
    values = labels.data;
  } else {
    throw new TypeError('labels must be number[][], a flat array or Int32Array, or { data: Int32Array, shape }');
  }
  const expected = ids.batch * ids.seq;
  if (values.length !== expected) {
    throw new RangeError(
      `labels has ${values.length} entries; inputIds [${ids.batch}, ${ids.seq}] needs ${expected} (one per token)`,
    );
  }
  const shifted = new Int32Array(expected).fill(IGNORE_INDEX);
  for (let index = 0; index < expected; index++) {
    const label = values[index];
    if (!Number.isInteger(label)) throw new TypeError(`labels[${index}] must be an integer token id, got ${label}`);
    if (label !== IGNORE_INDEX && (label < 0 || label >= vocabSize)) {
      throw new RangeError(`labels[${index}] is ${label}; expected a token id in [0, ${vocabSize}) or -100 (ignored)`);
    }
    if (index % ids.seq !== 0) shifted[index - 1] = label;
  }
  return shifted;
}

/** Rows of labels flattened, one row per sequence and all of one length (checked against the ids by the caller). */
function labelRows(rows: readonly (readonly number[])[], batch: number): number[] {
  if (rows.length !== batch) throw new RangeError(`labels has ${rows.length} rows; inputIds has ${batch}`);
  const seq = rows[0]?.length ?? 0;
  rows.forEach((row, index) => {
    if (!Array.isArray(row) || row.length !== seq) {
      throw new RangeError(`labels: every row must have ${seq} labels (row ${index} has ${row?.length})`);
    }
  });
  return rows.flat();
}
