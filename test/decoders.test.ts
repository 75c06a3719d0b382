// Causal language models against transformers (GPT-2 and Llama checkpoints made with transformers 5.17, see
// test/fixtures/hf-families/README.md): logits, loss, gradients and greedy generation on a left-padded batch; then
// generation itself: the key/value cache against full recomputation, seeded sampling and its distribution, beam
// search, streaming, cancellation, and the option and config errors.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { io, memory, models, noGrad, ops, type Tensor, tidy } from '../lib/index';
import { generate, positionsFromMask, samplingProbabilities, topIndices } from '../lib/models/generation';
import { checkGradients } from './gradcheck';
import { randomTensor, relativeError } from './helpers';

const root = join(__dirname, 'fixtures', 'hf-families');

interface Case {
  input_ids: number[][];
  attention_mask: number[][];
  labels: number[][];
  logits: number[][][];
  loss: number;
  grads: Record<string, number[]>;
  generated: number[][];
}

function readCase(folder: string): Case {
  return JSON.parse(readFileSync(join(root, folder, 'case.json'), 'utf8')) as Case;
}

function readConfig(folder: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(root, folder, 'config.json'), 'utf8')) as Record<string, unknown>;
}

function loadDecoder(folder: string): models.CausalLM & { loadReport: models.LoadReport } {
  const model = models.load(join(root, folder));
  if (!(model instanceof models.CausalLM)) throw new Error(`${folder} did not load as a causal LM`);
  return model.eval();
}

/** The logits of the attended positions only, row by row. */
function attended(logits: ArrayLike<number>, mask: number[][], vocab: number): number[] {
  const values: number[] = [];
  mask.flat().forEach((keep, position) => {
    if (keep === 1) for (let id = 0; id < vocab; id++) values.push(logits[position * vocab + id]);
  });
  return values;
}

/** A [rows, cols] matrix stored row-major, transposed (the fixture's Conv1D gradients are [in, out]). */
function transposed(values: number[], rows: number, cols: number): number[] {
  return Array.from({ length: rows * cols }, (_, index) => values[(index % rows) * cols + Math.floor(index / rows)]);
}

const families = [
  { folder: 'gpt2', architecture: 'GPT2LMHeadModel' },
  { folder: 'llama', architecture: 'LlamaForCausalLM' },
];

