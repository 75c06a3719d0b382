// Adapters by module name: PEFT-format save/load (including a folder written by hand with PEFT's names), merge and
// unmerge, PEFT's trainable-parameter counts, bad configs that leave the model untouched, and the ΔM/ΔD analysis.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { adapters, io, memory, models, type nn, noGrad, ops, Tensor, tidy } from '../lib/index';
import { tinyBertConfig } from './fixtures/tiny-bert';
import { randomTensor, relativeError } from './helpers';

const root = mkdtempSync(join(tmpdir(), 'bidora-adapters-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let folders = 0;
const folder = () => join(root, `case-${folders++}`);

const tinyConfig = tinyBertConfig();
const batch = {
  inputIds: [
    [2, 7, 9, 11, 3, 0],
    [2, 5, 6, 8, 12, 3],
  ],
  attentionMask: [
    [1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 1],
  ],
};

function logitsOf(model: models.PretrainedModel): Float32Array {
  return tidy(() => noGrad(() => model.forward(batch).logits.toFloat32Array()));
}

/** Moves every adapter away from its initial point (B = 0, m = ||W0||), as training would. */
function perturbAdapters(model: nn.Module): void {
  for (const { adapter } of adapters.adaptedLayers(model)) {
    const [out, r] = adapter.loraB.shape;
    adapter.loraB.dispose();
    adapter.loraB = ops.scale(randomTensor([out, r]), 0.3).requireGrad();
    if (adapter.magnitude) {
      const shifted = ops.add(adapter.magnitude, ops.scale(randomTensor([out]), 0.1));
      adapter.magnitude.dispose();
      adapter.magnitude = shifted.requireGrad();
    }
  }
}

describe('PEFT adapter folders', () => {
  // Every registered method: a new one is covered by registering it.
  for (const method of adapters.ADAPTER_METHOD_NAMES) {
    it(`${method}: save → load into a fresh model gives identical outputs`, () => {
      const model = models.fromConfig(tinyConfig, { seed: 1 }).eval();
      adapters.apply(model, {
        method,
        r: 4,
        alpha: 8,
        targetModules: ['query', 'value'],
        modulesToSave: ['classifier'],
      });
      perturbAdapters(model);
      const dir = folder();
      adapters.save(model, dir, { baseModelNameOrPath: 'tiny-bert' });
      const fresh = models.fromConfig(tinyConfig, { seed: 1 }).eval();
      const config = adapters.load(fresh, dir);
      expect(config.method).toBe(method);
      expect(logitsOf(fresh)).toEqual(logitsOf(model));
      const header = io.readSafetensorsHeader(join(dir, adapters.ADAPTER_WEIGHTS_FILE));
      const keys = [...header.tensors.keys()];
      expect(keys).toContain('base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight');
      expect(keys).toContain('base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight');
      expect(keys).toContain('base_model.model.classifier.weight');
      expect(keys.some((key) => key.endsWith('.lora_magnitude_vector'))).toBe(
        adapters.ADAPTER_METHODS[method].layer.hasMagnitude,
      );
      model.dispose();
      fresh.dispose();
    });
  }

  it('loads a folder written by hand with PEFT’s exact key names and config keys', () => {
    const dir = folder();
    mkdirSync(dir);
    const r = 2;
    const values = tidy(() => {
      const entries: [string, Tensor][] = [];
      for (const layer of [0, 1]) {
        for (const projection of ['query', 'value']) {
          const path = `base_model.model.bert.encoder.layer.${layer}.attention.self.${projection}`;
          entries.push([`${path}.lora_A.weight`, randomTensor([r, 32])]);
          entries.push([`${path}.lora_B.weight`, randomTensor([32, r])]);
          entries.push([
            `${path}.lora_magnitude_vector`,
            ops.add(Tensor.full([32], 1.5), ops.scale(randomTensor([32]), 0.1)),
          ]);
        }
      }
      return new Map(entries.map(([name, tensor]) => [name, tensor]));
    });
    io.writeSafetensors(join(dir, 'adapter_model.safetensors'), values);
    writeFileSync(
      join(dir, 'adapter_config.json'),
      JSON.stringify({
        alpha_pattern: {},
        auto_mapping: null,
        base_model_name_or_path: 'tiny-bert',
        bias: 'none',
        fan_in_fan_out: false,
        inference_mode: true,
        init_lora_weights: true,
        layers_pattern: null,
        layers_to_transform: null,
        lora_alpha: 16,
        lora_dropout: 0.1,
        modules_to_save: null,
        peft_type: 'LORA',
        r,
        rank_pattern: {},
        revision: null,
        target_modules: ['value', 'query'],
        task_type: 'SEQ_CLS',
        use_dora: true,
        use_rslora: false,
      }),
    );
    const model = models.fromConfig(tinyConfig, { seed: 3 }).eval();
    adapters.load(model, dir);
    // Each adapted layer computes (m / ||W0 + s B A||_row) ⊙ (x (W0 + s B A)ᵀ) + b, computed here in float64.
    const scale = 16 / r;
    for (const { path, layer } of adapters.adaptedLayers(model)) {
      tidy(() => {
        const input = randomTensor([3, 32]);
        const output = noGrad(() => layer.forward(input)).toFloat32Array();
        const prefix = `base_model.model.${path}`;
        const a = values.get(`${prefix}.lora_A.weight`)!.toFloat32Array();
        const b = values.get(`${prefix}.lora_B.weight`)!.toFloat32Array();
        const m = values.get(`${prefix}.lora_magnitude_vector`)!.toFloat32Array();
        const w = layer.weight.toFloat32Array();
        const bias = layer.bias!.toFloat32Array();
        const x = input.toFloat32Array();
        const expected = new Float64Array(3 * 32);
        for (let j = 0; j < 32; j++) {
          const row = Float64Array.from({ length: 32 }, (_, c) => {
            let value = w[j * 32 + c];
            for (let p = 0; p < r; p++) value += scale * b[j * r + p] * a[p * 32 + c];
            return value;
          });
          const norm = Math.hypot(...row);
          for (let i = 0; i < 3; i++) {
            let dot = 0;
            for (let c = 0; c < 32; c++) dot += x[i * 32 + c] * row[c];
            expected[i * 32 + j] = (m[j] / norm) * dot + bias[j];
          }
        }
        expect(relativeError(output, expected), path).toBeLessThan(1e-5);
      });
    }
    for (const tensor of values.values()) tensor.dispose();
    model.dispose();
  });
});

describe('merge and unmerge', () => {
  for (const method of adapters.ADAPTER_METHOD_NAMES) {
    it(`${method}: merged logits equal the adapted model's, unmerge restores W0, merged saves as plain weights`, () => {
      const model = models.fromConfig(tinyConfig, { seed: 4 }).eval();
      const query = (
        model as unknown as { bert: { encoder: { layer: { attention: { self: { query: nn.Linear } } }[] } } }
      ).bert.encoder.layer[0].attention.self.query;
      const original = query.weight.toFloat32Array();
      adapters.apply(model, { method, r: 4, targetModules: ['query', 'value', 'dense'] });
      perturbAdapters(model);
      const adapted = logitsOf(model);
      adapters.merge(model);
      expect(relativeError(logitsOf(model), adapted)).toBeLessThan(1e-5);
      const dir = folder();
      models.save(model, dir);
      const plain = models.load(dir).eval();
      expect(plain.loadReport.missingKeys).toEqual([]);
      expect(relativeError(logitsOf(plain), adapted)).toBeLessThan(1e-5);
      adapters.unmerge(model);
      expect(relativeError(query.weight.toFloat32Array(), original)).toBeLessThan(1e-5);
      expect(relativeError(logitsOf(model), adapted)).toBeLessThan(1e-5);
      model.dispose();
      plain.dispose();
    });
  }
});

describe('apply', () => {
  const bertBase = {
    ...tinyConfig,
    vocab_size: 30522,
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    intermediate_size: 3072,
    max_position_embeddings: 512,
    num_labels: 2,
  };

  it('counts trainable parameters as PEFT does for BERT-base with r=8 on query and value', () => {
    for (const [method, expected] of [
      ['lora', 294_912 + 768 * 2 + 2],
      ['dora', 294_912 + 2 * 12 * 768 + 768 * 2 + 2],
    ] as const) {
      const model = models.fromConfig(bertBase);
      adapters.apply(model, {
        method,
        r: 8,
        alpha: 16,
        targetModules: ['query', 'value'],
        modulesToSave: ['classifier'],
      });
      const counts = adapters.trainableParameters(model);
      expect(counts.trainable).toBe(expected);
      expect(counts.line).toMatch(
        new RegExp(`^trainable params: ${expected.toLocaleString('en-US')} \\|\\| all params: `),
      );
      model.dispose();
    }
  });

  it('returns the parameter groups by role, and starts at the base model’s outputs', () => {
    const model = models.fromConfig(tinyConfig, { seed: 6 }).eval();
    const before = logitsOf(model);
    const groups = adapters.apply(model, {
      method: 'bidora',
      r: 3,
      targetModules: 'bert\\.encoder\\.layer\\.\\d+\\.attention\\.self\\.(query|value)',
      modulesToSave: ['classifier'],
    });
    expect(groups.direction.map(({ name }) => name)).toContain(
      'bert.encoder.layer.1.attention.self.value.adapter.loraB',
    );
    expect(groups.direction).toHaveLength(8);
    expect(groups.magnitude).toHaveLength(4);
    expect(groups.modulesToSave.map(({ name }) => name)).toEqual(['classifier.weight', 'classifier.bias']);
    expect(relativeError(logitsOf(model), before)).toBeLessThan(1e-6);
    const trainable = model.namedParameters().filter(([, tensor]) => tensor.requiresGrad).length;
    expect(trainable).toBe(8 + 4 + 2);
    model.dispose();
  });

  it('rejects bad configs before changing the model', () => {
    const model = models.fromConfig(tinyConfig, { seed: 7 });
    const snapshot = () => model.namedParameters().map(([name, tensor]) => `${name}:${tensor.requiresGrad}`);
    const before = snapshot();
    const tensorsBefore = memory().tensors;
    const bad: [Partial<adapters.AdapterConfig>, RegExp][] = [
      [{ targetModules: ['query', 'qkv'] }, /\[qkv\] match no Linear layer/],
      [{ r: 0 }, /r must be an integer of at least 1/],
      [{ r: 33 }, /r = 33 exceeds min\(in, out\) = 32/],
      [{ method: 'adalora' as never }, /method must be/],
      [{ dropout: 1 }, /dropout must be in \[0, 1\)/],
      [{ targetModules: [] }, /targetModules must be a non-empty array/],
      [{ modulesToSave: ['head'] }, /module to save 'head'/],
      [{ targetModules: 'nothing\\.here' }, /no Linear layer matches/],
    ];
    for (const [change, message] of bad) {
      expect(() => adapters.apply(model, { method: 'dora', r: 4, targetModules: ['query'], ...change })).toThrow(
        message,
      );
      expect(snapshot()).toEqual(before);
      expect(adapters.adaptedLayers(model)).toHaveLength(0);
      expect(memory().tensors).toBe(tensorsBefore);
    }
    model.dispose();
  });
});

describe('weight-decomposition analysis', () => {
  it('ΔM and ΔD per layer match a float64 computation, and the slope fits them', () => {
    const model = models.fromConfig(tinyConfig, { seed: 8 });
    adapters.apply(model, { method: 'dora', r: 4, targetModules: ['query', 'value', 'key'] });
    const untouched = adapters.analyze(model);
    for (const layer of untouched.layers) {
      expect(layer.deltaMagnitude).toBeLessThan(1e-6);
      expect(layer.deltaDirection).toBeLessThan(1e-6);
    }
    perturbAdapters(model);
    const analysis = adapters.analyze(model);
    expect(analysis.layers).toHaveLength(6);
    for (const { path, adapter, layer } of adapters.adaptedLayers(model)) {
      const w = layer.weight.toFloat32Array();
      const a = adapter.loraA.toFloat32Array();
      const b = adapter.loraB.toFloat32Array();
      const m = adapter.magnitude!.toFloat32Array();
      const scale = adapter.options.scale;
      let deltaM = 0;
      let deltaD = 0;
      for (let j = 0; j < 32; j++) {
        const base = Float64Array.from({ length: 32 }, (_, c) => w[j * 32 + c]);
        const direction = base.map(
          (value, c) =>
            value +
            Array.from({ length: 4 }, (_, p) => scale * b[j * 4 + p] * a[p * 32 + c]).reduce((x, y) => x + y, 0),
        );
        const baseNorm = Math.hypot(...base);
        const norm = Math.hypot(...direction);
        deltaM += Math.abs(m[j] - baseNorm);
        deltaD += 1 - base.reduce((total, value, c) => total + value * direction[c], 0) / (baseNorm * norm);
      }
      const found = analysis.layers.find((entry) => entry.path === path)!;
      expect(found.deltaMagnitude).toBeCloseTo(deltaM / 32, 5);
      expect(found.deltaDirection).toBeCloseTo(deltaD / 32, 5);
    }
    const points = [
      { path: 'a', deltaMagnitude: 1, deltaDirection: 0 },
      { path: 'b', deltaMagnitude: 3, deltaDirection: 1 },
      { path: 'c', deltaMagnitude: 5, deltaDirection: 2 },
    ];
    expect(adapters.slope(points)).toBeCloseTo(2, 10);
    model.dispose();
  });
});
