// Adapters, training and evaluation on causal language models: PEFT's DoRA folders for GPT-2 (Conv1D, fan_in_fan_out)
// and Llama against PEFT's logits, save → load round trips, merge and unmerge on every decoder projection, Trainer and
// BiLevelTrainer lowering the loss of a tiny model, and evaluation's loss against one computed here from the logits.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { adapters, io, models, noGrad, Tensor, train } from '../lib/index';
import { CharTokenizer } from '../lib/tokenizers/index';
import { relativeError } from './helpers';

const root = join(__dirname, 'fixtures', 'hf-families');
const scratch = mkdtempSync(join(tmpdir(), 'bidora-causal-lm-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Case {
  input_ids: number[][];
  attention_mask: number[][];
  logits: number[][][];
  base: string;
}

const readCase = (folder: string) => JSON.parse(readFileSync(join(root, folder, 'case.json'), 'utf8')) as Case;
const flat = (values: unknown): number[] => (values as unknown[]).flat(Infinity as 1) as number[];
const load = (folder: string) => models.load(join(root, folder)).eval();

function logitsOf(model: train.TrainableModel, batch: { input_ids: number[][]; attention_mask: number[][] }) {
  return noGrad(() => {
    const { logits } = model.forward({ inputIds: batch.input_ids, attentionMask: batch.attention_mask });
    const values = logits.toFloat32Array();
    logits.dispose();
    return values;
  });
}

/** The logits at attended positions only (mask 1), row by row. */
function attended(logits: ArrayLike<number>, mask: number[][], vocab: number): number[] {
  const values: number[] = [];
  mask.flat().forEach((keep, position) => {
    if (keep === 1) for (let id = 0; id < vocab; id++) values.push(logits[position * vocab + id]);
  });
  return values;
}

const peftFolders = [
  { folder: 'peft-dora-gpt2', targets: ['c_attn'], fanInFanOut: true },
  { folder: 'peft-dora-llama', targets: ['q_proj', 'v_proj'], fanInFanOut: false },
];

describe("PEFT's DoRA folders on decoders", () => {
  for (const { folder, targets, fanInFanOut } of peftFolders) {
    it(`${folder}: loads onto its base and gives PEFT's logits at every attended position (left-padded)`, () => {
      const reference = readCase(folder);
      const model = load(reference.base);
      const config = adapters.load(model, join(root, folder));
      expect(config.method).toBe('dora');
      expect(config.targetModules).toEqual(targets);
      // The attended positions: those whose query sees a key. At left padding before a row's first token the query
      // sees none, and these fixtures hold what SDPA gives there (a zero attention output, as the fused op), where
      // the base models' cases and bidora reproduce eager attention (a uniform mean over the row's keys); no real
      // token reads those positions.
      const vocab = reference.logits[0][0].length;
      const ours = attended(logitsOf(model, reference), reference.attention_mask, vocab);
      const theirs = attended(flat(reference.logits), reference.attention_mask, vocab);
      expect(ours.length).toBe(reference.attention_mask.flat().filter((keep) => keep === 1).length * vocab);
      expect(relativeError(ours, theirs)).toBeLessThan(1e-4);
      model.dispose();
    });

    it(`${folder}: saves as PEFT does (CAUSAL_LM, fan_in_fan_out ${fanInFanOut}, the same tensor names) and loads back`, () => {
      const reference = readCase(folder);
      const model = load(reference.base);
      adapters.load(model, join(root, folder));
      const dir = join(scratch, `${folder}-saved`);
      adapters.save(model, dir);
      const written = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      expect(written.task_type).toBe('CAUSAL_LM');
      expect(written.fan_in_fan_out).toBe(fanInFanOut);
      expect(written.use_dora).toBe(true);
      const names = (file: string) => [...io.readSafetensors(file).tensors.keys()].sort();
      expect(names(join(dir, 'adapter_model.safetensors'))).toEqual(
        names(join(root, folder, 'adapter_model.safetensors')),
      );
      const reloaded = load(reference.base);
      adapters.load(reloaded, dir);
      expect(logitsOf(reloaded, reference)).toEqual(logitsOf(model, reference));
      model.dispose();
      reloaded.dispose();
    });
  }
});

describe('adapters on every decoder projection', () => {
  const llamaTargets = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
  // Qwen2 (q, k and v with biases) has no fixture: a tiny one is built here, run on llama's batch.
  const tinyQwen2 = (): train.TrainableModel =>
    models
      .fromConfig(
        {
          architectures: ['Qwen2ForCausalLM'],
          model_type: 'qwen2',
          vocab_size: 89,
          hidden_size: 48,
          num_hidden_layers: 2,
          num_attention_heads: 4,
          num_key_value_heads: 2,
          intermediate_size: 80,
          max_position_embeddings: 64,
          tie_word_embeddings: true,
        },
        { seed: 9 },
      )
      .eval();
  const cases = [
    // c_proj names both the attention's output and the MLP's: four Conv1D layers per GPT-2 block.
    {
      base: 'gpt2',
      build: (): train.TrainableModel => load('gpt2'),
      batch: 'peft-dora-gpt2',
      targets: ['c_attn', 'c_proj', 'c_fc'],
      perBlock: 4,
    },
    {
      base: 'llama',
      build: (): train.TrainableModel => load('llama'),
      batch: 'peft-dora-llama',
      targets: llamaTargets,
      perBlock: 7,
    },
    { base: 'qwen2', build: tinyQwen2, batch: 'peft-dora-llama', targets: llamaTargets, perBlock: 7 },
  ];
  for (const { base, build, batch, targets, perBlock } of cases) {
    for (const method of adapters.ADAPTER_METHOD_NAMES) {
      it(`${base}, ${method}: starts at the base model; merge and unmerge keep the logits`, () => {
        const reference = readCase(batch);
        const model = build();
        const before = logitsOf(model, reference);
        const groups = adapters.apply(model, { method, r: 4, alpha: 8, targetModules: targets, seed: 5 });
        const layers = adapters.adaptedLayers(model);
        // Every projection of every block is adapted, each A [r, in] and B [out, r] as in PEFT.
        expect(layers.length).toBe(perBlock * 2);
        for (const { layer, adapter } of layers) {
          expect(adapter.loraA.shape).toEqual([4, layer.inFeatures]);
          expect(adapter.loraB.shape).toEqual([layer.outFeatures, 4]);
        }
        expect(relativeError(logitsOf(model, reference), before)).toBeLessThan(1e-5);
        // Move B off zero (and m off ||W0||) so the adapters change the output.
        for (const [index, { tensor }] of [...groups.direction, ...groups.magnitude].entries()) {
          const noise = Tensor.randn(tensor.shape, { seed: 100 + index, std: 0.05 });
          const current = tensor.toFloat32Array();
          tensor.copyFrom(noise.toFloat32Array().map((value, position) => value + current[position]));
          noise.dispose();
        }
        const adapted = logitsOf(model, reference);
        expect(relativeError(adapted, before)).toBeGreaterThan(1e-3);
        adapters.merge(model);
        expect(relativeError(logitsOf(model, reference), adapted)).toBeLessThan(1e-4);
        adapters.unmerge(model);
        expect(relativeError(logitsOf(model, reference), adapted)).toBeLessThan(1e-4);
        model.dispose();
      });
    }
  }
});

/** A tiny GPT-2 over a character vocabulary, freshly initialised, and its data: words spelled backwards. */
function tinyTask() {
  const words = ['cat', 'dog', 'bird', 'fish', 'frog', 'moth', 'deer', 'lion', 'bear', 'wolf', 'hare', 'crab'];
  const tokenizer = CharTokenizer.fromTexts([...words, '=']);
  const model = models.fromConfig(
    {
      architectures: ['GPT2LMHeadModel'],
      model_type: 'gpt2',
      vocab_size: tokenizer.vocabSize,
      n_embd: 32,
      n_layer: 2,
      n_head: 4,
      n_positions: 32,
      eos_token_id: tokenizer.sepId,
      bos_token_id: tokenizer.clsId,
      pad_token_id: tokenizer.padTokenId,
    },
    { seed: 1 },
  );
  const rows = words.map((word) => ({ prompt: `${word}=`, completion: [...word].reverse().join('') }));
  const examples = train.causalExamples(rows, {
    tokenize: (text) => tokenizer.tokenize(text),
    eosTokenId: tokenizer.sepId,
  });
  return { model, examples, tokenizer };
}

describe('training a causal LM', () => {
  it('evaluation: the loss is the mean over predicted tokens of −log softmax, computed here from the logits', () => {
    const { model, examples } = tinyTask();
    model.eval();
    const evaluation = train.evaluate(model, examples, 5);
    let total = 0;
    let count = 0;
    for (const example of examples) {
      const logits = noGrad(() => model.forward({ inputIds: [example.inputIds] }).logits);
      const values = logits.toFloat32Array();
      const vocabulary = logits.shape[2];
      logits.dispose();
      const labels = example.label as number[];
      for (let position = 0; position + 1 < labels.length; position++) {
        const next = labels[position + 1];
        if (next === -100) continue;
        const row = Array.from(values.subarray(position * vocabulary, (position + 1) * vocabulary), Number);
        const most = Math.max(...row);
        const logSum = most + Math.log(row.reduce((sum, value) => sum + Math.exp(value - most), 0));
        total += logSum - row[next];
        count++;
      }
    }
    expect(Math.abs(evaluation.loss - total / count) / (total / count)).toBeLessThan(1e-5);
    expect(evaluation.metrics.perplexity).toBeCloseTo(Math.exp(evaluation.loss), 10);
    expect(evaluation.metrics.tokenAccuracy).toBeGreaterThanOrEqual(0);
    expect(evaluation.predictions.length).toBe(count);
    model.dispose();
  });

  it('Trainer with DoRA lowers the loss on the completions', async () => {
    const { model, examples } = tinyTask();
    adapters.apply(model, { method: 'dora', r: 4, alpha: 8, targetModules: ['c_attn', 'c_proj', 'c_fc'], seed: 2 });
    const trainer = new train.Trainer({ model, batchSize: 4, maxSteps: 60, seed: 3, optimizer: { lr: 1e-2 } });
    const before = train.evaluate(model, examples).loss;
    const result = await trainer.fit(examples);
    const after = train.evaluate(model, examples).loss;
    expect(result.steps).toBe(60);
    // The base is random and only rank-4 adapters train: a clear fall, not a solved task.
    expect(after).toBeLessThan(0.92 * before);
    trainer.dispose();
    model.dispose();
  });

  it('BiLevelTrainer splits per example and lowers the loss; the best evaluation is kept by loss', async () => {
    const { model, examples } = tinyTask();
    adapters.apply(model, { method: 'bidora', r: 4, alpha: 8, targetModules: ['c_attn', 'c_fc'], seed: 2 });
    const trainer = new train.BiLevelTrainer({
      model,
      batchSize: 4,
      maxSteps: 40,
      seed: 3,
      lowerOptimizer: { lr: 1e-2 },
      upperOptimizer: { lr: 1e-2 },
    });
    const before = train.evaluate(model, examples).loss;
    const result = await trainer.fit(examples, { evalExamples: examples, evalEvery: 20 });
    expect(result.evals.length).toBe(2);
    expect(result.best!.loss).toBe(Math.min(...result.evals.map((record) => record.loss)));
    expect(result.history.some((record) => Number.isFinite(record.upperLoss))).toBe(true);
    expect(train.evaluate(model, examples).loss).toBeLessThan(before);
    trainer.dispose();
    model.dispose();
  });

  it('packed blocks train too (no padding, prompt labels kept out)', async () => {
    const { model, examples } = tinyTask();
    const blocks = train.packExamples(examples, 16);
    expect(blocks.every((block) => block.inputIds.length === 16)).toBe(true);
    adapters.apply(model, { method: 'lora', r: 4, targetModules: ['c_attn'], seed: 2 });
    const trainer = new train.Trainer({ model, batchSize: 2, maxSteps: 5, seed: 3 });
    const result = await trainer.fit(blocks);
    expect(result.history.every((record) => Number.isFinite(record.loss))).toBe(true);
    trainer.dispose();
    model.dispose();
  });
});

describe('generating and scoring completions', () => {
  /** A stand-in model that records what generate got and answers each row with fixed tokens. */
  function recordingModel(answers: number[][]) {
    const calls: { ids: number[]; mask: number[]; shape: number[]; options: Record<string, unknown> }[] = [];
    const model = {
      config: { padTokenId: undefined, eosTokenIds: [9, 8], task: 'causal-lm' },
      training: true,
      eval() {
        this.training = false;
        return this;
      },
      train(mode = true) {
        this.training = mode;
        return this;
      },
      async generate(
        inputs: { inputIds: { data: Int32Array; shape: number[] }; attentionMask: { data: Int32Array } },
        options: Record<string, unknown>,
      ) {
        calls.push({
          ids: [...inputs.inputIds.data],
          mask: [...inputs.attentionMask.data],
          shape: [...inputs.inputIds.shape],
          options,
        });
        const [rows, width] = inputs.inputIds.shape;
        const start = calls.length === 1 ? 0 : 2;
        return {
          sequences: Array.from({ length: rows }, (_, row) => [
            ...inputs.inputIds.data.slice(row * width, (row + 1) * width),
            ...answers[start + row],
          ]),
        };
      },
    };
    return { model: model as unknown as train.GeneratingModel, calls, state: model };
  }

  it('left-pads each batch with the eos (no pad token), cuts at the first of any eos, restores train mode', async () => {
    const { model, calls, state } = recordingModel([[5, 6, 8, 7], [4], [9, 1], [3, 3]]);
    const completions = await train.generateCompletions(model, [[1, 2, 3], [4], [5, 6], [7]], {
      batchSize: 2,
      maxNewTokens: 4,
    });
    expect(completions).toEqual([[5, 6], [4], [], [3, 3]]);
    expect(calls[0].ids).toEqual([1, 2, 3, 9, 9, 4]);
    expect(calls[0].mask).toEqual([1, 1, 1, 0, 0, 1]);
    expect(calls[1].shape).toEqual([2, 2]);
    expect(calls[0].options).toEqual({ maxNewTokens: 4 });
    expect(state.training).toBe(true);
    const sampled = recordingModel([[1], [1], [1], [1]]);
    await train.generateCompletions(sampled.model, [[1], [2], [3]], { batchSize: 2, doSample: true, seed: 4 });
    const seeds = sampled.calls.map((call) => call.options.seed);
    expect(new Set(seeds).size).toBe(2);
    expect(seeds.every((seed) => Number.isInteger(seed))).toBe(true);
    await expect(train.generateCompletions(model, [[]])).rejects.toThrow(/prompt 0 must be a non-empty/);
    await expect(train.generateCompletions(model, [[1]], { batchSize: 0 })).rejects.toThrow(/batchSize/);
  });

  it('a tiny GPT-2: greedy completions do not depend on the batch (left padding), and the scores are theirs', async () => {
    const { model, examples, tokenizer } = tinyTask();
    const prompts = examples.map((example) =>
      example.inputIds.filter((_, position) => (example.label as number[])[position] === -100),
    );
    const alone = await train.generateCompletions(model as unknown as train.GeneratingModel, prompts, {
      batchSize: 1,
      maxNewTokens: 5,
    });
    const together = await train.generateCompletions(model as unknown as train.GeneratingModel, prompts, {
      batchSize: 12,
      maxNewTokens: 5,
    });
    expect(together).toEqual(alone);
    const references = examples.map((example) =>
      (example.label as number[]).filter((id) => id !== -100 && id !== tokenizer.sepId),
    );
    const scored = await train.evaluateGeneration(
      model as unknown as train.GeneratingModel,
      prompts.map((prompt, index) => ({ prompt, reference: references[index] })),
      { maxNewTokens: 5 },
    );
    expect(scored.completions).toEqual(alone);
    expect(scored.metrics).toEqual(train.generationMetrics(alone, references));
    model.dispose();
  });
});
