// Every encoder family and head against transformers: tiny checkpoints made with transformers 5.17 and peft 0.21
// (test/fixtures/hf-families, README there), loaded with models.load, run on the same batch in eval mode. Logits
// and loss must match within 1e-4 relative, the listed parameter gradients within 1e-3.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { adapters, models, type Tensor, train } from '../lib/index';
import { relativeError } from './helpers';

const root = join(__dirname, 'fixtures', 'hf-families');

interface Case {
  input_ids: number[][];
  attention_mask: number[][];
  labels?: number[] | number[][];
  logits: number[][] | number[][][];
  loss?: number;
  grads?: Record<string, number[] | number[][]>;
  base?: string;
}

function readCase(folder: string): Case {
  return JSON.parse(readFileSync(join(root, folder, 'case.json'), 'utf8')) as Case;
}

const flat = (values: unknown): number[] => (values as unknown[]).flat(Infinity as 1) as number[];

const families = [
  { folder: 'bert-token', architecture: 'BertForTokenClassification' },
  { folder: 'bert-regression', architecture: 'BertForSequenceClassification' },
  { folder: 'distilbert', architecture: 'DistilBertForSequenceClassification' },
  { folder: 'xlm-roberta', architecture: 'XLMRobertaForSequenceClassification' },
  { folder: 'esm', architecture: 'EsmForSequenceClassification' },
];

