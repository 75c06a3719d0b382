// BERT and RoBERTa classifiers: Hugging Face names, forward shapes and losses, a finite-difference check of a whole
// tiny BERT with DoRA on query and value, save → load round trips, and transformers-style load reports.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { adapters, io, memory, models, type nn, Tensor, tidy } from '../lib/index';
import { tinyBertConfig } from './fixtures/tiny-bert';
import { checkGradients } from './gradcheck';
import { randomTensor } from './helpers';

const folders: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), 'bidora-models-'));
  folders.push(dir);
  return dir;
};
afterAll(() => folders.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

const tinyConfig = tinyBertConfig;

const inputIds = [
  [2, 7, 9, 11, 3, 0, 0],
  [2, 5, 6, 8, 12, 13, 3],
];
const attentionMask = inputIds.map((row) => row.map((id) => (id === 0 ? 0 : 1)));

describe('BERT-family classifiers', () => {
  it('use Hugging Face parameter names', () => {
    const bert = models.fromConfig(tinyConfig());
    const names = bert.namedParameters().map(([name]) => name);
    expect(names).toContain('bert.embeddings.word_embeddings.weight');
    expect(names).toContain('bert.embeddings.LayerNorm.weight');
    expect(names).toContain('bert.encoder.layer.0.attention.self.query.weight');
    expect(names).toContain('bert.encoder.layer.1.attention.output.LayerNorm.bias');
    expect(names).toContain('bert.encoder.layer.1.intermediate.dense.weight');
    expect(names).toContain('bert.encoder.layer.0.output.dense.bias');
    expect(names).toContain('bert.pooler.dense.weight');
    expect(names).toContain('classifier.weight');
    bert.dispose();
    const roberta = models.fromConfig(
      tinyConfig({ architectures: ['RobertaForSequenceClassification'], model_type: 'roberta' }),
    );
    const robertaNames = roberta.namedParameters().map(([name]) => name);
    expect(robertaNames).toContain('roberta.encoder.layer.0.attention.self.key.weight');
    expect(robertaNames).toContain('classifier.dense.weight');
    expect(robertaNames).toContain('classifier.out_proj.bias');
    expect(robertaNames.some((name) => name.includes('pooler'))).toBe(false);
    roberta.dispose();
  });

  it('return [batch, numLabels] logits and the loss transformers computes', () => {
    const model = models.fromConfig(tinyConfig()).eval();
    tidy(() => {
      const { logits, loss } = model.forward({ inputIds, attentionMask, labels: [1, 2] });
      expect(logits.shape).toEqual([2, 3]);
      const values = logits.toFloat32Array();
      const expected =
        [1, 2].reduce((total, label, row) => {
          const rowValues = Array.from(values.slice(row * 3, row * 3 + 3));
          const max = Math.max(...rowValues);
          const logSum = Math.log(rowValues.reduce((sum, value) => sum + Math.exp(value - max), 0)) + max;
          return total + (logSum - rowValues[label]);
        }, 0) / 2;
      expect(loss!.item()).toBeCloseTo(expected, 5);
      // Padding is masked: changing a padded id changes nothing.
      const changed = model.forward({ inputIds: [[2, 7, 9, 11, 3, 30, 31], inputIds[1]], attentionMask }).logits;
      expect(Array.from(changed.toFloat32Array())).toEqual(Array.from(values));
    });
    const regression = models.fromConfig(tinyConfig({ num_labels: 1 })).eval();
    tidy(() => {
      const { logits, loss } = regression.forward({ inputIds, attentionMask, labels: [0.5, -1.5] });
      const predictions = logits.toFloat32Array();
      const expected = ((predictions[0] - 0.5) ** 2 + (predictions[1] + 1.5) ** 2) / 2;
      expect(loss!.item()).toBeCloseTo(expected, 5);
    });
    model.dispose();
    regression.dispose();
  });

  it('RoBERTa counts positions from padding_idx + 1 over real tokens', () => {
    const model = models.fromConfig(
      tinyConfig({ architectures: ['RobertaForSequenceClassification'], model_type: 'roberta', pad_token_id: 1 }),
    );
    const embeddings = (model as unknown as { roberta: { embeddings: { positionIds(ids: unknown): Int32Array } } })
      .roberta.embeddings;
    const positions = embeddings.positionIds({ data: Int32Array.from([0, 5, 6, 2, 1, 1]), batch: 1, seq: 6 });
    expect(Array.from(positions)).toEqual([2, 3, 4, 5, 1, 1]);
    model.dispose();
  });

  it('train mode applies dropout; eval mode is deterministic', () => {
    const model = models.fromConfig(tinyConfig({ hidden_dropout_prob: 0.3 }));
    tidy(() => {
      const first = model.forward({ inputIds }).logits.toFloat32Array();
      const second = model.forward({ inputIds }).logits.toFloat32Array();
      expect(first).not.toEqual(second);
      model.eval();
      const third = model.forward({ inputIds }).logits.toFloat32Array();
      expect(model.forward({ inputIds }).logits.toFloat32Array()).toEqual(third);
    });
    model.dispose();
  });

  it('forward refuses ids and labels that int32 storage would wrap, instead of reading another token or class', () => {
    const model = models.fromConfig(tinyConfig());
    const row = inputIds[0];
    for (const id of [2 ** 32 + 7, 2 ** 31, -1]) {
      const wrapped = [row.map((value, index) => (index === 1 ? id : value))];
      expect(() => model.forward({ inputIds: wrapped })).toThrow(/inputIds\[0\]\[1\] is -?\d+; expected an integer/);
    }
    for (const label of [2 ** 32, -1, 2 ** 31 + 1]) {
      expect(() => tidy(() => model.forward({ inputIds: [row], labels: [label] }))).toThrow(
        /labels\[0\] is -?\d+; expected a class in \[0, \d+\) or -100/,
      );
    }
    model.dispose();
  });
});

describe('a whole tiny BERT with DoRA on query and value', () => {
  it('matches central finite differences for input embeddings, A, B and magnitudes', () => {
    const model = models.fromConfig(tinyConfig({ hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 })).eval();
    adapters.apply(model, { method: 'bidora', r: 4, alpha: 8, targetModules: ['query', 'value'] });
    const layers = model
      .namedModules()
      .filter(
        (entry): entry is [string, nn.Linear] =>
          entry[1] instanceof Object && 'adapter' in entry[1] && entry[1].adapter !== undefined,
      )
      .map(([, layer]) => layer);
    expect(layers).toHaveLength(4);
    // Start away from the initial point (B = 0, m = ||W0||) so every gradient path is exercised.
    for (const layer of layers) {
      const adapter = layer.adapter!;
      adapter.loraB.dispose();
      adapter.loraB = Tensor.from(
        randomTensor([32, 4])
          .toFloat32Array()
          .map((value) => 0.2 * value),
        [32, 4],
      ).requireGrad();
      const magnitude = adapter.magnitude!.toFloat32Array();
      adapter.magnitude!.dispose();
      adapter.magnitude = Tensor.from(
        magnitude.map((value, index) => value * (1 + 0.1 * Math.sin(index))),
      ).requireGrad();
    }
    const embeddings = (model as unknown as { bert: { embeddings: { word_embeddings: nn.Embedding } } }).bert.embeddings
      .word_embeddings;
    embeddings.weight.requiresGrad = true;
    const slots = [
      { get: () => embeddings.weight, set: (tensor: Tensor) => (embeddings.weight = tensor) },
      ...layers.flatMap((layer) => [
        { get: () => layer.adapter!.loraA, set: (tensor: Tensor) => (layer.adapter!.loraA = tensor) },
        { get: () => layer.adapter!.loraB, set: (tensor: Tensor) => (layer.adapter!.loraB = tensor) },
        { get: () => layer.adapter!.magnitude!, set: (tensor: Tensor) => (layer.adapter!.magnitude = tensor) },
      ]),
    ];
    const originals = slots.map((slot) => slot.get());
    checkGradients(
      'tiny BERT + DoRA',
      (tensors) => {
        tensors.forEach((tensor, index) => slots[index].set(tensor));
        const { loss } = model.forward({ inputIds, attentionMask, labels: [1, 2] });
        originals.forEach((tensor, index) => slots[index].set(tensor));
        return loss!;
      },
      originals,
      { maxElements: 8, step: 1e-2, tolerance: 5e-3 },
    );
    model.dispose();
  });
});

describe('checkpoints', () => {
  it('a model written with writeSafetensors loads with models.load and gives identical logits', () => {
    const before = memory().tensors;
    const dir = scratch();
    const model = models.fromConfig(tinyConfig(), { seed: 5 }).eval();
    models.save(model, dir);
    const loaded = models.load(dir).eval();
    expect(loaded.loadReport).toEqual({ missingKeys: [], unexpectedKeys: [] });
    tidy(() => {
      const expected = model.forward({ inputIds, attentionMask }).logits.toFloat32Array();
      expect(loaded.forward({ inputIds, attentionMask }).logits.toFloat32Array()).toEqual(expected);
    });
    // The same through writeSafetensors directly, with a headless (prefix-less) checkpoint and old LayerNorm names.
    const headless = scratch();
    const renamed = new Map(
      model
        .namedParameters()
        .filter(([name]) => name.startsWith('bert.'))
        .map(([name, tensor]) => [name.slice(5).replace(/LayerNorm\.weight$/, 'LayerNorm.gamma'), tensor] as const),
    );
    renamed.set('cls.predictions.bias', Tensor.zeros([40]));
    io.writeSafetensors(join(headless, 'model.safetensors'), renamed);
    renamed.get('cls.predictions.bias')!.dispose();
    io.writeFileAtomic(join(headless, 'config.json'), JSON.stringify(tinyConfig()));
    const partial = models.load(headless, { quiet: true, seed: 9 }).eval();
    expect(partial.loadReport.unexpectedKeys).toEqual(['cls.predictions.bias']);
    expect(partial.loadReport.missingKeys.sort()).toEqual(['classifier.bias', 'classifier.weight']);
    model.dispose();
    loaded.dispose();
    partial.dispose();
    expect(memory().tensors).toBe(before);
  });

  it('models.load is quiet by default; warn receives transformers-style messages about missing keys', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bidora-quiet-'));
    const model = models.fromConfig(tinyConfig());
    models.save(model, dir);
    // Drop the classifier from the weights: the load reports it missing.
    const { tensors } = io.readSafetensors(join(dir, 'model.safetensors'));
    for (const name of [...tensors.keys()].filter((key) => key.startsWith('classifier.'))) {
      tensors.get(name)!.dispose();
      tensors.delete(name);
    }
    io.writeSafetensors(join(dir, 'model.safetensors'), tensors);
    for (const tensor of tensors.values()) tensor.dispose();
    const messages: string[] = [];
    const original = console.warn;
    console.warn = (...args: unknown[]) => messages.push(args.join(' '));
    try {
      const quiet = models.load(dir);
      expect(quiet.loadReport.missingKeys).toEqual(['classifier.weight', 'classifier.bias']);
      expect(messages).toEqual([]);
      const warned: string[] = [];
      const loud = models.load(dir, { warn: (message) => warned.push(message) });
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatch(
        /Some weights of BertForSequenceClassification were not initialized .* \[classifier\.weight, classifier\.bias\]/,
      );
      quiet.dispose();
      loud.dispose();
    } finally {
      console.warn = original;
      model.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a config whose sizes disagree with the weights names the tensor', () => {
    const dir = scratch();
    const model = models.fromConfig(tinyConfig());
    models.save(model, dir);
    model.dispose();
    io.writeFileAtomic(join(dir, 'config.json'), JSON.stringify(tinyConfig({ intermediate_size: 48 })));
    expect(() => models.load(dir)).toThrow(
      /bert\.encoder\.layer\.0\.intermediate\.dense\.(weight|bias) has shape \[64(, 32)?\].*\[48(, 32)?\]/,
    );
    io.writeFileAtomic(join(dir, 'config.json'), JSON.stringify(tinyConfig({ hidden_size: 30 })));
    expect(() => models.load(dir)).toThrow(/hidden_size 30 is not a multiple of num_attention_heads 4/);
  });
});