describe('decoder families match transformers', () => {
  for (const { folder, architecture } of families) {
    it(`${folder} (${architecture}): logits and loss within 1e-4, gradients within 1e-3`, () => {
      const reference = readCase(folder);
      const model = loadDecoder(folder);
      expect(model.config.architecture).toBe(architecture);
      expect(model.loadReport.missingKeys).toEqual([]);
      const vocab = model.config.vocabSize;
      const { logits, loss } = model.forward({
        inputIds: reference.input_ids,
        attentionMask: reference.attention_mask,
        labels: reference.labels,
      });
      expect(logits.shape).toEqual([3, 12, vocab]);
      // Every position, padding included. At a padding position before a row's first token the query sees no key;
      // transformers' eager attention then weighs all of the row's keys equally, and the loss reads the last such
      // position (it predicts the row's first token), so the model reproduces those values (decoder.ts,
      // blindAttention) rather than the zeros the fused op gives.
      expect(relativeError(logits.toFloat32Array(), reference.logits.flat(2))).toBeLessThan(1e-4);
      const ours = attended(logits.toFloat32Array(), reference.attention_mask, vocab);
      const theirs = attended(reference.logits.flat(2), reference.attention_mask, vocab);
      expect(relativeError(ours, theirs)).toBeLessThan(1e-4);
      expect(Math.abs(loss!.item() - reference.loss) / reference.loss).toBeLessThan(1e-4);
      loss!.backward();
      const parameters = new Map(model.namedParameters());
      for (const [name, expected] of Object.entries(reference.grads)) {
        const parameter = parameters.get(name);
        expect(parameter, name).toBeDefined();
        // GPT-2's Conv1D weights are stored [in, out] by transformers and [out, in] here.
        const [out, inFeatures] = parameter!.shape;
        const wanted = model.transposedInCheckpoint(name) ? transposed(expected, inFeatures, out) : expected;
        expect(relativeError(parameter!.grad!.toFloat32Array(), wanted), name).toBeLessThan(1e-3);
      }
      logits.dispose();
      loss!.dispose();
      model.dispose();
    });

    it(`${folder}: greedy generate gives transformers' tokens exactly, with and without the cache`, async () => {
      const reference = readCase(folder);
      const model = loadDecoder(folder);
      const inputs = { inputIds: reference.input_ids, attentionMask: reference.attention_mask };
      const cached = await model.generate(inputs, { maxNewTokens: 8 });
      expect(cached.sequences).toEqual(reference.generated);
      const recomputed = await model.generate(inputs, { maxNewTokens: 8, useCache: false });
      expect(recomputed.sequences).toEqual(reference.generated);
      // The mask inferred from the pad token (0 here, not an eos token) is the given one.
      expect((await model.generate({ inputIds: reference.input_ids }, { maxNewTokens: 8 })).sequences).toEqual(
        reference.generated,
      );
      model.dispose();
    });

    it(`${folder}: forward counts positions 0..seq-1 on every row, generate from the mask (as transformers)`, () => {
      const reference = readCase(folder);
      const model = loadDecoder(folder);
      const vocab = model.config.vocabSize;
      const mask = reference.attention_mask;
      const inputs = { inputIds: reference.input_ids, attentionMask: mask };
      const positionIds = Array.from({ length: 3 }, (_, row) =>
        Array.from(positionsFromMask(Int32Array.from(mask.flat()), 3, 12).subarray(row * 12, row * 12 + 12)),
      );
      expect(positionIds[2]).toEqual([1, 1, 1, 1, 1, 1, 0, 1, 2, 3, 4, 5]);
      const plain = tidy(() => noGrad(() => model.forward(inputs).logits.toFloat32Array()));
      const explicit = tidy(() =>
        noGrad(() =>
          model
            .forward({ ...inputs, positionIds: [...Array(3)].map(() => [...Array(12).keys()]) })
            .logits.toFloat32Array(),
        ),
      );
      expect(explicit).toEqual(plain);
      const fromMask = tidy(() => noGrad(() => model.forward({ ...inputs, positionIds }).logits.toFloat32Array()));
      // The unpadded row is the same either way. GPT-2's learned positions make the padded rows differ; Llama's
      // rotary embeddings depend only on the distance between positions, so shifting a row's positions changes
      // nothing there (padding positions aside, which no real token reads).
      expect(relativeError(fromMask.subarray(0, 12 * vocab), plain.subarray(0, 12 * vocab))).toBeLessThan(1e-6);
      const lastRow = (values: Float32Array) => values.subarray((24 + 6) * vocab);
      if (folder === 'gpt2') expect(relativeError(lastRow(fromMask), lastRow(plain))).toBeGreaterThan(1e-3);
      else expect(relativeError(lastRow(fromMask), lastRow(plain))).toBeLessThan(1e-5);
      // transformers' first generated token is the argmax of the mask-derived positions' last logits.
      for (let row = 0; row < 3; row++) {
        const last = fromMask.subarray((row * 12 + 11) * vocab, (row * 12 + 12) * vocab);
        expect(reference.generated[row][12]).toBe(last.indexOf(Math.max(...last)));
      }
      model.dispose();
    });
  }

  it('gpt2 saves back under its names with Conv1D weights [in, out]: the same bytes, the same logits', () => {
    const reference = readCase('gpt2');
    const model = loadDecoder('gpt2');
    const dir = mkdtempSync(join(tmpdir(), 'bidora-decoder-'));
    try {
      models.save(model, dir);
      const original = io.readSafetensors(join(root, 'gpt2', 'model.safetensors')).tensors;
      const saved = io.readSafetensors(join(dir, 'model.safetensors')).tensors;
      expect([...saved.keys()].sort()).toEqual([...original.keys()].sort());
      for (const [name, tensor] of saved) {
        expect(tensor.shape, name).toEqual(original.get(name)!.shape);
        expect(tensor.toFloat32Array(), name).toEqual(original.get(name)!.toFloat32Array());
      }
      for (const tensor of [...original.values(), ...saved.values()]) tensor.dispose();
      const generation = JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8')) as object;
      expect(generation).toEqual({ bos_token_id: 2, eos_token_id: 2, pad_token_id: 0 });
      const reloaded = models.load(dir).eval();
      expect(reloaded.loadReport).toEqual({ missingKeys: [], unexpectedKeys: [] });
      const inputs = { inputIds: reference.input_ids, attentionMask: reference.attention_mask };
      const before: Tensor = model.forward(inputs).logits;
      const after: Tensor = reloaded.forward(inputs).logits;
      expect(after.toFloat32Array()).toEqual(before.toFloat32Array());
      for (const tensor of [before, after]) tensor.dispose();
      reloaded.dispose();
    } finally {
      model.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('generation', () => {
  const prompt = {
    inputIds: [
      [0, 0, 0, 7, 12, 30, 41],
      [15, 3, 60, 22, 8, 9, 70],
      [0, 0, 0, 0, 0, 5, 6],
    ],
    attentionMask: [
      [0, 0, 0, 1, 1, 1, 1],
      [1, 1, 1, 1, 1, 1, 1],
      [0, 0, 0, 0, 0, 1, 1],
    ],
  };

  for (const { folder } of families) {
    it(`${folder}: the cache gives the tokens of full recomputation (greedy, seeded sampling, beams)`, async () => {
      const model = loadDecoder(folder);
      // No end token, so every row runs the full length and every step is compared.
      const runs = [
        { maxNewTokens: 10, eosTokenId: null },
        { maxNewTokens: 10, eosTokenId: null, doSample: true, temperature: 1.5, seed: 11 },
        { maxNewTokens: 10, doSample: true, topK: 20, topP: 0.9, seed: 12 },
        { maxNewTokens: 6, numBeams: 3 },
      ];
      for (const options of runs) {
        const cached = await model.generate(prompt, options);
        const recomputed = await model.generate(prompt, { ...options, useCache: false });
        expect(cached.sequences, JSON.stringify(options)).toEqual(recomputed.sequences);
      }
      model.dispose();
    });
  }

  it('sampling with a seed gives the same tokens on every run, another seed others', async () => {
    const model = loadDecoder('llama');
    const options = { maxNewTokens: 12, doSample: true, temperature: 2, seed: 5, eosTokenId: null };
    const first = await model.generate(prompt, options);
    const second = await model.generate(prompt, options);
    expect(second.sequences).toEqual(first.sequences);
    const other = await model.generate(prompt, { ...options, seed: 6 });
    expect(other.sequences).not.toEqual(first.sequences);
    model.dispose();
  });

  /** Pearson's statistic over bins with expected count ≥ 5 (the rest pooled), and its degrees of freedom. */
  function chiSquare(counts: number[], probabilities: Float64Array, draws: number): { statistic: number; df: number } {
    let statistic = 0;
    let bins = 0;
    let pooledCount = 0;
    let pooledExpected = 0;
    probabilities.forEach((probability, token) => {
      const expected = probability * draws;
      if (expected >= 5) {
        statistic += (counts[token] - expected) ** 2 / expected;
        bins++;
      } else {
        pooledCount += counts[token];
        pooledExpected += expected;
      }
    });
    if (pooledExpected > 0) {
      statistic += (pooledCount - pooledExpected) ** 2 / pooledExpected;
      bins++;
    }
    return { statistic, df: bins - 1 };
  }

  /** The chi-square quantile for upper tail 1e-4 (Wilson–Hilferty, z = 3.719). */
  function criticalValue(df: number): number {
    const z = 3.719;
    return df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  }

  it('first tokens follow softmax(logits / temperature): a chi-square test at p = 1e-4, which a wrong temperature fails', async () => {
    const model = loadDecoder('gpt2');
    const row = [7, 12, 30, 41];
    const draws = 3000;
    const temperature = 0.7;
    const logits = tidy(() => noGrad(() => model.forward({ inputIds: [row] }).logits.toFloat32Array()));
    const last = logits.subarray(3 * model.config.vocabSize);
    const probabilities = samplingProbabilities(last, { temperature, topK: last.length, topP: 1 });
    // One step over a batch of identical prompts: the rows' draws are successive draws of one generator.
    const { sequences } = await model.generate(
      { inputIds: Array.from({ length: draws }, () => row) },
      { maxNewTokens: 1, doSample: true, temperature, seed: 21 },
    );
    const counts = new Array<number>(last.length).fill(0);
    for (const sequence of sequences) counts[sequence[4]]++;
    const fit = chiSquare(counts, probabilities, draws);
    expect(fit.df).toBeGreaterThan(5);
    expect(fit.statistic).toBeLessThan(criticalValue(fit.df));
    const wrong = samplingProbabilities(last, { temperature: 1, topK: last.length, topP: 1 });
    const misfit = chiSquare(counts, wrong, draws);
    expect(misfit.statistic).toBeGreaterThan(criticalValue(misfit.df));
    model.dispose();
  });

  it('top-k and top-p keep the tokens transformers keeps', () => {
    expect(topIndices([0.5, 3, -1, 3, 2, 0.5], 4)).toEqual([1, 3, 4, 0]);
    expect(topIndices([1, 2], 5)).toEqual([1, 0]);
    const logits = [2, 1, 0.5, 3, 0.5, -1];
    const topK = samplingProbabilities(logits, { temperature: 1, topK: 3, topP: 1 });
    // The third largest is 1: tokens 3, 0, 1 kept.
    expect([...topK].map((p) => p > 0)).toEqual([true, true, false, true, false, false]);
    const ties = samplingProbabilities(logits, { temperature: 1, topK: 4, topP: 1 });
    // A tie at the k-th score keeps both tokens that have it.
    expect([...ties].map((p) => p > 0)).toEqual([true, true, true, true, true, false]);
    const full = samplingProbabilities(logits, { temperature: 1, topK: 6, topP: 1 });
    // top-p 0.7: token 3 (≈0.56) alone stays below 0.7, so token 0 (≈0.21) joins; the rest are removed.
    const nucleus = samplingProbabilities(logits, { temperature: 1, topK: 6, topP: 0.7 });
    expect([...nucleus].map((p) => p > 0)).toEqual([true, false, false, true, false, false]);
    expect(nucleus[3]).toBeCloseTo(full[3] / (full[3] + full[0]), 12);
    const halved = samplingProbabilities(logits, { temperature: 0.5, topK: 6, topP: 1 });
    const expected = logits.map((value) => Math.exp(2 * value));
    const total = expected.reduce((sum, value) => sum + value, 0);
    expect(
      relativeError(
        halved,
        expected.map((value) => value / total),
      ),
    ).toBeLessThan(1e-12);
  });

  it('beam search with one beam is greedy decoding; with three, scores are length-normalised log-probabilities', async () => {
    const model = loadDecoder('gpt2');
    const options = { maxNewTokens: 8, eosTokenId: null };
    const greedy = await model.generate(prompt, options);
    expect((await model.generate(prompt, { ...options, numBeams: 1 })).sequences).toEqual(greedy.sequences);
    const oneBeam = await generate(model, prompt, options, 'beam');
    expect(oneBeam.sequences).toEqual(greedy.sequences);

    const beams = await model.generate(prompt, { maxNewTokens: 5, numBeams: 3, eosTokenId: null, lengthPenalty: 0.5 });
    // Recompute each returned sequence's log-probability with forward.
    const { sequences, sequencesScores } = beams;
    const logits = tidy(() =>
      noGrad(() =>
        model
          .forward({
            inputIds: sequences,
            attentionMask: sequences.map((row, index) =>
              row.map((_, at) => (at < 7 ? prompt.attentionMask[index][at] : 1)),
            ),
            positionIds: sequences.map((_, index) =>
              Array.from(positionsFromMask(Int32Array.from([...prompt.attentionMask[index], 1, 1, 1, 1, 1]), 1, 12)),
            ),
          })
          .logits.toFloat32Array(),
      ),
    );
    const vocab = model.config.vocabSize;
    sequences.forEach((row, index) => {
      let total = 0;
      for (let at = 7; at < 12; at++) {
        const scores = Array.from(logits.subarray((index * 12 + at - 1) * vocab, (index * 12 + at) * vocab));
        const max = Math.max(...scores);
        const logSum = max + Math.log(scores.reduce((sum, value) => sum + Math.exp(value - max), 0));
        total += scores[row[at]] - logSum;
      }
      expect(sequencesScores![index]).toBeCloseTo(total / 5 ** 0.5, 4);
    });
    model.dispose();
  });

  it('beam search ends beams at eos: scored over their length with eos, padded after, the best first', async () => {
    const model = loadDecoder('gpt2');
    const reference = readCase('gpt2');
    const inputs = { inputIds: reference.input_ids, attentionMask: reference.attention_mask };
    // 77 is GPT-2's favourite continuation here (greedy ends rows 0 and 2 with runs of it).
    const lengthPenalty = 1.5;
    const { sequences, sequencesScores } = await model.generate(inputs, {
      maxNewTokens: 6,
      numBeams: 3,
      eosTokenId: 77,
      padTokenId: 1,
      lengthPenalty,
    });
    const vocab = model.config.vocabSize;
    const length = sequences[0].length;
    let ended = 0;
    sequences.forEach((row, index) => {
      const generated = row.slice(12);
      const end = generated.indexOf(77);
      const count = end === -1 ? generated.length : end + 1;
      if (end !== -1) {
        ended++;
        expect(generated.slice(count)).toEqual(new Array(generated.length - count).fill(1));
      }
      // The score is the summed log-probability of the new tokens (eos included) over count^lengthPenalty.
      const ids = [row.slice(0, 12 + count)];
      const mask = [[...reference.attention_mask[index], ...new Array<number>(count).fill(1)]];
      const positionIds = [Array.from(positionsFromMask(Int32Array.from(mask[0]), 1, 12 + count))];
      const logits = tidy(() =>
        noGrad(() => model.forward({ inputIds: ids, attentionMask: mask, positionIds }).logits.toFloat32Array()),
      );
      let total = 0;
      for (let at = 12; at < 12 + count; at++) {
        const scores = Array.from(logits.subarray((at - 1) * vocab, at * vocab));
        const max = Math.max(...scores);
        total += scores[ids[0][at]] - max - Math.log(scores.reduce((sum, value) => sum + Math.exp(value - max), 0));
      }
      expect(sequencesScores![index]).toBeCloseTo(total / count ** lengthPenalty, 4);
    });
    expect(ended).toBeGreaterThan(0);
    expect(length).toBeLessThanOrEqual(18);
    model.dispose();
  });

  it('finished rows are padded with the pad token (the eos token when there is none), and a row that ends early stops', async () => {
    const model = loadDecoder('gpt2');
    // The fixture's rows produce 77, 48 and 33 first: make 33 the end token.
    const reference = readCase('gpt2');
    const inputs = { inputIds: reference.input_ids, attentionMask: reference.attention_mask };
    const { sequences } = await model.generate(inputs, { maxNewTokens: 8, eosTokenId: 33, padTokenId: 1 });
    expect(sequences[2].slice(12)).toEqual([33, 1, 1, 1, 1, 1, 1, 1]);
    expect(sequences[1].slice(12)).toEqual(reference.generated[1].slice(12, 16).concat([33, 1, 1, 1]));
    // Every row has finished after 3 tokens (row 0 ends on 77): generation stops there.
    const stopped = await model.generate(inputs, { maxNewTokens: 8, eosTokenId: [33, 77] });
    expect(stopped.sequences[0].length).toBe(15);
    model.generationConfig = { ...model.generationConfig, padTokenId: undefined };
    const eosPadded = await model.generate(inputs, { maxNewTokens: 8, eosTokenId: [33, 48] });
    expect(eosPadded.sequences[2].slice(12, 14)).toEqual([33, 33]);
    model.dispose();
  });

  it('streams each step to onToken, yields to the event loop between tokens, and stops on abort', async () => {
    const model = loadDecoder('llama');
    const events: { step: number; tokens: number[] }[] = [];
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const { sequences } = await model.generate(prompt, {
      maxNewTokens: 6,
      eosTokenId: null,
      onToken: ({ step, tokens }) => events.push({ step, tokens }),
    });
    clearInterval(timer);
    expect(events.map(({ step }) => step)).toEqual([0, 1, 2, 3, 4, 5]);
    events.forEach(({ step, tokens }) => expect(tokens).toEqual(sequences.map((row) => row[7 + step])));
    expect(ticks).toBeGreaterThan(0);

    const controller = new AbortController();
    const aborted = model.generate(prompt, {
      maxNewTokens: 20,
      onToken: ({ step }) => {
        if (step === 2) controller.abort(new Error('enough'));
      },
      signal: controller.signal,
    });
    await expect(aborted).rejects.toThrow('enough');
    model.dispose();
  });

  it('generation frees every tensor it made: greedy, sampling, beams, without the cache, and when aborted', async () => {
    const model = loadDecoder('llama');
    const before = memory().tensors;
    await model.generate(prompt, { maxNewTokens: 4 });
    await model.generate(prompt, { maxNewTokens: 4, doSample: true, seed: 1 });
    await model.generate(prompt, { maxNewTokens: 4, numBeams: 2 });
    await model.generate(prompt, { maxNewTokens: 4, useCache: false });
    const controller = new AbortController();
    await expect(
      model.generate(prompt, { maxNewTokens: 9, signal: controller.signal, onToken: () => controller.abort() }),
    ).rejects.toThrow();
    expect(memory().tensors).toBe(before);
    model.dispose();
  });

  it('trains in train mode: dropout (attention inside the fused op) is seeded, gradients are finite', () => {
    const config = {
      ...readConfig('gpt2'),
      model_type: 'gpt2' as const,
      attn_pdrop: 0.2,
      resid_pdrop: 0.1,
      embd_pdrop: 0.1,
    };
    const losses = [1, 2].map(() => {
      const model = models.fromConfig(config, { seed: 4 });
      if (!(model instanceof models.GPT2LMHeadModel)) throw new Error('expected GPT-2');
      const { logits, loss } = model.forward({ inputIds: prompt.inputIds, labels: prompt.inputIds });
      loss!.backward();
      const gradient = model.transformer.h[0].attn.c_attn.weight.grad!.toFloat32Array();
      expect(gradient.every(Number.isFinite)).toBe(true);
      const value = loss!.item();
      logits.dispose();
      loss!.dispose();
      model.eval();
      const evaluated = tidy(() =>
        noGrad(() => model.forward({ inputIds: prompt.inputIds, labels: prompt.inputIds }).loss!.item()),
      );
      model.dispose();
      return { value, evaluated };
    });
    // The same seed replays the same masks; eval mode turns them off, and the loss changes.
    expect(losses[1].value).toBe(losses[0].value);
    expect(losses[0].evaluated).not.toBe(losses[0].value);
  });

  it('bad options and inputs are TypeErrors or RangeErrors naming them', async () => {
    const model = loadDecoder('gpt2');
    const cases: [object, RegExp, ErrorConstructor][] = [
      [{ max_new_tokens: 3 }, /unknown option 'max_new_tokens'/, TypeError],
      [{ maxNewTokens: -1 }, /maxNewTokens must be an integer in \[0/, RangeError],
      [{ maxNewTokens: 1.5 }, /maxNewTokens/, RangeError],
      [{ maxNewTokens: 40 }, /exceeds the 40 positions/, RangeError],
      [{ doSample: true, temperature: 0 }, /temperature must be a finite number above 0/, RangeError],
      [{ doSample: true, topK: 0 }, /topK must be an integer in \[1/, RangeError],
      [{ doSample: true, topP: 1.5 }, /topP must be in \(0, 1\]/, RangeError],
      [{ temperature: 0.5 }, /temperature needs doSample: true/, TypeError],
      [{ numBeams: 0 }, /numBeams must be an integer in \[1/, RangeError],
      [{ numBeams: 2, doSample: true }, /numBeams > 1 with doSample/, RangeError],
      [{ lengthPenalty: 2 }, /lengthPenalty needs numBeams > 1/, TypeError],
      [{ numBeams: 2, onToken: () => {} }, /onToken streams greedy or sampled tokens/, TypeError],
      [{ eosTokenId: 89 }, /eosTokenId\[0\] must be a token id in \[0, 89\)/, RangeError],
      [{ doSample: 'yes' }, /doSample must be true or false/, TypeError],
      [{ signal: {} }, /signal must be an AbortSignal/, TypeError],
      [{ onToken: 3 }, /onToken must be a function/, TypeError],
    ];
    for (const [options, message, kind] of cases) {
      const result = model.generate({ inputIds: [[5, 6]] }, options as models.GenerateOptions);
      await expect(result, JSON.stringify(options)).rejects.toThrow(message);
      await expect(result).rejects.toBeInstanceOf(kind);
    }
    await expect(model.generate({ inputIds: [[5, 6, 0]], attentionMask: [[1, 1, 0]] })).rejects.toThrow(
      /row 0 of attentionMask ends in padding; .* pad on the left/,
    );
    await expect(model.generate({ inputIds: [[5, 89]] })).rejects.toThrow(/inputIds\[0\]\[1\] is 89/);
    await expect(model.generate({ inputIds: [[]] })).rejects.toThrow(RangeError);
    expect(() => model.forward({ inputIds: [[5, 6]], labels: [[5, 6, 7]] })).toThrow(/labels/);
    expect(() => model.forward({ inputIds: [[5, 6]], labels: [[5, 95]] })).toThrow(/labels\[1\] is 95/);
    expect(() => model.forward({ inputIds: [[5, 6]], positionIds: [[0, 50]] })).toThrow(
      /position 50 .*outside the 40 learned positions \(n_positions\)/,
    );
    model.dispose();
  });
});

describe("the cache's and the checkpoints' shape ops", () => {
  it('concat joins along an axis and hands each part its slice of the gradient; transpose2d transposes', () => {
    const first = randomTensor([2, 3, 2, 4]).requireGrad();
    const second = randomTensor([2, 3, 5, 4]).requireGrad();
    const joined = ops.concat(first, second, 2);
    expect(joined.shape).toEqual([2, 3, 7, 4]);
    const [a, b, c] = [first.toFloat32Array(), second.toFloat32Array(), joined.toFloat32Array()];
    for (let outer = 0; outer < 6; outer++) {
      expect(c.subarray(outer * 28, outer * 28 + 8)).toEqual(a.subarray(outer * 8, outer * 8 + 8));
      expect(c.subarray(outer * 28 + 8, outer * 28 + 28)).toEqual(b.subarray(outer * 20, outer * 20 + 20));
    }
    checkGradients('concat', ([x, y]) => ops.concat(x, y, -2), [first, second]);
    expect(() => ops.concat(first, randomTensor([2, 3, 2, 5]), 2)).toThrow(/differ outside axis 2/);
    expect(() => ops.concat(first, second, 4)).toThrow(RangeError);
    const matrix = randomTensor([3, 5]).requireGrad();
    const flipped = ops.transpose2d(matrix);
    expect(flipped.shape).toEqual([5, 3]);
    const [m, t] = [matrix.toFloat32Array(), flipped.toFloat32Array()];
    for (let row = 0; row < 3; row++) for (let col = 0; col < 5; col++) expect(t[col * 3 + row]).toBe(m[row * 5 + col]);
    checkGradients('transpose2d', ([x]) => ops.transpose2d(x), [matrix]);
    for (const tensor of [first, second, joined, matrix, flipped]) tensor.dispose();
  });
});

describe('decoder configs', () => {
  const llamaConfig = () =>
    JSON.parse(readFileSync(join(root, 'llama', 'config.json'), 'utf8')) as Record<string, unknown>;

  it('a Qwen2 config (the llama fixture with q/k/v biases) builds, runs and generates the same with and without the cache', async () => {
    const model = models.fromConfig(
      { ...llamaConfig(), architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', tie_word_embeddings: true },
      { seed: 3 },
    );
    expect(model).toBeInstanceOf(models.Qwen2ForCausalLM);
    const names = model.namedParameters().map(([name]) => name);
    expect(names).toContain('model.layers.0.self_attn.q_proj.bias');
    expect(names).toContain('model.layers.1.self_attn.v_proj.bias');
    expect(names).not.toContain('model.layers.0.self_attn.o_proj.bias');
    expect(names).not.toContain('lm_head.weight');
    expect(model.parameterCount()).toBe(models.parameterCount(model.config));
    model.eval();
    const inputs = {
      inputIds: [
        [0, 4, 5, 6],
        [7, 8, 9, 10],
      ],
      attentionMask: [
        [0, 1, 1, 1],
        [1, 1, 1, 1],
      ],
    };
    const { logits, loss } = model.forward({
      ...inputs,
      labels: [
        [-100, 4, 5, 6],
        [7, 8, 9, 10],
      ],
    });
    expect(logits.shape).toEqual([2, 4, 89]);
    expect(Number.isFinite(loss!.item())).toBe(true);
    const options = { maxNewTokens: 5, eosTokenId: null };
    const cached = await model.generate(inputs, options);
    expect((await model.generate(inputs, { ...options, useCache: false })).sequences).toEqual(cached.sequences);
    logits.dispose();
    loss!.dispose();
    model.dispose();
  });

  it('parameter counts agree with the built models', () => {
    for (const folder of ['gpt2', 'llama']) {
      const model = loadDecoder(folder);
      expect(model.parameterCount()).toBe(models.parameterCount(model.config));
      model.dispose();
    }
  });

  it('options bidora does not implement are refused, naming the key', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [
        { ...llamaConfig(), rope_parameters: { rope_theta: 10000, rope_type: 'llama3' } },
        /rope_type "llama3" is not supported/,
      ],
      [{ ...llamaConfig(), rope_scaling: { type: 'linear', factor: 2 } }, /rope_scaling.rope_type "linear"/],
      [{ ...llamaConfig(), hidden_act: 'gelu' }, /hidden_act "gelu" is not supported/],
      [
        { ...llamaConfig(), num_key_value_heads: 3 },
        /num_attention_heads 4 is not a multiple of num_key_value_heads 3/,
      ],
      [{ ...llamaConfig(), head_dim: 7 }, /head_dim 7 must be even/],
      [{ ...llamaConfig(), eos_token_id: [2, 90] }, /eos_token_id\[1\] must be a token id in \[0, 89\)/],
      [
        { ...llamaConfig(), model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'], use_sliding_window: true },
        /use_sliding_window/,
      ],
      [{ model_type: 'gpt2', add_cross_attention: true }, /add_cross_attention true is not supported/],
      [{ model_type: 'gpt2', activation_function: 'swish' }, /activation_function "swish" is not supported/],
      [{ model_type: 'gpt2', n_embd: 10, n_head: 4 }, /n_embd 10 is not a multiple of n_head 4/],
      [
        { model_type: 'gpt2', architectures: ['LlamaForCausalLM'] },
        /model_type "gpt2" disagrees with architecture 'LlamaForCausalLM'/,
      ],
    ];
    for (const [config, message] of cases) {
      expect(() => models.parseConfig(config), message.source).toThrow(message);
    }
  });

  it('rope_theta is read from rope_parameters (transformers 5) or the top level', () => {
    const config = models.parseConfig({ ...llamaConfig(), rope_parameters: undefined, rope_theta: 500000 });
    expect(config.task === 'causal-lm' && config.ropeTheta).toBe(500000);
    const nested = models.parseConfig({ ...llamaConfig(), rope_parameters: { rope_theta: 1e6, rope_type: 'default' } });
    expect(nested.task === 'causal-lm' && nested.ropeTheta).toBe(1e6);
  });
});