describe('encoder families match transformers', () => {
  for (const { folder, architecture } of families) {
    it(`${folder} (${architecture}): logits, loss and gradients`, () => {
      const reference = readCase(folder);
      const model = models.load(join(root, folder)).eval();
      expect(model.config.architecture).toBe(architecture);
      const { logits, loss } = model.forward({
        inputIds: reference.input_ids,
        attentionMask: reference.attention_mask,
        labels: reference.labels,
      });
      expect(relativeError(logits.toFloat32Array(), flat(reference.logits))).toBeLessThan(1e-4);
      expect(Math.abs(loss!.item() - reference.loss!) / Math.abs(reference.loss!)).toBeLessThan(1e-4);
      loss!.backward();
      const parameters = new Map(model.namedParameters());
      for (const [name, expected] of Object.entries(reference.grads!)) {
        const parameter = parameters.get(name);
        expect(parameter, name).toBeDefined();
        expect(relativeError(parameter!.grad!.toFloat32Array(), flat(expected)), name).toBeLessThan(1e-3);
      }
      logits.dispose();
      loss!.dispose();
      model.dispose();
    });
  }

  for (const { folder, targets } of [
    { folder: 'peft-dora-distilbert', targets: ['q_lin', 'v_lin'] },
    { folder: 'peft-dora-esm', targets: ['query', 'value'] },
  ]) {
    it(`${folder}: a PEFT DoRA folder (SEQ_CLS lists classifier and score to save) gives PEFT's logits`, () => {
      const reference = readCase(folder);
      const model = models.load(join(root, reference.base!)).eval();
      const config = adapters.load(model, join(root, folder));
      expect(config.method).toBe('dora');
      expect(config.targetModules).toEqual(targets);
      const { logits } = model.forward({ inputIds: reference.input_ids, attentionMask: reference.attention_mask });
      expect(relativeError(logits.toFloat32Array(), flat(reference.logits))).toBeLessThan(1e-4);
      logits.dispose();
      model.dispose();
    });
  }

  it('saves each family back under its architecture and names: reloaded, the same logits', () => {
    for (const { folder, architecture } of families) {
      const reference = readCase(folder);
      const model = models.load(join(root, folder)).eval();
      const dir = mkdtempSync(join(tmpdir(), 'bidora-family-'));
      models.save(model, dir);
      const saved = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { architectures: string[] };
      expect(saved.architectures).toEqual([architecture]);
      const reloaded = models.load(dir).eval();
      expect(reloaded.loadReport).toEqual({ missingKeys: [], unexpectedKeys: [] });
      const inputs = { inputIds: reference.input_ids, attentionMask: reference.attention_mask };
      const before: Tensor = model.forward(inputs).logits;
      const after: Tensor = reloaded.forward(inputs).logits;
      expect(after.toFloat32Array()).toEqual(before.toFloat32Array());
      for (const tensor of [before, after]) tensor.dispose();
      model.dispose();
      reloaded.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an unknown architecture is a RangeError that lists the supported ones', () => {
    expect(() =>
      models.fromConfig({
        architectures: ['GPTNeoForSequenceClassification'],
        vocab_size: 10,
        hidden_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 8,
        max_position_embeddings: 8,
      }),
    ).toThrow(
      /architecture 'GPTNeoForSequenceClassification' is not supported; bidora builds .*DistilBertForTokenClassification/,
    );
  });
});

describe('every family trains on its task', () => {
  const tiny = {
    vocab_size: 24,
    max_position_embeddings: 16,
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0,
  };
  const bertSizes = { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32 };
  const esmSizes = {
    ...bertSizes,
    position_embedding_type: 'rotary',
    token_dropout: true,
    mask_token_id: 4,
    pad_token_id: 1,
  };
  const distilSizes = { dim: 16, n_layers: 1, n_heads: 2, hidden_dim: 32, dropout: 0.1, attention_dropout: 0 };
  const cases = [
    { architecture: 'BertForSequenceClassification', sizes: bertSizes, targets: ['query', 'value'], labels: 2 },
    { architecture: 'BertForTokenClassification', sizes: bertSizes, targets: ['query', 'value'], labels: 3 },
    { architecture: 'BertForSequenceClassification', sizes: bertSizes, targets: ['query', 'value'], labels: 1 },
    { architecture: 'XLMRobertaForSequenceClassification', sizes: bertSizes, targets: ['query', 'value'], labels: 2 },
    { architecture: 'CamembertForTokenClassification', sizes: bertSizes, targets: ['query', 'value'], labels: 3 },
    { architecture: 'DistilBertForSequenceClassification', sizes: distilSizes, targets: ['q_lin', 'v_lin'], labels: 2 },
    { architecture: 'DistilBertForTokenClassification', sizes: distilSizes, targets: ['q_lin', 'v_lin'], labels: 3 },
    { architecture: 'EsmForSequenceClassification', sizes: esmSizes, targets: ['query', 'value'], labels: 2 },
    { architecture: 'EsmForTokenClassification', sizes: esmSizes, targets: ['query', 'value'], labels: 3 },
  ];

  /** A learnable task for the head: token 7 present (sequence), id mod 3 per token (token), share of 7s (regression). */
  function examples(task: string, labels: number, pad: number): train.Example[] {
    const random = new train.Random(5);
    return Array.from({ length: 48 }, () => {
      const body = Array.from({ length: 4 + random.int(5) }, () => 4 + random.int(18));
      const inputIds = [2, ...body, 3].map((id) => (id === pad ? 5 : id));
      if (task === 'token-classification') {
        return {
          inputIds,
          label: inputIds.map((id, index) => (index === 0 || index === inputIds.length - 1 ? -100 : id % labels)),
        };
      }
      const sevens = body.filter((id) => id === 7).length;
      return { inputIds, label: labels === 1 ? sevens / body.length : sevens > 0 ? 1 : 0 };
    });
  }

  for (const { architecture, sizes, targets, labels } of cases) {
    for (const trainerKind of ['Trainer', 'BiLevelTrainer'] as const) {
      it(`${architecture} (${labels === 1 ? 'regression' : `${labels} labels`}) with ${trainerKind}: loss falls, magnitudes move`, async () => {
        const model = models.fromConfig(
          { architectures: [architecture], ...tiny, ...sizes, num_labels: labels },
          { seed: 2 },
        );
        adapters.apply(model, {
          method: trainerKind === 'Trainer' ? 'dora' : 'bidora',
          r: 2,
          targetModules: targets,
          modulesToSave: ['classifier'],
        });
        const data = examples(model.config.task, labels, model.config.padTokenId);
        const before = train.evaluate(model, data).loss;
        const magnitudes = adapters.adaptedLayers(model).map(({ adapter }) => adapter.magnitude!.toFloat32Array());
        const common = { model, batchSize: 8, maxSteps: 40, seed: 1 };
        const trainer =
          trainerKind === 'Trainer'
            ? new train.Trainer({ ...common, optimizer: { lr: 0.02 } })
            : new train.BiLevelTrainer({ ...common, lowerOptimizer: { lr: 0.02 }, upperOptimizer: { lr: 0.02 } });
        await trainer.fit(data);
        const after = train.evaluate(model, data).loss;
        expect(after).toBeLessThan(before * 0.9);
        adapters.adaptedLayers(model).forEach(({ adapter }, index) => {
          expect(adapter.magnitude!.toFloat32Array()).not.toEqual(magnitudes[index]);
        });
        trainer.dispose();
        model.dispose();
      });
    }
  }
});

describe('multi-label classification (problem_type multi_label_classification)', () => {
  const config = {
    architectures: ['BertForSequenceClassification'],
    vocab_size: 24,
    hidden_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    intermediate_size: 32,
    max_position_embeddings: 16,
    num_labels: 3,
    problem_type: 'multi_label_classification',
  };

  it("the loss is transformers' BCEWithLogitsLoss over every (example, class), computed here in float64", () => {
    const model = models.fromConfig(config, { seed: 4 }).eval();
    const inputIds = [
      [2, 7, 9, 3],
      [2, 5, 6, 3],
    ];
    const labels = [
      [1, 0, 1],
      [0, 0, 1],
    ];
    const { logits, loss } = model.forward({ inputIds, labels });
    const z = logits.toFloat32Array();
    const y = labels.flat();
    const expected =
      y.reduce((total, target, index) => {
        const value = z[index];
        return total + Math.max(value, 0) - value * target + Math.log1p(Math.exp(-Math.abs(value)));
      }, 0) / y.length;
    expect(Math.abs(loss!.item() - expected) / expected).toBeLessThan(1e-6);
    expect(() =>
      model.forward({
        inputIds,
        labels: [
          [1, 0],
          [0, 1],
        ],
      }),
    ).toThrow(/labels has 4 entries; a batch of 2 × 3 needs 6/);
    expect(() => models.fromConfig({ ...config, architectures: ['BertForTokenClassification'] })).toThrow(
      /problem_type 'multi_label_classification' needs a sequence classifier/,
    );
    logits.dispose();
    loss!.dispose();
    model.dispose();
  });

  it('trains with BiLevelTrainer and evaluates subset accuracy, micro- and macro-F1', async () => {
    const model = models.fromConfig(config, { seed: 4 });
    adapters.apply(model, { method: 'bidora', r: 2, targetModules: ['query', 'value'], modulesToSave: ['classifier'] });
    const random = new train.Random(9);
    // Class k is on when token 5 + k appears.
    const data = Array.from({ length: 48 }, () => {
      const inputIds = [2, ...Array.from({ length: 5 }, () => 5 + random.int(10)), 3];
      return { inputIds, label: [0, 1, 2].map((k) => (inputIds.includes(5 + k) ? 1 : 0)) };
    });
    const before = train.evaluate(model, data);
    const trainer = new train.BiLevelTrainer({
      model,
      batchSize: 8,
      maxSteps: 120,
      restoreBest: false,
      lowerOptimizer: { lr: 0.05 },
      upperOptimizer: { lr: 0.05 },
    });
    const result = await trainer.fit(data, { evalExamples: data, evalEvery: 30 });
    const after = train.evaluate(model, data);
    expect(after.loss).toBeLessThan(before.loss * 0.92);
    expect(after.metrics.microF1).toBeGreaterThan(before.metrics.microF1);
    expect(Object.keys(after.metrics).sort()).toEqual(['macroF1', 'microF1', 'subsetAccuracy']);
    expect(result.best!.metrics.microF1).toBe(Math.max(...result.evals.map((record) => record.metrics.microF1)));
    expect(() => train.collate([{ inputIds: [2, 3], label: 1 }], 0, model.config)).toThrow(
      /example 0 label must be 3 targets, one per class \(multi-label\)/,
    );
    trainer.dispose();
    model.dispose();
  });
});

describe('ESM embeddings', () => {
  it("ESM-1b's layout (absolute positions, LayerNorm before): padding is zeroed after the LayerNorm, as transformers does", () => {
    const model = models.fromConfig({
      architectures: ['EsmForSequenceClassification'],
      vocab_size: 24,
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      intermediate_size: 32,
      max_position_embeddings: 16,
      position_embedding_type: 'absolute',
      emb_layer_norm_before: true,
      token_dropout: true,
      mask_token_id: 4,
      pad_token_id: 1,
    }) as models.EsmForSequenceClassification;
    const ids = { data: Int32Array.from([0, 5, 4, 6, 2, 1, 1]), batch: 1, seq: 7 };
    const mask = { data: Int32Array.from([1, 1, 1, 1, 1, 0, 0]), batch: 1, seq: 7 };
    const embeddings = model.esm.embeddings.forward(ids, mask).toFloat32Array();
    const row = (index: number) => Array.from(embeddings.subarray(index * 16, (index + 1) * 16));
    expect(row(5).every((value) => value === 0) && row(6).every((value) => value === 0)).toBe(true);
    // The mask token's row went through the LayerNorm from zeros plus its position: not zero, unlike padding.
    expect(row(2).some((value) => value !== 0)).toBe(true);
    model.dispose();
  });
});
